package imagestore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"gocloud.dev/blob/fileblob"

	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

func newStore(t *testing.T) (*imagestore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	b, err := fileblob.OpenBucket(dir, &fileblob.Options{Metadata: fileblob.MetadataDontWrite})
	if err != nil {
		t.Fatal(err)
	}
	s := imagestore.New(b, "prefix")
	t.Cleanup(func() { s.Close() })
	return s, filepath.Join(dir, "prefix", "plugins", "imagestreams")
}

func put(t *testing.T, s *imagestore.Store, mt types.MediaType, b []byte) v1.Descriptor {
	t.Helper()
	sum := sha256.Sum256(b)
	d := v1.Descriptor{MediaType: mt, Size: int64(len(b)), Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}}
	if _, err := s.PutBlob(context.Background(), d, func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}); err != nil {
		t.Fatal(err)
	}
	return d
}

// storeImage stores an image's layers, config and manifest as the copier would.
func storeImage(t *testing.T, s *imagestore.Store, img v1.Image) v1.Descriptor {
	t.Helper()
	layers, _ := img.Layers()
	for _, l := range layers {
		rc, _ := l.Compressed()
		b, _ := io.ReadAll(rc)
		put(t, s, types.DockerLayer, b)
	}
	cfg, _ := img.RawConfigFile()
	put(t, s, types.DockerConfigJSON, cfg)
	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()
	return put(t, s, mt, raw)
}

func image(t *testing.T, base ...v1.Layer) v1.Image {
	t.Helper()
	own, err := random.Layer(1000, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, append(append([]v1.Layer{}, base...), own)...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func blobFiles(t *testing.T, root string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	entries, _ := os.ReadDir(filepath.Join(root, "blobs", "sha256"))
	for _, e := range entries {
		out[e.Name()] = true
	}
	return out
}

func digests(t *testing.T, img v1.Image) []string {
	t.Helper()
	m, _ := img.Manifest()
	h, _ := img.Digest()
	out := []string{h.Hex, m.Config.Digest.Hex}
	for _, l := range m.Layers {
		out = append(out, l.Digest.Hex)
	}
	return out
}

func TestPutBlobRefusesBytesThatDoNotMatchAndLeavesNothing(t *testing.T) {
	s, root := newStore(t)
	good := []byte("layer bytes")
	sum := sha256.Sum256(good)
	d := v1.Descriptor{Size: int64(len(good)), Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}}
	tests := []struct {
		name string
		body []byte
	}{
		{"other bytes of the same size", []byte("LAYER BYTES")},
		{"a truncated copy", good[:5]},
		{"a longer copy", append(bytes.Clone(good), '!')},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.PutBlob(context.Background(), d, func(context.Context) (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(tt.body)), nil
			})
			var mismatch *imagestore.DigestMismatchError
			if !errors.As(err, &mismatch) || !strings.Contains(err.Error(), d.Digest.String()) {
				t.Fatalf("PutBlob error = %v, want a mismatch naming %s", err, d.Digest)
			}
			if files := blobFiles(t, root); len(files) != 0 {
				t.Errorf("store holds %v after a refused write", files)
			}
		})
	}
}

func TestConcurrentWritersOfOneDigestUploadOnce(t *testing.T) {
	s, _ := newStore(t)
	b := bytes.Repeat([]byte("x"), 1<<20)
	sum := sha256.Sum256(b)
	d := v1.Descriptor{Size: int64(len(b)), Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}}
	var opens, writes atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			wrote, err := s.PutBlob(context.Background(), d, func(context.Context) (io.ReadCloser, error) {
				opens.Add(1)
				return io.NopCloser(bytes.NewReader(b)), nil
			})
			if err != nil {
				t.Error(err)
			}
			if wrote {
				writes.Add(1)
			}
		})
	}
	wg.Wait()
	if opens.Load() != 1 || writes.Load() != 1 {
		t.Errorf("16 writers opened the source %d times and wrote %d times, want once each", opens.Load(), writes.Load())
	}
}

