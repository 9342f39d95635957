package transfer

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
)

var (
	// What the ImageStreamsBackup API admits (api/v1alpha1), and a registry path component.
	referenceRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?(/[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*)+@sha256:[a-f0-9]{64}$`)
	nameRE      = regexp.MustCompile(`^[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*$`)
	namespaceRE = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$`)
)

// The references of an ImageStreamsBackup are read into pull references: whatever the text,
// parsing must not panic, must keep the digest it names, and must pull an internal image from
// its imagestream's own repository; from what the API admits, every path component is one a
// registry accepts.
func FuzzPullReference(f *testing.F) {
	const host = "image-registry.openshift-image-registry.svc:5000"
	digest := "@sha256:" + strings.Repeat("ab", 32)
	f.Add(host, "app", "web", host+"/other/web"+digest, false)
	f.Add(host, "", "web", host+"/app/web"+digest, true)
	f.Add(host, "app", "web", "quay.io/org/team/web"+digest, false)
	f.Add(host, "app", "web", "web"+digest, false)
	f.Add(host, "app", "..", host+"/a/../b"+digest, false)
	f.Add("", "", "", "@sha256:", true)
	f.Fuzz(func(t *testing.T, host, namespace, isName, ref string, insecure bool) {
		is := &oadpv1alpha1.ImageStream{Name: isName, Namespace: namespace}
		got, err := pullReference(host, namespace, is, ref, copier.Options{Insecure: insecure})
		if err != nil {
			return
		}
		if _, want, _ := strings.Cut(ref, "@"); got.DigestStr() != want {
			t.Fatalf("pullReference(%q) pulls digest %s, want %s", ref, got.DigestStr(), want)
		}
		again, err := name.NewDigest(got.String(), (&copier.Options{Insecure: insecure}).NameOptions()...)
		if err != nil || again.String() != got.String() {
			t.Fatalf("pullReference(%q) = %q, which reads back as %q, %v", ref, got, again, err)
		}
		if got.Context().RegistryStr() == host && namespace != "" && got.RepositoryStr() != namespace+"/"+isName {
			t.Fatalf("pullReference(%q) pulls from %s, not from imagestream %s/%s", ref, got.RepositoryStr(), namespace, isName)
		}
		if !referenceRE.MatchString(ref) || !nameRE.MatchString(isName) || len(namespace) > 63 || !namespaceRE.MatchString(namespace) {
			return
		}
		for _, c := range strings.Split(got.RepositoryStr(), "/") {
			if !nameRE.MatchString(c) {
				t.Fatalf("pullReference(%q) = %q, whose path component %q a registry refuses", ref, got, c)
			}
		}
	})
}
