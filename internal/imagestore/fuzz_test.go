package imagestore_test

import (
	"fmt"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// The bucket is not trusted: whatever bytes an index or manifest holds, parsing must not panic
// and must return only valid digests.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":%q,"digest":"sha256:%064x","size":10,"annotations":{"oadp.openshift.io/tags":"a,b"}}]}`, types.OCIManifestSchema1, 1)))
	f.Add([]byte(`{"manifests":[{"digest":"sha256:../../etc/passwd","size":-1}]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		entries, err := imagestore.ParseIndex(raw)
		if err != nil {
			return
		}
		for _, e := range entries {
			if err := imagestore.ValidateDigest(e.Descriptor.Digest); err != nil || e.Descriptor.Size < 0 {
				t.Fatalf("ParseIndex accepted %+v", e.Descriptor)
			}
		}
	})
}

func FuzzChildren(f *testing.F) {
	f.Add(string(types.OCIImageIndex), []byte(fmt.Sprintf(`{"manifests":[{"mediaType":%q,"digest":"sha256:%064x","size":1}]}`, types.OCIManifestSchema1, 2)))
	f.Add(string(types.DockerManifestSchema2), []byte(fmt.Sprintf(`{"config":{"digest":"sha256:%064x","size":1},"layers":[{"mediaType":%q,"digest":"sha256:%064x","size":3}]}`, 3, types.DockerLayer, 4)))
	f.Add(string(types.DockerManifestSchema2), []byte(`{"config":{"digest":"md5:x"}}`))
	f.Fuzz(func(t *testing.T, mt string, raw []byte) {
		kids, err := imagestore.Children(v1.Descriptor{MediaType: types.MediaType(mt)}, raw)
		if err != nil {
			return
		}
		for _, k := range kids {
			if err := imagestore.ValidateDigest(k.Digest); err != nil || k.Size < 0 {
				t.Fatalf("Children accepted %+v", k)
			}
		}
	})
}
