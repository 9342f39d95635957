package action_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/action"
	"github.com/openshift/oadp-imagestreams-backup/internal/cluster"
)

// ref is the internal reference of image n of imagestream app/name.
func ref(name string, n int) string { return fmt.Sprintf("%s/app/%s@%s", host, name, digest(n)) }

// failures are the status.failures of imagestream app/name: its images 1 to n, ImageNotFound.
func failures(name string, n int) []oadpv1alpha1.ImageFailure {
	var out []oadpv1alpha1.ImageFailure
	for i := 1; i <= n; i++ {
		out = append(out, oadpv1alpha1.ImageFailure{Namespace: "app", ImageStream: name, DockerImageReference: ref(name, i), Reason: oadpv1alpha1.ReasonImageNotFound})
	}
	return out
}

// ranThrough is a status of a run through the object's current spec (generation 1) in which the
// images listed and counted failed.
func ranThrough(listed []oadpv1alpha1.ImageFailure, counted ...oadpv1alpha1.ImageStreamFailures) oadpv1alpha1.CommonStatus {
	var failed int64
	for _, c := range counted {
		failed += c.ImagesFailed
	}
	return oadpv1alpha1.CommonStatus{ObservedGeneration: 1, Failures: listed, FailedImageStreams: counted,
		Progress: oadpv1alpha1.Progress{ImagesTotal: 100, ImagesDone: 100 - failed, ImagesFailed: failed}}
}

// leftOut is a status whose failedImageStreams is full with other imagestreams while
// progress counts more failed images than they hold.
func leftOut(listed []oadpv1alpha1.ImageFailure) oadpv1alpha1.CommonStatus {
	var counted []oadpv1alpha1.ImageStreamFailures
	for i := range oadpv1alpha1.MaxFailedImageStreams {
		counted = append(counted, oadpv1alpha1.ImageStreamFailures{Namespace: "app", Name: fmt.Sprintf("other-%d", i), ImagesFailed: 1})
	}
	st := ranThrough(listed, counted...)
	st.Progress.ImagesFailed += 3
	return st
}

// status.failures has room for MaxFailures images of the whole object; an imagestream whose
// failures it leaves out failed all the same, and its operation says so and how many are not
// listed.
func TestAnImageStreamWhoseFailuresAreNotListedFailsItsOperation(t *testing.T) {
	full := failures("other", oadpv1alpha1.MaxFailures) // other's failures fill status.failures
	otherFailed := oadpv1alpha1.ImageStreamFailures{Namespace: "app", Name: "other", ImagesFailed: 60}
	tests := []struct {
		name     string
		status   oadpv1alpha1.CommonStatus
		wantDone int64 // of the backup's 3 images of app/web
		wantErr  string
	}{
		{"none of its failures is listed", ranThrough(full, otherFailed, oadpv1alpha1.ImageStreamFailures{Namespace: "app", Name: "web", ImagesFailed: 3}),
			0, "3 images failed (3 not listed in status.failures)"},
		{"some of its failures are listed", ranThrough(append(failures("web", 1), full[1:]...), otherFailed, oadpv1alpha1.ImageStreamFailures{Namespace: "app", Name: "web", ImagesFailed: 2}),
			1, "2 images failed: " + ref("web", 1) + ": ImageNotFound (1 not listed in status.failures)"},
		{"all of its failures are listed", ranThrough(failures("web", 2), oadpv1alpha1.ImageStreamFailures{Namespace: "app", Name: "web", ImagesFailed: 2}),
			1, "2 images failed: " + ref("web", 1) + ": ImageNotFound; " + ref("web", 2) + ": ImageNotFound"},
		{"only other imagestreams failed", ranThrough(full, otherFailed), 3, ""},
		{"the count of failing imagestreams has no room for it", leftOut(full), 3,
			fmt.Sprintf("more than %d imagestreams have failed images, more than the status records; this one's may have failed too: see the resource's status and the worker's log", oadpv1alpha1.MaxFailedImageStreams)},
	}
	scheme, err := cluster.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	registry := func(context.Context) (string, error) { return host, nil }
	for _, tt := range tests {
		t.Run("backup: "+tt.name, func(t *testing.T) {
			isb := &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: "b1", Generation: 1},
				Spec: oadpv1alpha1.ImageStreamsBackupSpec{ImageStreams: []oadpv1alpha1.ImageStream{{Namespace: "app", Name: "web",
					DockerImageReferences: []oadpv1alpha1.DockerImageReference{{DockerImageReference: ref("web", 1)}, {DockerImageReference: ref("web", 2)}, {DockerImageReference: ref("web", 3)}}}}},
				Status: oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhasePartiallyFailed, CommonStatus: tt.status}}
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(isb).Build()
			backup := &velerov1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: "b1"}}
			p, err := action.NewBackupAction(logrus.New(), c, registry).Progress("b1/app/web", backup)
			if err != nil || !p.Completed || p.NTotal != 3 || p.NCompleted != tt.wantDone || p.Err != tt.wantErr {
				t.Errorf("Progress = %+v, %v; want completed, %d of 3 images, error %q", p, err, tt.wantDone, tt.wantErr)
			}
		})
		t.Run("restore: "+tt.name, func(t *testing.T) {
			isr := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: "by-hand", Generation: 1},
				Spec:   oadpv1alpha1.ImageStreamsRestoreSpec{ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b1"}},
				Status: oadpv1alpha1.ImageStreamsRestoreStatus{Phase: oadpv1alpha1.RestorePhasePartiallyFailed, CommonStatus: tt.status}}
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(isr).Build()
			restore := &velerov1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: "r1"}}
			p, err := action.NewRestoreAction(logrus.New(), c, registry).Progress("by-hand/app/web", restore)
			if err != nil || !p.Completed || p.Err != tt.wantErr {
				t.Errorf("Progress = %+v, %v; want completed, error %q", p, err, tt.wantErr)
			}
		})
	}
}
