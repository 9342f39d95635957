package imagestore_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"gocloud.dev/blob/memblob"

	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// The bucket is not trusted: whatever bytes an index or manifest holds, parsing must not panic
// and must return only valid digests.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":%q,"digest":"sha256:%064x","size":10,"annotations":{"oadp.openshift.io/tags":"a,b"}}]}`, types.OCIManifestSchema1, 1)))
	f.Add([]byte(`{"manifests":[{"digest":"sha256:../../etc/passwd","size":-1}]}`))
	f.Add([]byte(`{`))
	f.Add([]byte(fmt.Sprintf(`{"annotations":{"oadp.openshift.io/parts":"3"},"manifests":[{"mediaType":%q,"digest":"sha256:%064x","size":1,"annotations":{"oadp.openshift.io/namespace":"app","oadp.openshift.io/imagestream":"web","oadp.openshift.io/tags":"v1,latest","oadp.openshift.io/reference":"r/app/web@sha256:x"}}]}`, types.DockerManifestList, 2)))
	f.Add([]byte(fmt.Sprintf(`{"manifests":[{"mediaType":%q,"digest":"sha256:%064x","size":1,"annotations":{"oadp.openshift.io/namespace":"../x","oadp.openshift.io/imagestream":"a/b","oadp.openshift.io/tags":"../y"}}]}`, types.OCIManifestSchema1, 3)))
	f.Add([]byte(`{"manifests":[{"digest":"md5:abc"},{"digest":"/etc/passwd"}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		entries, err := imagestore.ParseIndex(raw)
		if err != nil {
			return
		}
		for _, e := range entries {
			if err := imagestore.ValidateDigest(e.Descriptor.Digest); err != nil || e.Descriptor.Size < 0 {
				t.Fatalf("ParseIndex accepted %+v", e.Descriptor)
			}
			if strings.ContainsAny(e.Namespace+e.ImageStream+strings.Join(e.Tags, ""), "/@:") || e.ImageStream == "" {
				t.Fatalf("ParseIndex accepted names that are not path components: %q %q %q", e.Namespace, e.ImageStream, e.Tags)
			}
		}
		// What was accepted survives a round trip unchanged.
		again, err := imagestore.MarshalIndex(entries, imagestore.IndexMeta{})
		if err != nil {
			t.Fatal(err)
		}
		back, err := imagestore.ParseIndex(again)
		if err != nil {
			t.Fatalf("ParseIndex refuses what MarshalIndex wrote from accepted entries: %v", err)
		}
		if !reflect.DeepEqual(entries, back) {
			t.Fatalf("round trip changed entries:\n%+v\n%+v", entries, back)
		}
	})
}

func FuzzChildren(f *testing.F) {
	f.Add(string(types.OCIImageIndex), []byte(fmt.Sprintf(`{"manifests":[{"mediaType":%q,"digest":"sha256:%064x","size":1}]}`, types.OCIManifestSchema1, 2)))
	f.Add(string(types.DockerManifestSchema2), []byte(fmt.Sprintf(`{"config":{"digest":"sha256:%064x","size":1},"layers":[{"mediaType":%q,"digest":"sha256:%064x","size":3}]}`, 3, types.DockerLayer, 4)))
	f.Add(string(types.DockerManifestSchema2), []byte(`{"config":{"digest":"md5:x"}}`))
	f.Add(string(types.OCIManifestSchema1), []byte(fmt.Sprintf(`{"config":{"digest":"sha256:%064x","size":1},"layers":[{"mediaType":%q,"digest":"sha256:%064x","size":3,"urls":["http://x"]}]}`, 5, types.DockerForeignLayer, 6)))
	f.Add(string(types.DockerManifestList), []byte(fmt.Sprintf(`{"manifests":[{"mediaType":%q,"digest":"sha256:%064x","size":1}]}`, types.DockerLayer, 7)))
	f.Add(string(types.OCIImageIndex), []byte(`{"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:../../x","size":1}]}`))
	f.Fuzz(func(t *testing.T, mt string, raw []byte) {
		kids, err := imagestore.Children(v1.Descriptor{MediaType: types.MediaType(mt)}, raw)
		if err != nil {
			return
		}
		for _, k := range kids {
			if err := imagestore.ValidateDigest(k.Digest); err != nil || k.Size < 0 {
				t.Fatalf("Children accepted %+v", k)
			}
			// An index references manifests only; an image, no foreign layer (it lives
			// elsewhere and registries do not serve it).
			if types.MediaType(mt).IsIndex() && !k.MediaType.IsIndex() && !k.MediaType.IsImage() {
				t.Fatalf("index child %s has media type %q", k.Digest, k.MediaType)
			}
			if types.MediaType(mt).IsImage() && !k.MediaType.IsDistributable() {
				t.Fatalf("image child %s is a foreign layer", k.Digest)
			}
		}
	})
}

// Whatever manifest the bucket holds under a digest, a walk ends, visits only valid
// descriptors, and visits each digest once.
func FuzzWalk(f *testing.F) {
	f.Add(string(types.OCIImageIndex), []byte(fmt.Sprintf(`{"manifests":[{"mediaType":%q,"digest":"sha256:%064x","size":1},{"mediaType":%q,"digest":"sha256:%064x","size":1}]}`, types.OCIManifestSchema1, 1, types.OCIManifestSchema1, 1)))
	f.Add(string(types.OCIManifestSchema1), []byte(fmt.Sprintf(`{"config":{"digest":"sha256:%064x","size":2},"layers":[{"mediaType":%q,"digest":"sha256:%064x","size":-3}]}`, 3, types.OCILayer, 4)))
	f.Add(string(types.DockerManifestSchema2), []byte(`{"config":{"digest":"sha256:../../x","size":2}}`))
	f.Add(string(types.OCIImageIndex), []byte(`{"manifests":null}`))
	f.Fuzz(func(t *testing.T, mt string, raw []byte) {
		ctx := context.Background()
		s := imagestore.New(memblob.OpenBucket(nil), "p")
		defer s.Close()
		h, size, _ := v1.SHA256(bytes.NewReader(raw))
		d := v1.Descriptor{MediaType: types.MediaType(mt), Digest: h, Size: size}
		if _, err := s.PutBlob(ctx, d, func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }); err != nil {
			t.Fatal(err)
		}
		seen := map[v1.Hash]bool{}
		_ = s.Walk(ctx, []v1.Descriptor{d, d}, func(v v1.Descriptor) error {
			if err := imagestore.ValidateDigest(v.Digest); err != nil || v.Size < 0 {
				t.Fatalf("Walk visited %+v", v)
			}
			if seen[v.Digest] {
				t.Fatalf("Walk visited %s twice", v.Digest)
			}
			seen[v.Digest] = true
			return nil
		})
		if !seen[h] && d.MediaType.IsIndex() == d.MediaType.IsImage() {
			return // not a manifest: Walk visits it as a plain blob, or not at all
		}
		if !seen[h] {
			t.Fatalf("Walk never visited its root")
		}
	})
}
