package location_test

import (
	"context"
	"maps"
	"strings"
	"testing"
	"unicode/utf8"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/location"
)

// A BackupStorageLocation's config and its Secret are whatever whoever can edit them wrote:
// resolving must carry them over as they are, pick the CA bundle the documented way, and
// never put the credentials in a description.
func FuzzResolve(f *testing.F) {
	f.Add("velero.io/aws", "bucket", "prefix/", "eu-west-1", "https://s3.example.com", "true", "", "[default]\naws_access_key_id=AKIA\naws_secret_access_key=SECRET\n")
	f.Add("azure", "c", "", "", "", "", "-----BEGIN CERTIFICATE-----", "AZURE_STORAGE_ACCOUNT_ACCESS_KEY=KEY")
	f.Add("", "", "/../..", "r", "::", "yes please", "PEM", "")
	f.Add("gcp", "b/../x", "a//b", "\x00", "http://[::1", "1", "\n", `{"type":"service_account","private_key":"SECRET"}`)
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = velerov1.AddToScheme(scheme)
	f.Fuzz(func(t *testing.T, provider, bucketName, prefix, region, s3URL, pathStyle, caCert, creds string) {
		for _, s := range []string{provider, bucketName, prefix, region, s3URL, pathStyle, caCert} {
			if !utf8.ValidString(s) {
				return // the API server, like the fake client's JSON, stores only UTF-8 text
			}
		}
		b := bsl("main", true, selector("creds", "cloud"))
		b.Spec.Provider, b.Spec.ObjectStorage.Bucket, b.Spec.ObjectStorage.Prefix = provider, bucketName, prefix
		b.Spec.Config = map[string]string{"region": region, "s3Url": s3URL, "s3ForcePathStyle": pathStyle, "caCert": caCert}
		c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(b, secret("creds", "cloud", creds)).Build()
		for _, loc := range []*oadpv1alpha1.BackupLocation{nil, {Name: "main"}} {
			got, err := location.Resolve(context.Background(), c, ns, loc)
			if err != nil {
				t.Fatalf("Resolve refused a location that exists: %v", err)
			}
			if got.Bucket.Provider != provider || got.Bucket.Bucket != bucketName || got.Prefix != prefix || !maps.Equal(got.Bucket.Config, b.Spec.Config) {
				t.Fatalf("Resolve changed the location: %+v", got)
			}
			if string(got.Bucket.CACert) != caCert || string(got.Bucket.Credentials) != creds {
				t.Fatalf("Resolve read CA bundle %q and credentials %q, want %q and %q", got.Bucket.CACert, got.Bucket.Credentials, caCert, creds)
			}
			// A secret long enough to recognise, and not also part of what is described.
			if len(creds) >= 8 && !strings.Contains(provider+bucketName+prefix+"main", creds) && strings.Contains(got.Describe(), creds) {
				t.Fatalf("Describe() reveals the credentials: %s", got.Describe())
			}
		}
	})
}
