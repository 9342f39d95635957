package copier_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/test/faults"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

// faultyImages returns a few MiB of images that exercise what the copier must get right under
// faults: three images on shared base layers and a three-platform index. Their bytes derive
// from seed, so that their digests, and with them the faults the proxy picks for each request,
// are the same on every run.
func faultyImages(t *testing.T, seed uint64) map[string]remote.Taggable {
	rnd := rand.New(rand.NewPCG(seed, seed))
	layer := func(size int) v1.Layer {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return static.NewLayer(b, types.OCIUncompressedLayer)
	}
	image := func(layers ...v1.Layer) v1.Image {
		return mutate.ConfigMediaType(mutate.MediaType(must[v1.Image](t)(mutate.AppendLayers(empty.Image, layers...)), types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	out := map[string]remote.Taggable{}
	base := []v1.Layer{layer(512 << 10), layer(512 << 10)}
	for i := range 3 {
		out[fmt.Sprintf("app/shared-%d", i)] = image(append(slices.Clone(base), layer(128<<10), layer(128<<10))...)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64", "s390x"} {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        image(layer(128<<10), layer(128<<10), layer(128<<10)),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	out["app/multiarch"] = idx
	return out
}

func isBlobGet(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
}

func isUpload(r *http.Request) bool {
	return r.Method == http.MethodPatch || r.Method == http.MethodPut || r.Method == http.MethodPost
}

// TestBackupAndRestoreThroughAFaultyNetwork copies images from the real distribution registry
// through a proxy that fails a tenth of all requests with 500 or 503, cuts a twentieth of blob
// downloads partway and delays everything; then restores them through another that does the
// same to uploads. Both must complete with every byte and digest intact.
func TestBackupAndRestoreThroughAFaultyNetwork(t *testing.T) {
	ctx := context.Background()
	src, dst := peers.StartRegistry(t, peers.BasicAuth), peers.StartRegistry(t, peers.BasicAuth)
	srcAuth := authn.FromConfig(authn.AuthConfig{Username: src.Username, Password: src.Password})
	dstAuth := authn.FromConfig(authn.AuthConfig{Username: dst.Username, Password: dst.Password})
	seed := faults.SeedFromEnv(t, 5)
	pull := faults.Start(t, src.Host, faults.Config{
		ErrorRate: 0.10, ResetRate: 0.05, ResetMatch: isBlobGet, Latency: 5 * time.Millisecond, Seed: seed,
	})
	push := faults.Start(t, dst.Host, faults.Config{
		ErrorRate: 0.10, ResetRate: 0.05, ResetMatch: isUpload, Latency: 5 * time.Millisecond, Seed: seed + 1,
	})

	images := faultyImages(t, seed)
	refs := map[string]name.Digest{}
	for path, tg := range images {
		repo := must[name.Repository](t)(name.NewRepository(src.Host + "/" + path))
		h, _, err := v1.SHA256(bytes.NewReader(must[[]byte](t)(tg.RawManifest())))
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Push(repo.Digest(h.String()), tg, remote.WithAuth(srcAuth)); err != nil {
			t.Fatal(err)
		}
		refs[path] = must[name.Repository](t)(name.NewRepository(pull.Host + "/" + path)).Digest(h.String())
	}

	f := newStore(t)
	start := time.Now()
	c := newCopierWith(t, f, copier.Options{Auth: srcAuth})
	var entries []imagestore.Entry
	// In order: requests that share a key, such as pings, then meet the same faults every run.
	for _, path := range slices.Sorted(maps.Keys(refs)) {
		ref := refs[path]
		desc, err := c.Copy(ctx, ref)
		if err != nil {
			t.Fatalf("backup of %s through %s: %v", path, pull.Counts(), err)
		}
		entries = append(entries, imagestore.Entry{Namespace: "app", ImageStream: strings.TrimPrefix(path, "app/"), Descriptor: desc})
	}
	t.Logf("backup in %v through %s", time.Since(start).Round(time.Millisecond), pull.Counts())
	if err := f.store.WriteIndex(ctx, "faulty", entries, imagestore.IndexMeta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Verify(ctx, "faulty"); err != nil {
		t.Fatalf("verify of the backup: %v", err)
	}
	if n, _ := f.blobObjects(t); n != len(uniqueBlobs(t, values(images)...)) {
		t.Errorf("store holds %d blobs, want %d", n, len(uniqueBlobs(t, values(images)...)))
	}

	start = time.Now()
	p, err := copier.NewPusher(f.store, copier.Options{Auth: dstAuth})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		repo := must[name.Repository](t)(name.NewRepository(push.Host + "/restored/" + e.ImageStream))
		if err := p.Push(ctx, e.Descriptor, repo, []string{"latest"}); err != nil {
			t.Fatalf("restore of %s through %s: %v", e.ImageStream, push.Counts(), err)
		}
	}
	t.Logf("restore in %v through %s", time.Since(start).Round(time.Millisecond), push.Counts())

	// Read back from the registry itself, not through the proxy, every byte of every image.
	for _, e := range entries {
		ref := must[name.Repository](t)(name.NewRepository(dst.Host + "/restored/" + e.ImageStream)).Tag("latest")
		got, err := remote.Get(ref, remote.WithAuth(dstAuth))
		if err != nil {
			t.Fatal(err)
		}
		want := images["app/"+e.ImageStream]
		if got.Digest != e.Descriptor.Digest || !bytes.Equal(got.Manifest, must[[]byte](t)(want.RawManifest())) {
			t.Errorf("%s: restored manifest %s differs from the original %s", ref, got.Digest, e.Descriptor.Digest)
		}
		var imgs []v1.Image
		if got.MediaType.IsIndex() {
			idx := must[v1.ImageIndex](t)(got.ImageIndex())
			for _, d := range must[*v1.IndexManifest](t)(idx.IndexManifest()).Manifests {
				imgs = append(imgs, must[v1.Image](t)(idx.Image(d.Digest)))
			}
		} else {
			imgs = append(imgs, must[v1.Image](t)(got.Image()))
		}
		for _, img := range imgs {
			if err := readAll(img); err != nil {
				t.Errorf("%s: %v", ref, err)
			}
		}
	}

	// The test proves nothing unless the faults happened.
	for _, p := range []struct {
		what string
		c    faults.Counts
	}{{"backup", pull.Counts()}, {"restore", push.Counts()}} {
		if p.c.Errors == 0 || p.c.DownloadResets+p.c.UploadResets == 0 {
			t.Errorf("%s met no errors or no resets (%s): the test needs another seed or more data", p.what, p.c)
		}
	}
}

// readAll reads every blob of a remote image; go-containerregistry checks each one's digest
// and size as it reads.
func readAll(img v1.Image) error {
	if _, err := img.RawConfigFile(); err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("reading layer: %w", err)
		}
	}
	return nil
}

func values[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestABlobCutOffAfterTheRegistryReadPartOfItGoesAgainInANewUpload restores an image through a
// proxy that forwards the first PUT of every blob with half of its bytes and then cuts both
// connections, as a network failing between the worker and the registry does: the registry's
// upload session keeps the half it read. Sent again into that session the blob would follow the
// half and be refused; it must go again in a new upload, and the image must arrive whole.
func TestABlobCutOffAfterTheRegistryReadPartOfItGoesAgainInANewUpload(t *testing.T) {
	ctx := context.Background()
	dst := peers.StartRegistry(t, peers.NoAuth)
	isBlobPut := func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/")
	}
	var cut sync.Map
	var mu sync.Mutex
	putsPerSession := map[string]int{}
	proxy := faults.Start(t, dst.Host, faults.Config{
		Observe: func(r *http.Request) {
			if isBlobPut(r) {
				mu.Lock()
				defer mu.Unlock()
				putsPerSession[r.URL.Path]++
			}
		},
		CutForward: func(r *http.Request) bool {
			if !isBlobPut(r) {
				return false
			}
			_, seen := cut.LoadOrStore(r.URL.Query().Get("digest"), true)
			return !seen
		},
	})
	f := newStore(t)
	// A layer over copier.SmallBlobSize streams from the store; one under it is read whole.
	large := must[v1.Layer](t)(random.Layer(2*copier.SmallBlobSize, types.DockerLayer))
	small := must[v1.Layer](t)(random.Layer(64<<10, types.DockerLayer))
	img := must[v1.Image](t)(mutate.AppendLayers(dockerImage(t), large, small))
	desc := storeImage(t, f, newRegistry(t), img)

	if err := newPusher(t, f.store).Push(ctx, desc, must[name.Repository](t)(name.NewRepository(proxy.Host+"/restored/app")), []string{"latest"}); err != nil {
		t.Fatalf("restore through %s: %v", proxy.Counts(), err)
	}
	// Every blob of the image was cut once: five layers and a config.
	if got, want := proxy.Counts().ForwardCuts, int64(len(must[[]v1.Layer](t)(img.Layers()))+1); got != want {
		t.Errorf("forward cuts = %d, want %d (%s)", got, want, proxy.Counts())
	}
	// The bytes go into a session once: sent again, they would follow the half it holds.
	mu.Lock()
	defer mu.Unlock()
	for session, n := range putsPerSession {
		if n > 1 {
			t.Errorf("%d PUTs into upload session %s, want 1", n, session)
		}
	}
	got := must[v1.Image](t)(remote.Image(must[name.Repository](t)(name.NewRepository(dst.Host + "/restored/app")).Tag("latest")))
	if d := must[v1.Hash](t)(got.Digest()); d != desc.Digest {
		t.Errorf("restored digest %s, want %s", d, desc.Digest)
	}
	if err := readAll(got); err != nil {
		t.Error(err)
	}
}
