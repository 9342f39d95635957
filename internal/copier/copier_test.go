package copier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"

	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// testRegistry is an in-memory registry on httptest that counts requests and can be told to
// misbehave.
type testRegistry struct {
	*httptest.Server
	blobGets, manifestGets atomic.Int64
	mu                     sync.Mutex
	fail                   map[string]int                     // path suffix -> remaining 500s
	rewrite                func(path string, b []byte) []byte // alters blob bodies
}

func newRegistry(t *testing.T) *testRegistry {
	r := &testRegistry{fail: map[string]int{}}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			r.blobGets.Add(1)
		}
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/manifests/") {
			r.manifestGets.Add(1)
		}
		r.mu.Lock()
		for suffix, n := range r.fail {
			if n > 0 && strings.HasSuffix(req.URL.Path, suffix) && req.Method == http.MethodGet {
				r.fail[suffix] = n - 1
				r.mu.Unlock()
				http.Error(w, "injected failure", http.StatusInternalServerError)
				return
			}
		}
		rewrite := r.rewrite
		r.mu.Unlock()
		if rewrite != nil && req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body := rewrite(req.URL.Path, rec.Body.Bytes())
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(body)
			return
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *testRegistry) host() string { return strings.TrimPrefix(r.URL, "http://") }

func (r *testRegistry) repo(t *testing.T, path string) name.Repository {
	repo, err := name.NewRepository(r.host() + "/" + path)
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// push writes an image or index to repo and returns its digest reference.
func (r *testRegistry) push(t *testing.T, path string, tg remote.Taggable) name.Digest {
	t.Helper()
	repo := r.repo(t, path)
	var h v1.Hash
	var err error
	switch x := tg.(type) {
	case v1.Image:
		h, _ = x.Digest()
		err = remote.Write(repo.Digest(h.String()), x)
	case v1.ImageIndex:
		h, _ = x.Digest()
		err = remote.WriteIndex(repo.Digest(h.String()), x)
	}
	if err != nil {
		t.Fatalf("pushing to %s: %v", repo, err)
	}
	return repo.Digest(h.String())
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// Images of every kind the copier must keep byte for byte.
func dockerImage(t *testing.T) v1.Image { return must[v1.Image](t)(random.Image(1024, 3)) }

func ociImage(t *testing.T) v1.Image {
	img := mutate.MediaType(dockerImage(t), types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

func multiPlatform(t *testing.T) v1.ImageIndex {
	return must[v1.ImageIndex](t)(random.Index(512, 2, 3))
}

func dockerManifestList(t *testing.T) v1.ImageIndex {
	return mutate.IndexMediaType(multiPlatform(t), types.DockerManifestList)
}

// sharingImages returns n images built on the same base layers.
func sharingImages(t *testing.T, base []v1.Layer, n int) []v1.Image {
	var out []v1.Image
	for range n {
		own := must[v1.Layer](t)(random.Layer(2048, types.DockerLayer))
		out = append(out, must[v1.Image](t)(mutate.AppendLayers(empty.Image, append(append([]v1.Layer{}, base...), own)...)))
	}
	return out
}

type fixture struct {
	bucket *blob.Bucket // the raw bucket, to look at what the store wrote
	store  *imagestore.Store
}

func newStore(t *testing.T) fixture {
	dir := t.TempDir()
	open := func() *blob.Bucket {
		b, err := fileblob.OpenBucket(dir, &fileblob.Options{Metadata: fileblob.MetadataDontWrite})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Two handles on one directory: the store owns one, the test looks through the other.
	s, raw := imagestore.New(open(), "velero/cluster-a"), open()
	t.Cleanup(func() { s.Close(); raw.Close() })
	return fixture{bucket: raw, store: s}
}

// blobObjects counts the objects under the store's blobs/ and their bytes.
func (f fixture) blobObjects(t *testing.T) (n int, size int64) {
	t.Helper()
	it := f.bucket.List(&blob.ListOptions{Prefix: "velero/cluster-a/plugins/imagestreams/blobs/sha256/"})
	for {
		obj, err := it.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return n, size
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		size += obj.Size
	}
}

func newCopier(t *testing.T, s *imagestore.Store) *copier.Copier {
	return newCopierWithProgress(t, s, nil)
}

func newCopierWithProgress(t *testing.T, s *imagestore.Store, progress func(copier.Stats)) *copier.Copier {
	c, err := copier.New(s, copier.Options{Backoff: remote.Backoff{Duration: 1, Factor: 1, Steps: 4}, Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newPusher(t *testing.T, s *imagestore.Store) *copier.Pusher {
	p, err := copier.NewPusher(s, copier.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// uniqueBlobs returns every blob and manifest digest of the images, with sizes, once each.
func uniqueBlobs(t *testing.T, tgs ...remote.Taggable) map[v1.Hash]int64 {
	out := map[v1.Hash]int64{}
	addImage := func(img v1.Image) {
		out[must[v1.Hash](t)(img.Digest())] = must[int64](t)(img.Size())
		out[must[v1.Hash](t)(img.ConfigName())] = int64(len(must[[]byte](t)(img.RawConfigFile())))
		for _, l := range must[[]v1.Layer](t)(img.Layers()) {
			out[must[v1.Hash](t)(l.Digest())] = must[int64](t)(l.Size())
		}
	}
	for _, tg := range tgs {
		switch x := tg.(type) {
		case v1.Image:
			addImage(x)
		case v1.ImageIndex:
			out[must[v1.Hash](t)(x.Digest())] = must[int64](t)(x.Size())
			for _, d := range must[*v1.IndexManifest](t)(x.IndexManifest()).Manifests {
				addImage(must[v1.Image](t)(x.Image(d.Digest)))
			}
		}
	}
	return out
}

func TestRoundTripKeepsEveryByteAndStoresSharedLayersOnce(t *testing.T) {
	ctx := context.Background()
	src, dst := newRegistry(t), newRegistry(t)
	f := newStore(t)

	base := []v1.Layer{must[v1.Layer](t)(random.Layer(4096, types.DockerLayer)), must[v1.Layer](t)(random.Layer(4096, types.DockerLayer))}
	shared := sharingImages(t, base, 2)
	images := map[string]remote.Taggable{
		"app/docker":     dockerImage(t),
		"app/oci":        ociImage(t),
		"app/multiarch":  multiPlatform(t),
		"app/list":       dockerManifestList(t),
		"app/shared-one": shared[0],
		"app/shared-two": shared[1],
	}

	var mu sync.Mutex
	var last copier.Stats
	calls := 0
	c := newCopierWithProgress(t, f.store, func(s copier.Stats) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if s.BytesTotal < last.BytesTotal {
			t.Errorf("progress went backwards: %+v after %+v", s, last)
		}
		last = s
	})
	stored := map[string]v1.Descriptor{}
	var all []remote.Taggable
	for path, tg := range images {
		ref := src.push(t, path, tg)
		desc, err := c.Copy(ctx, ref)
		if err != nil {
			t.Fatalf("copying %s: %v", path, err)
		}
		stored[path] = desc
		all = append(all, tg)
	}

	want := uniqueBlobs(t, all...)
	var wantBytes int64
	for _, s := range want {
		wantBytes += s
	}
	n, size := f.blobObjects(t)
	if n != len(want) || size != wantBytes {
		t.Errorf("store holds %d blobs of %d bytes, want each unique blob once: %d of %d bytes", n, size, len(want), wantBytes)
	}
	if st := c.Stats(); st.BytesUploaded != wantBytes || st.BlobsUploaded != int64(len(want)) {
		t.Errorf("copier stats %+v, want %d blobs and %d bytes uploaded", st, len(want), wantBytes)
	}
	if int64(calls) != c.Stats().BlobsTotal || last != c.Stats() {
		t.Errorf("progress called %d times ending at %+v, want once per blob (%d) ending at %+v", calls, last, c.Stats().BlobsTotal, c.Stats())
	}

	p := newPusher(t, f.store)
	for path, tg := range images {
		repo := dst.repo(t, "restored/"+strings.TrimPrefix(path, "app/"))
		if err := p.Push(ctx, stored[path], repo, []string{"v1", "latest"}); err != nil {
			t.Fatalf("pushing %s: %v", path, err)
		}
		wantRaw := must[[]byte](t)(tg.RawManifest())
		for _, ref := range []name.Reference{repo.Digest(stored[path].Digest.String()), repo.Tag("v1"), repo.Tag("latest")} {
			got, err := remote.Get(ref)
			if err != nil {
				t.Fatalf("reading back %s: %v", ref, err)
			}
			if !bytes.Equal(got.Manifest, wantRaw) || got.Digest != stored[path].Digest {
				t.Errorf("%s: manifest differs after restore (digest %s, want %s)", ref, got.Digest, stored[path].Digest)
			}
		}
		if idx, ok := tg.(v1.ImageIndex); ok {
			for _, d := range must[*v1.IndexManifest](t)(idx.IndexManifest()).Manifests {
				if _, err := remote.Image(repo.Digest(d.Digest.String())); err != nil {
					t.Errorf("%s: platform %s missing after restore: %v", path, d.Digest, err)
				}
			}
		}
	}
}

func TestSecondBackupWritesAndReadsNoBlobBytes(t *testing.T) {
	ctx := context.Background()
	src := newRegistry(t)
	f := newStore(t)
	base := []v1.Layer{must[v1.Layer](t)(random.Layer(4096, types.DockerLayer))}
	var refs []name.Digest
	for i, img := range sharingImages(t, base, 3) {
		refs = append(refs, src.push(t, "app/img"+string(rune('a'+i)), img))
	}
	refs = append(refs, src.push(t, "app/multiarch", multiPlatform(t)))

	first := newCopier(t, f.store)
	for _, r := range refs {
		if _, err := first.Copy(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	blobGets, manifestGets := src.blobGets.Load(), src.manifestGets.Load()
	objects, _ := f.blobObjects(t)

	second := newCopier(t, f.store)
	for _, r := range refs {
		if _, err := second.Copy(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if st := second.Stats(); st.BytesUploaded != 0 || st.BlobsUploaded != 0 || st.BytesSkipped != first.Stats().BytesTotal {
		t.Errorf("second backup stats %+v, want nothing uploaded and all %d bytes the first backup saw skipped", st, first.Stats().BytesTotal)
	}
	if got := src.blobGets.Load() - blobGets; got != 0 {
		t.Errorf("second backup fetched %d blobs from the registry, want 0", got)
	}
	if got := src.manifestGets.Load() - manifestGets; got != 0 {
		t.Errorf("second backup fetched %d manifests from the registry, want 0", got)
	}
	if n, _ := f.blobObjects(t); n != objects {
		t.Errorf("store holds %d blobs after the second backup, want %d", n, objects)
	}
}

func TestCopyRetriesARegistryThatFailsTwice(t *testing.T) {
	src := newRegistry(t)
	f := newStore(t)
	img := dockerImage(t)
	ref := src.push(t, "app/flaky", img)
	layer := must[[]v1.Layer](t)(img.Layers())[0]
	src.mu.Lock()
	src.fail[must[v1.Hash](t)(layer.Digest()).String()] = 2
	src.fail["/manifests/"+ref.DigestStr()] = 2
	src.mu.Unlock()

	if _, err := newCopier(t, f.store).Copy(context.Background(), ref); err != nil {
		t.Fatalf("copy through two 500s each for a manifest and a layer: %v", err)
	}
	if n, _ := f.blobObjects(t); n != len(uniqueBlobs(t, img)) {
		t.Errorf("store holds %d blobs, want %d", n, len(uniqueBlobs(t, img)))
	}
}

func TestCopyRefusesABlobThatDoesNotMatchItsDigest(t *testing.T) {
	src := newRegistry(t)
	f := newStore(t)
	img := dockerImage(t)
	ref := src.push(t, "app/bad", img)
	bad := must[v1.Hash](t)(must[[]v1.Layer](t)(img.Layers())[1].Digest())
	src.rewrite = func(path string, b []byte) []byte {
		if strings.HasSuffix(path, bad.String()) {
			b = bytes.Clone(b)
			b[0] ^= 0xff
		}
		return b
	}

	_, err := newCopier(t, f.store).Copy(context.Background(), ref)
	var mismatch *imagestore.DigestMismatchError
	if !errors.As(err, &mismatch) || mismatch.Digest != bad || !strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("copy error = %v, want a digest mismatch naming %s", err, bad)
	}
	if ok, _ := f.store.Has(context.Background(), bad); ok {
		t.Errorf("the store holds an object for the corrupt blob %s", bad)
	}
	if ok, _ := f.store.Has(context.Background(), must[v1.Hash](t)(img.Digest())); ok {
		t.Errorf("the store holds the manifest of an image it could not copy whole")
	}
}

func TestCorruptBlobInTheBucketFailsVerifyAndRestore(t *testing.T) {
	ctx := context.Background()
	src, dst := newRegistry(t), newRegistry(t)
	f := newStore(t)
	img := dockerImage(t)
	desc, err := newCopier(t, f.store).Copy(ctx, src.push(t, "app/img", img))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.WriteIndex(ctx, "b1", []imagestore.Entry{{Namespace: "app", ImageStream: "img", Tags: []string{"latest"}, Descriptor: desc}}, imagestore.IndexMeta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Verify(ctx, "b1"); err != nil {
		t.Fatalf("verify of an intact backup: %v", err)
	}

	// Flip a byte of one layer in the bucket, keeping its size.
	layer := must[[]v1.Layer](t)(img.Layers())[2]
	h := must[v1.Hash](t)(layer.Digest())
	key := "velero/cluster-a/plugins/imagestreams/blobs/sha256/" + h.Hex
	b, err := f.bucket.ReadAll(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := f.bucket.WriteAll(ctx, key, b, nil); err != nil {
		t.Fatal(err)
	}

	if _, err := f.store.Verify(ctx, "b1"); err == nil || !strings.Contains(err.Error(), h.String()) {
		t.Errorf("verify error = %v, want one naming %s", err, h)
	}
	repo := dst.repo(t, "app/img")
	if err := newPusher(t, f.store).Push(ctx, desc, repo, []string{"latest"}); err == nil || !strings.Contains(err.Error(), h.Hex) {
		t.Errorf("restore error = %v, want one naming %s", err, h)
	}
	if _, err := remote.Head(repo.Digest(desc.Digest.String())); err == nil {
		t.Errorf("the registry holds the manifest of an image restored from a corrupt blob")
	}
	if _, err := remote.Head(repo.Tag("latest")); err == nil {
		t.Errorf("the registry holds a tag for an image restored from a corrupt blob")
	}
}

// A layer that does not match its digest in the bucket never reaches the registry whole, small
// (sent from memory) or large (streamed): the store checks the digest before it hands out the
// layer's last bytes, so the request that would complete the upload is cut short, and nothing
// rests on the registry checking the digest itself.
func TestACorruptLayerNeverReachesTheRegistryWhole(t *testing.T) {
	for _, size := range []int64{2048, 3 << 20} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			ctx := context.Background()
			src, f := newRegistry(t), newStore(t)
			img := must[v1.Image](t)(random.Image(size, 1))
			desc, err := newCopier(t, f.store).Copy(ctx, src.push(t, "app/img", img))
			if err != nil {
				t.Fatal(err)
			}
			layer := must[[]v1.Layer](t)(img.Layers())[0]
			bad, layerSize := must[v1.Hash](t)(layer.Digest()), must[int64](t)(layer.Size())
			key := "velero/cluster-a/plugins/imagestreams/blobs/sha256/" + bad.Hex
			b, err := f.bucket.ReadAll(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-1] ^= 0x01 // the last byte: only a check before it is sent keeps it back
			if err := f.bucket.WriteAll(ctx, key, b, nil); err != nil {
				t.Fatal(err)
			}

			// The target registry notes how much of the corrupt layer each upload request carried.
			var most atomic.Int64
			inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
			dst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if (r.Method == http.MethodPut || r.Method == http.MethodPatch) && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.ContentLength == layerSize {
					body, _ := io.ReadAll(r.Body)
					if n := int64(len(body)); n > most.Load() {
						most.Store(n)
					}
					r.Body = io.NopCloser(bytes.NewReader(body))
				}
				inner.ServeHTTP(w, r)
			}))
			repo := must[name.Repository](t)(name.NewRepository(strings.TrimPrefix(dst.URL, "http://") + "/app/img"))
			if err := newPusher(t, f.store).Push(ctx, desc, repo, []string{"latest"}); err == nil || !strings.Contains(err.Error(), bad.Hex) {
				t.Errorf("restore error = %v, want one naming %s", err, bad)
			}
			if _, err := remote.Head(repo.Tag("latest")); err == nil {
				t.Errorf("the registry holds a tag for an image restored from a corrupt layer")
			}
			dst.Close() // waits for the registry's handlers, which may still be reading
			if got := most.Load(); got >= layerSize {
				t.Errorf("the registry received all %d bytes of the corrupt layer in one request", got)
			}
		})
	}
}

// An image with a foreign layer (a Windows base layer, fetched from its URLs) and a layer it
// lists twice is backed up and restored whole: the foreign layer is neither stored nor sent,
// the repeated one is sent once, and the manifest comes back byte for byte.
func TestAnImageWithAForeignAndARepeatedLayerRoundTrips(t *testing.T) {
	ctx := context.Background()
	src, dst, f := newRegistry(t), newRegistry(t), newStore(t)
	foreign := must[v1.Layer](t)(random.Layer(1024, types.DockerForeignLayer))
	repeated := must[v1.Layer](t)(random.Layer(2048, types.DockerLayer))
	img := must[v1.Image](t)(mutate.Append(dockerImage(t),
		mutate.Addendum{Layer: foreign, URLs: []string{"https://example.invalid/base.tar.gz"}, MediaType: types.DockerForeignLayer},
		mutate.Addendum{Layer: repeated}, mutate.Addendum{Layer: repeated}))
	desc, err := newCopier(t, f.store).Copy(ctx, src.push(t, "app/img", img))
	if err != nil {
		t.Fatal(err)
	}
	var uploads atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") {
			uploads.Add(1)
		}
		dst.Config.Handler.ServeHTTP(w, r)
	}))
	defer target.Close()
	repo := must[name.Repository](t)(name.NewRepository(strings.TrimPrefix(target.URL, "http://") + "/app/img"))
	p := newPusher(t, f.store)
	if err := p.Push(ctx, desc, repo, []string{"latest"}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	got := must[[]byte](t)(must[*remote.Descriptor](t)(remote.Get(repo.Tag("latest"))).RawManifest())
	if want := must[[]byte](t)(img.RawManifest()); !bytes.Equal(got, want) {
		t.Errorf("restored manifest differs from the original")
	}
	// The config, the three layers of the base image and the repeated layer once.
	if n := uploads.Load(); n != 5 {
		t.Errorf("%d blobs uploaded, want 5: the foreign layer never, the repeated one once", n)
	}
	if st := p.Stats(); st.BlobsUploaded != 5 || st.BlobsSkipped != 2 {
		t.Errorf("stats %+v, want 5 blobs uploaded and 2 skipped (the foreign and the repeated entry)", st)
	}
}

// A registry that refuses a manifest for a blob it says it lacks, as distribution does for a
// moment while another client rewrites the same blob's links, gets the manifest again.
func TestAManifestRefusedForABlobTheRegistryLacksIsPutAgain(t *testing.T) {
	ctx := context.Background()
	src, f := newRegistry(t), newStore(t)
	img := dockerImage(t)
	desc, err := newCopier(t, f.store).Copy(ctx, src.push(t, "app/img", img))
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	dst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") && refused.Add(1) <= 2 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}`)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer dst.Close()
	repo := must[name.Repository](t)(name.NewRepository(strings.TrimPrefix(dst.URL, "http://") + "/app/img"))
	if err := newPusher(t, f.store).Push(ctx, desc, repo, []string{"latest"}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got, err := remote.Head(repo.Tag("latest")); err != nil || got.Digest != desc.Digest {
		t.Errorf("latest = %v, %v; want %s", got, err, desc.Digest)
	}
}

func TestCopyWithABearerToken(t *testing.T) {
	const token = "projected-service-account-token"
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var realm string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			// As OpenShift's registry does; with a token already in hand the client never asks
			// the realm for one.
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()
	realm = srv.URL + "/openshift/token"
	img := dockerImage(t)
	repo := must[name.Repository](t)(name.NewRepository(strings.TrimPrefix(srv.URL, "http://") + "/app/img"))
	ref := repo.Digest(must[v1.Hash](t)(img.Digest()).String())
	auth := authn.FromConfig(authn.AuthConfig{RegistryToken: token})
	if err := remote.Write(ref, img, remote.WithAuth(auth)); err != nil {
		t.Fatal(err)
	}
	f := newStore(t)
	for _, tt := range []struct {
		name    string
		auth    authn.Authenticator
		wantErr bool
	}{
		{"anonymous is refused", nil, true},
		{"the wrong token is refused", authn.FromConfig(authn.AuthConfig{RegistryToken: "wrong"}), true},
		{"the token is accepted", auth, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := copier.New(f.store, copier.Options{Auth: tt.auth})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Copy(context.Background(), ref)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Copy error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), token) {
				t.Errorf("error reveals the token: %v", err)
			}
		})
	}
}

func TestCopyResumesABlobCutOffMidStream(t *testing.T) {
	src := newRegistry(t)
	f := newStore(t)
	img := must[v1.Image](t)(random.Image(256<<10, 2))
	ref := src.push(t, "app/cut", img)
	cut := must[v1.Hash](t)(must[[]v1.Layer](t)(img.Layers())[0].Digest())

	// The first request for the layer sends half of it and drops the connection.
	var cuts atomic.Int64
	inner := src.Config.Handler
	src.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, cut.String()) && r.Method == http.MethodGet && cuts.Add(1) == 1 {
			rec := httptest.NewRecorder()
			inner.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		inner.ServeHTTP(w, r)
	})

	if _, err := newCopier(t, f.store).Copy(context.Background(), ref); err != nil {
		t.Fatalf("copy of a blob whose first transfer was cut: %v", err)
	}
	if cuts.Load() < 2 {
		t.Errorf("the cut blob was requested %d times, want a retry", cuts.Load())
	}
	if ok, _ := f.store.Has(context.Background(), cut); !ok {
		t.Errorf("the cut blob is not stored after the retry")
	}
}
