package copier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"gocloud.dev/blob"

	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// The bucket a restore reads is not trusted: whatever manifests it holds, a push must end with
// an error that names what is wrong, and must not send the registry more than the image needs.

// storeIndex stores an index of children and returns its descriptor.
func storeIndex(t *testing.T, s *imagestore.Store, children ...v1.Descriptor) v1.Descriptor {
	t.Helper()
	raw, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: children})
	if err != nil {
		t.Fatal(err)
	}
	return storeRaw(t, s, types.OCIImageIndex, raw)
}

func storeRaw(t *testing.T, s *imagestore.Store, mt types.MediaType, raw []byte) v1.Descriptor {
	t.Helper()
	h, size, err := v1.SHA256(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	d := v1.Descriptor{MediaType: mt, Size: size, Digest: h}
	if _, err := s.PutBlob(context.Background(), d, func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(string(raw))), nil
	}); err != nil {
		t.Fatal(err)
	}
	return d
}

// storeImage copies img into the store through a registry, as a backup does.
func storeImage(t *testing.T, f fixture, reg *testRegistry, img v1.Image) v1.Descriptor {
	t.Helper()
	d, err := newCopier(t, f.store).Copy(context.Background(), reg.push(t, "src/img", img))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// countingRegistry is an in-memory registry that counts the requests it receives.
type countingRegistry struct {
	*httptest.Server
	requests, puts atomic.Int64
}

func newCountingRegistry(t *testing.T) *countingRegistry {
	r := &countingRegistry{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		if req.Method == http.MethodPut {
			r.puts.Add(1)
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *countingRegistry) repo(t *testing.T, path string) name.Repository {
	t.Helper()
	repo, err := name.NewRepository(strings.TrimPrefix(r.URL, "http://") + "/" + path)
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

func TestPushRefusesHostileManifests(t *testing.T) {
	tests := []struct {
		name string
		// plant returns the descriptor the backup's entry names.
		plant func(t *testing.T, f fixture, img v1.Descriptor) v1.Descriptor
		tags  []string
		want  string
	}{
		{"an index nested 1,000 deep", func(t *testing.T, f fixture, img v1.Descriptor) v1.Descriptor {
			d := img
			for range 1000 {
				d = storeIndex(t, f.store, d)
			}
			return d
		}, nil, "nested more than 8 levels deep"},
		{"an index that lists itself", func(t *testing.T, f fixture, _ v1.Descriptor) v1.Descriptor {
			// No bytes can hash to a digest they contain, so the index is forged: written
			// straight to the bucket under the digest it lists.
			d := v1.Descriptor{MediaType: types.OCIImageIndex, Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", 0xa)}}
			raw, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{d}})
			d.Size = int64(len(raw))
			plantBlob(t, f, d.Digest, raw)
			return d
		}, nil, "does not match its digest"},
		{"an index naming a child outside the store", func(t *testing.T, f fixture, _ v1.Descriptor) v1.Descriptor {
			raw := fmt.Appendf(nil, `{"schemaVersion":2,"manifests":[{"mediaType":%q,"digest":"sha256:../../../../etc/passwd","size":1}]}`, types.OCIManifestSchema1)
			return storeRaw(t, f.store, types.OCIImageIndex, raw)
		}, nil, "parsing index"},
		{"a manifest claiming 1 GiB", func(t *testing.T, f fixture, _ v1.Descriptor) v1.Descriptor {
			d := storeIndex(t, f.store)
			d.Size = 1 << 30
			return d
		}, nil, "is 1073741824 bytes, more than the 4194304 allowed"},
		{"a tag that is a path", func(t *testing.T, _ fixture, img v1.Descriptor) v1.Descriptor { return img },
			[]string{"latest", "../../other/manifests/x"}, `invalid tag "../../other/manifests/x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			src, dst := newRegistry(t), newCountingRegistry(t)
			f := newStore(t)
			img := storeImage(t, f, src, dockerImage(t))
			d := tt.plant(t, f, img)
			repo := dst.repo(t, "app/web")
			err := newPusher(t, f.store).Push(ctx, d, repo, tt.tags)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Push error = %v, want one containing %q", err, tt.want)
			}
			if n := dst.puts.Load(); n != 0 {
				t.Errorf("the registry received %d PUTs for a refused image", n)
			}
		})
	}
}

// plantBlob writes raw at h's key, bypassing the store's checks, as anyone who can write to
// the bucket could.
func plantBlob(t *testing.T, f fixture, h v1.Hash, raw []byte) {
	t.Helper()
	key := "velero/cluster-a/" + imagestore.Root + "blobs/sha256/" + h.Hex
	if err := f.bucket.WriteAll(context.Background(), key, raw, &blob.WriterOptions{}); err != nil {
		t.Fatal(err)
	}
}

// An index listing one child 300 times, nested, is pushed with one request per manifest and
// blob; a pusher that followed every listing would send some 90,000 requests.
func TestPushSendsRepeatedChildrenOnce(t *testing.T) {
	ctx := context.Background()
	src, dst := newRegistry(t), newCountingRegistry(t)
	f := newStore(t)
	img := storeImage(t, f, src, dockerImage(t))
	const n = 300
	fanOut := func(d v1.Descriptor) v1.Descriptor {
		var kids []v1.Descriptor
		for range n {
			kids = append(kids, d)
		}
		return storeIndex(t, f.store, kids...)
	}
	top := fanOut(fanOut(img))
	repo := dst.repo(t, "app/web")
	if err := newPusher(t, f.store).Push(ctx, top, repo, []string{"latest"}); err != nil {
		t.Fatal(err)
	}
	if n := dst.requests.Load(); n > 50 {
		t.Errorf("the push sent %d requests, want one or two per manifest and blob", n)
	}
	got, err := remote.Head(mustTag(t, repo, "latest"))
	if err != nil || got.Digest != top.Digest {
		t.Errorf("latest = %v, %v; want %s", got, err, top.Digest)
	}
}

func mustTag(t *testing.T, repo name.Repository, tag string) name.Tag {
	t.Helper()
	tg, err := name.NewTag(repo.Name() + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}
