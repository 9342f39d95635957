package controller

import (
	"reflect"
	"testing"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

func TestPartNames(t *testing.T) {
	for _, tt := range []struct {
		name        string
		labels      map[string]string
		annotations map[string]string
		parts       []string
		want        []string
	}{
		{"the parts a head lists", nil, nil, []string{"b1-part1-aa", "b1-part3-aa"}, []string{"b1-part1-aa", "b1-part3-aa"}},
		{"a head the plugin made whose imagestreams all landed in it lists none, whatever the count says",
			map[string]string{velerov1.BackupUIDLabel: "uid"}, map[string]string{oadpv1alpha1.AnnotationParts: "3"}, nil, nil},
		{"a head made by hand, or by an earlier version, counts parts named <name>.<k>",
			nil, map[string]string{oadpv1alpha1.AnnotationParts: "3"}, nil, []string{"b1.1", "b1.2"}},
		{"a backup of one part", nil, nil, nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			isb := &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Name: "b1", Labels: tt.labels, Annotations: tt.annotations},
				Spec: oadpv1alpha1.ImageStreamsBackupSpec{Parts: tt.parts}}
			if got := partNames(isb); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("partNames = %q, want %q", got, tt.want)
			}
		})
	}
}