func TestGCDeletesOnlyWhatNoBackupNeeds(t *testing.T) {
	ctx := context.Background()
	s, root := newStore(t)
	base, _ := random.Layer(2000, types.DockerLayer)
	onlyA, shared, onlyB := image(t), image(t, base), image(t, base)
	entry := func(img v1.Image) imagestore.Entry {
		return imagestore.Entry{Namespace: "app", ImageStream: "is", Descriptor: storeImage(t, s, img)}
	}
	if err := s.WriteIndex(ctx, "a", []imagestore.Entry{entry(onlyA), entry(shared)}, imagestore.IndexMeta{}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteIndex(ctx, "b", []imagestore.Entry{entry(shared), entry(onlyB)}, imagestore.IndexMeta{}); err != nil {
		t.Fatal(err)
	}

	// Backup c is in progress: it has stored an image but not yet written its index.
	pending, err := s.Begin(ctx, "c", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	inProgress := image(t, base)
	storeImage(t, s, inProgress)

	if err := s.DeleteBackup(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	before := blobFiles(t, root)
	rep, err := s.GC(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Deferred || len(rep.Running) != 1 || rep.Running[0] != "c" || rep.Deleted != 0 {
		t.Errorf("GC with backup c in progress = %+v, want it deferred naming c", rep)
	}
	if after := blobFiles(t, root); len(after) != len(before) {
		t.Errorf("GC deleted blobs while a backup was in progress")
	}

	if err := pending.Commit(ctx, []imagestore.Entry{{Namespace: "app", ImageStream: "c", Descriptor: storeImage(t, s, inProgress)}}, imagestore.IndexMeta{}); err != nil {
		t.Fatal(err)
	}
	rep, err = s.GC(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	after := blobFiles(t, root)
	for _, h := range digests(t, onlyA) {
		if after[h] {
			t.Errorf("blob %s of the deleted backup only is still stored", h)
		}
	}
	for _, img := range []v1.Image{shared, onlyB, inProgress} {
		for _, h := range digests(t, img) {
			if !after[h] {
				t.Errorf("blob %s that a remaining backup uses was deleted", h)
			}
		}
	}
	if rep.Deleted != len(digests(t, onlyA)) || rep.Backups != 2 {
		t.Errorf("GC report %+v, want %d blobs deleted and 2 backups kept", rep, len(digests(t, onlyA)))
	}
	names, err := s.Backups(ctx)
	if err != nil || strings.Join(names, ",") != "b,c" {
		t.Errorf("Backups() = %v, %v; want b,c", names, err)
	}
}

func TestBeginWaitsForARunningGC(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, root := newStore(t)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// A collection that another process is running, its heartbeat fresh.
	if err := os.WriteFile(filepath.Join(root, "gc.json"), fmt.Appendf(nil, `{"heartbeat":%q}`, time.Now().UTC().Format(time.RFC3339Nano)), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := s.Begin(ctx, "b", "", 0); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("Begin returned %v while a collection was running", err)
	default:
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Begin = %v, want it to have waited until canceled", err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "backups", "b", "pending*")); len(left) != 0 {
		t.Errorf("a canceled Begin left its marker behind: %v", left)
	}
}

func TestExportIsReadByCraneAndSkopeo(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	idx, err := random.Index(500, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Store the index's images, then the index itself.
	m, _ := idx.IndexManifest()
	for _, d := range m.Manifests {
		img, _ := idx.Image(d.Digest)
		storeImage(t, s, img)
	}
	raw, _ := idx.RawManifest()
	idxDesc := put(t, s, types.OCIImageIndex, raw)
	ociImg := mutate.ConfigMediaType(mutate.MediaType(image(t), types.OCIManifestSchema1), types.OCIConfigJSON)
	ociDesc := storeImage(t, s, ociImg)
	dockerImg := image(t)
	dockerDesc := storeImage(t, s, dockerImg)
	if err := s.WriteIndex(ctx, "b1", []imagestore.Entry{
		{Namespace: "app", ImageStream: "multi", Tags: []string{"v1"}, Descriptor: idxDesc},
		{Namespace: "app", ImageStream: "single", Tags: []string{"latest", "old"}, Descriptor: ociDesc},
		{Namespace: "app", ImageStream: "docker", Descriptor: dockerDesc},
	}, imagestore.IndexMeta{}); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "export")
	if err := s.Export(ctx, "b1", dir); err != nil {
		t.Fatal(err)
	}

	// crane's library reads every entry, Docker-typed ones included, and validates each
	// digest and size.
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	exported, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	em, _ := exported.IndexManifest()
	want := map[v1.Hash]string{idxDesc.Digest: "app/multi:v1", ociDesc.Digest: "app/single:latest", dockerDesc.Digest: "app/docker@" + dockerDesc.Digest.String()}
	if len(em.Manifests) != len(want) {
		t.Fatalf("exported %d entries, want %d", len(em.Manifests), len(want))
	}
	for _, d := range em.Manifests {
		if got := d.Annotations["org.opencontainers.image.ref.name"]; got != want[d.Digest] {
			t.Errorf("entry %s is named %q, want %q", d.Digest, got, want[d.Digest])
		}
		if d.MediaType.IsIndex() {
			ii, _ := exported.ImageIndex(d.Digest)
			if err := validate.Index(ii); err != nil {
				t.Errorf("exported index %s: %v", d.Digest, err)
			}
			continue
		}
		img, _ := exported.Image(d.Digest)
		if err := validate.Image(img); err != nil {
			t.Errorf("exported image %s: %v", d.Digest, err)
		}
	}

	// skopeo (containers/image 5.23 in Debian 12) reads OCI-typed entries of a layout; it skips
	// Docker-typed ones, which crane reads above.
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatal("skopeo is not installed: .ci/run installs Debian's skopeo")
	}
	for ref, want := range map[string]v1.Hash{"app/multi:v1": idxDesc.Digest, "app/single:latest": ociDesc.Digest} {
		cmd := exec.Command(skopeo, "inspect", "--raw", "oci:"+dir+":"+ref)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("skopeo inspect %s: %v\n%s", ref, err, stderr.String())
		}
		if got := fmt.Sprintf("sha256:%x", sha256.Sum256(out)); got != want.String() {
			t.Errorf("skopeo reads %s with digest %s, want %s", ref, got, want)
		}
		// A full copy makes skopeo read and check every blob.
		if out, err := exec.Command(skopeo, "copy", "--all", "oci:"+dir+":"+ref, "oci:"+t.TempDir()+":copy").CombinedOutput(); err != nil {
			t.Fatalf("skopeo copy %s: %v\n%s", ref, err, out)
		}
	}
}

func TestReadIndexRefusesUntrustedContent(t *testing.T) {
	ctx := context.Background()
	s, root := newStore(t)
	valid := fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":%q,"digest":"sha256:%064x","size":10}]}`, types.OCIManifestSchema1, 1)
	tests := []struct {
		name, index, want string
	}{
		{"a truncated index", valid[:40], "parsing index"},
		{"a digest outside sha256", `{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../x","size":1}]}`, "parsing index"},
		{"a short digest", `{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:abc","size":1}]}`, "parsing index"},
		{"a digest in upper case", fmt.Sprintf(`{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%064X","size":1}]}`, 0xabc), "backup bad"},
		{"a negative size", fmt.Sprintf(`{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%064x","size":-1}]}`, 1), "negative size"},
		{"a layer where a manifest belongs", fmt.Sprintf(`{"manifests":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%064x","size":1}]}`, 1), "not a manifest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(root, "backups", "bad")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "index.json"), []byte(tt.index), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ReadIndex(ctx, "bad"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ReadIndex error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	for _, name := range []string{"../other", "a/b", strings.Repeat("a", 300), ""} {
		if _, err := s.ReadIndex(ctx, name); err == nil || !strings.Contains(err.Error(), "invalid backup name") {
			t.Errorf("ReadIndex(%q) error = %v, want an invalid name", name, err)
		}
	}
	if _, err := s.ReadIndex(ctx, "missing"); !errors.Is(err, imagestore.ErrNotFound) {
		t.Errorf("ReadIndex of a missing backup = %v, want ErrNotFound", err)
	}
}

func TestIndexRoundTrip(t *testing.T) {
	in := []imagestore.Entry{{Namespace: "app", ImageStream: "web", Tags: []string{"latest", "v1"}, Reference: "r/app/web@sha256:x",
		Descriptor: v1.Descriptor{MediaType: types.DockerManifestSchema2, Size: 7, Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", 7)}}}}
	raw, err := imagestore.MarshalIndex(in, imagestore.IndexMeta{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := imagestore.ParseIndex(raw)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(in)
	b, _ := json.Marshal(out)
	if !bytes.Equal(a, b) {
		t.Errorf("index round trip changed entries:\n%s\n%s", a, b)
	}
}

func partEntry(n int) imagestore.Entry {
	return imagestore.Entry{Namespace: "app", ImageStream: fmt.Sprint("is", n), Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: 1,
		Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", n)}}}
}

// An index written by an earlier version counts its parts: those named <name>.<k> that held no
// image were never written and are skipped.
func TestReadBackupOfALegacySplit(t *testing.T) {
	ctx := context.Background()
	s, dir := newStore(t)
	raw, err := imagestore.MarshalIndex([]imagestore.Entry{partEntry(0)}, imagestore.IndexMeta{})
	if err != nil {
		t.Fatal(err)
	}
	legacy := strings.Replace(string(raw), `"manifests"`, fmt.Sprintf(`"annotations":{%q:"3"},"manifests"`, imagestore.AnnotationParts), 1)
	if err := os.MkdirAll(filepath.Join(dir, "backups", "big"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "backups", "big", "index.json"), []byte(legacy), 0o644); err != nil {
		t.Fatal(err)
	}
	// Three parts, of which part 1 held no image and was never written.
	if err := s.WriteIndex(ctx, "big.2", []imagestore.Entry{partEntry(2)}, imagestore.IndexMeta{}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadBackup(ctx, "big")
	if err != nil || len(got.Entries) != 2 || got.Entries[0].ImageStream != "is0" || got.Entries[1].ImageStream != "is2" || len(got.Missing) != 0 {
		t.Errorf("ReadBackup = %+v, %v; want the head's and part 2's entries and nothing missing", got, err)
	}
	if only, err := s.ReadIndex(ctx, "big"); err != nil || len(only) != 1 {
		t.Errorf("ReadIndex = %+v, %v; want the head alone", only, err)
	}
	for _, bad := range []string{`"0"`, `"many"`, `"5000"`} {
		raw := fmt.Sprintf(`{"schemaVersion":2,"annotations":{%q:%s},"manifests":[]}`, imagestore.AnnotationParts, bad)
		if _, err := imagestore.ParseIndex([]byte(raw)); err == nil {
			t.Errorf("ParseIndex accepted parts %s", bad)
		}
	}
}

// A head lists its parts by name, so a part the store lacks is reported, not taken for one that
// held nothing.
func TestReadBackupNamesAMissingPart(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	meta := imagestore.IndexMeta{Writer: "4b1f3c2a-0000-4000-8000-000000000001", Parts: []string{"big-part1-abc", "big-part2-abc"}}
	if err := s.WriteIndex(ctx, "big", []imagestore.Entry{partEntry(0)}, meta); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteIndex(ctx, "big-part2-abc", []imagestore.Entry{partEntry(2)}, imagestore.IndexMeta{}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadBackup(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Entries) != 2 || !slices.Equal(got.Missing, []string{"big-part1-abc"}) || got.Writer != meta.Writer {
		t.Errorf("ReadBackup = %+v; want the head's and part 2's entries, part 1 missing, and the writer", got)
	}
	for name, bad := range map[string]imagestore.IndexMeta{
		"a part named like no backup": {Parts: []string{"Big_Part"}},
		"a part listed twice":         {Parts: []string{"p", "p"}},
		"itself as a part":            {Parts: []string{"big"}},
		"a writer with a slash":       {Writer: "../x"},
	} {
		if err := s.WriteIndex(ctx, "big", nil, bad); err == nil {
			t.Errorf("WriteIndex accepted %s", name)
		}
	}
	for _, bad := range []string{
		fmt.Sprintf(`{"schemaVersion":2,"annotations":{%q:"a,../b"},"manifests":[]}`, imagestore.AnnotationPartNames),
		fmt.Sprintf(`{"schemaVersion":2,"annotations":{%q:"a/b"},"manifests":[]}`, imagestore.AnnotationWriter),
	} {
		if _, err := imagestore.ParseIndex([]byte(bad)); err == nil {
			t.Errorf("ParseIndex accepted %s", bad)
		}
	}
}
