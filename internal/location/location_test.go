package location_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/location"
)

const ns = "openshift-adp"

func bsl(name string, def bool, cred *corev1.SecretKeySelector) *velerov1.BackupStorageLocation {
	return &velerov1.BackupStorageLocation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: velerov1.BackupStorageLocationSpec{Provider: "velero.io/aws", Default: def, Credential: cred,
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: "bucket-" + name, Prefix: "prefix-" + name}},
			Config:      map[string]string{"region": "eu-west-1", "caCert": "PEM"}},
	}
}

func secret(name, key, value string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{key: []byte(value)}}
}

func selector(name, key string) *corev1.SecretKeySelector {
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
}

// elsewhere is loc with its inline config key set to value.
func elsewhere(loc *oadpv1alpha1.BackupLocation, key, value string) *oadpv1alpha1.BackupLocation {
	out := loc.DeepCopy()
	if out.Velero.Config == nil {
		out.Velero.Config = map[string]string{}
	}
	out.Velero.Config[key] = value
	return out
}

func withoutCredential(loc *oadpv1alpha1.BackupLocation) *oadpv1alpha1.BackupLocation {
	out := loc.DeepCopy()
	out.Velero.Credential = nil
	return out
}

func TestResolve(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = velerov1.AddToScheme(scheme)
	inline := &oadpv1alpha1.BackupLocation{Name: "dpa-name", Velero: &oadpv1alpha1.VeleroLocation{Provider: "aws",
		ObjectStorage: oadpv1alpha1.ObjectStorageLocation{Bucket: "inline-bucket", Prefix: "p", CACert: []byte("PEM")}, Credential: selector("custom", "cloud")}}
	tests := []struct {
		name        string
		objects     []client.Object
		loc         *oadpv1alpha1.BackupLocation
		wantBucket  string
		wantCreds   string
		wantReason  string
		wantMessage string
	}{
		{"a named location with its own Secret", []client.Object{bsl("main", false, selector("main-creds", "aws")), secret("main-creds", "aws", "MAIN")},
			&oadpv1alpha1.BackupLocation{Name: "main"}, "bucket-main", "MAIN", "", ""},
		{"the default location when none is named", []client.Object{bsl("other", false, nil), bsl("main", true, nil), secret("cloud-credentials", "cloud", "DEFAULT")},
			nil, "bucket-main", "DEFAULT", "", ""},
		{"no default Secret means the provider's own chain", []client.Object{bsl("main", true, nil)}, nil, "bucket-main", "", "", ""},
		{"an inline location with a Secret a location uses with the same endpoint", []client.Object{bsl("main", false, selector("custom", "cloud")), secret("custom", "cloud", "INLINE")},
			inline, "inline-bucket", "INLINE", "", ""},
		{"an inline location with a Secret no location uses", []client.Object{secret("custom", "cloud", "INLINE")}, inline, "", "",
			oadpv1alpha1.ReasonCredentialsNotAllowed, "would send credentials Secret openshift-adp/custom (key cloud) to aws"},
		{"an inline location sending a location's Secret to another endpoint", []client.Object{bsl("main", false, selector("custom", "cloud")), secret("custom", "cloud", "INLINE")},
			elsewhere(inline, "s3Url", "https://attacker.example"), "", "", oadpv1alpha1.ReasonCredentialsNotAllowed, "to aws https://attacker.example"},
		{"an inline location sending the default Secret to another endpoint", []client.Object{bsl("main", true, nil), secret("cloud-credentials", "cloud", "DEFAULT")},
			withoutCredential(elsewhere(inline, "s3Url", "https://attacker.example")), "", "", oadpv1alpha1.ReasonCredentialsNotAllowed, "openshift-adp/cloud-credentials"},
		{"an inline location without a Secret sending the provider's own credentials elsewhere", nil, withoutCredential(elsewhere(inline, "s3Url", "https://public.example")), "", "", oadpv1alpha1.ReasonCredentialsNotAllowed,
			"would send the credentials of the provider's default chain (there is no Secret openshift-adp/cloud-credentials) to aws https://public.example"},
		{"an inline location sending a location's Secret to its endpoint without verifying it", []client.Object{bsl("main", false, selector("custom", "cloud")), secret("custom", "cloud", "INLINE")},
			elsewhere(inline, "insecureSkipTLSVerify", "true"), "", "", oadpv1alpha1.ReasonCredentialsNotAllowed, "trusting its certificate the same way"},
		{"an inline file location takes no credentials", nil, &oadpv1alpha1.BackupLocation{Velero: &oadpv1alpha1.VeleroLocation{Provider: "file",
			ObjectStorage: oadpv1alpha1.ObjectStorageLocation{Bucket: "/var/backups"}}}, "/var/backups", "", "", ""},
		{"a missing named location", nil, &oadpv1alpha1.BackupLocation{Name: "gone"}, "", "", oadpv1alpha1.ReasonLocationNotFound, "BackupStorageLocation openshift-adp/gone not found"},
		{"no default location", []client.Object{bsl("other", false, nil)}, nil, "", "", oadpv1alpha1.ReasonLocationNotFound, "no BackupStorageLocation in openshift-adp is marked default"},
		{"a missing explicit Secret", []client.Object{bsl("main", false, selector("absent", "cloud"))}, &oadpv1alpha1.BackupLocation{Name: "main"}, "", "",
			oadpv1alpha1.ReasonCredentialsNotFound, "credentials Secret openshift-adp/absent of location main not found"},
		{"a Secret without the key", []client.Object{secret("custom", "other", "x")}, inline, "", "", oadpv1alpha1.ReasonCredentialsNotFound, `has no key "cloud"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(tt.objects...).Build()
			got, err := location.Resolve(context.Background(), c, ns, tt.loc)
			if tt.wantReason != "" {
				var lerr *location.Error
				if !errors.As(err, &lerr) || lerr.Reason != tt.wantReason || !strings.Contains(err.Error(), tt.wantMessage) {
					t.Fatalf("Resolve error = %v, want %s: %q", err, tt.wantReason, tt.wantMessage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Bucket.Bucket != tt.wantBucket || string(got.Bucket.Credentials) != tt.wantCreds {
				t.Errorf("Resolve = bucket %q credentials %q, want %q and %q", got.Bucket.Bucket, got.Bucket.Credentials, tt.wantBucket, tt.wantCreds)
			}
			if strings.Contains(got.Describe(), tt.wantCreds) && tt.wantCreds != "" {
				t.Errorf("Describe() reveals the credentials: %s", got.Describe())
			}
		})
	}
}
