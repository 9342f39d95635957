package imagestore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// The bucket is not trusted: anyone who can write to it can plant any index, manifest or
// marker. These tests plant them and check that every reader refuses them with an error that
// names what is wrong, reads a bounded number of bytes, ends, and touches nothing outside the
// store (newHostileStore checks the keys).

const gib = 1 << 30

// indexOf returns an index.json with one entry.
func indexOf(mt types.MediaType, digest string, size int64, ann map[string]string) []byte {
	if ann == nil {
		ann = map[string]string{imagestore.AnnotationNamespace: "app", imagestore.AnnotationImageStream: "web", imagestore.AnnotationTags: "latest"}
	}
	raw, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": types.OCIImageIndex,
		"manifests": []map[string]any{{"mediaType": mt, "digest": digest, "size": size, "annotations": ann}}})
	return raw
}

// readers are every path that reads a backup; each must fail on a hostile one.
var readers = []struct {
	name string
	read func(ctx context.Context, s *imagestore.Store, backup, dir string) error
}{
	{"ReadIndex", func(ctx context.Context, s *imagestore.Store, b, _ string) error {
		_, err := s.ReadIndex(ctx, b)
		return err
	}},
	{"ReadBackup", func(ctx context.Context, s *imagestore.Store, b, _ string) error {
		_, err := s.ReadBackup(ctx, b)
		return err
	}},
	{"Verify", func(ctx context.Context, s *imagestore.Store, b, _ string) error {
		_, err := s.Verify(ctx, b)
		return err
	}},
	{"Export", func(ctx context.Context, s *imagestore.Store, b, dir string) error { return s.Export(ctx, b, dir) }},
	{"GC", func(ctx context.Context, s *imagestore.Store, _, _ string) error { _, err := s.GC(ctx, 0); return err }},
}

func TestHostileIndexIsRefusedByEveryReader(t *testing.T) {
	valid := string(indexOf(types.OCIManifestSchema1, fmt.Sprintf("sha256:%064x", 1), 10, nil))
	other := func(alg string, n int) string { return alg + ":" + strings.Repeat("ab", n) }
	tests := []struct {
		name  string
		index []byte // planted as backups/bad/index.json
		size  int64  // when set, the index claims this size and streams spaces without end
		want  []string
		// maxRead bounds the bytes any one reader may read of the index.
		maxRead int64
	}{
		{name: "a truncated index", index: []byte(valid[:len(valid)/2]), want: []string{"backup bad", "parsing index"}},
		{name: "an empty index", index: []byte{}, want: []string{"backup bad", "parsing index"}},
		{name: "an index claiming 1 GiB", size: gib, want: []string{"index of backup bad is 1073741824 bytes, more than the 67108864 allowed"}},
		{name: "an index that claims 100 bytes and never ends", size: 100, want: []string{"index of backup bad is more than the 67108864 bytes allowed"},
			maxRead: imagestore.MaxIndexSize + 1},
		{name: "a digest climbing out of the store", index: indexOf(types.OCIManifestSchema1, "sha256:../../../../etc/passwd", 1, nil),
			want: []string{"index entry 0", `invalid digest "sha256:../../../../etc/passwd"`}},
		{name: "an absolute path as digest", index: indexOf(types.OCIManifestSchema1, "/etc/passwd", 1, nil), want: []string{"index entry 0", `invalid digest "/etc/passwd"`}},
		{name: "a sha512 digest", index: indexOf(types.OCIManifestSchema1, other("sha512", 64), 1, nil), want: []string{"index entry 0", `invalid digest "sha512:abab`}},
		{name: "an md5 digest", index: indexOf(types.OCIManifestSchema1, other("md5", 16), 1, nil), want: []string{"index entry 0", `invalid digest "md5:abab`}},
		{name: "a digest with a path after its hex", index: indexOf(types.OCIManifestSchema1, other("sha256", 32)+"/../../x", 1, nil), want: []string{"index entry 0", "invalid digest"}},
		{name: "a digest of upper-case hex", index: indexOf(types.OCIManifestSchema1, "sha256:"+strings.Repeat("AB", 32), 1, nil), want: []string{"index entry 0", "invalid digest"}},
		{name: "a negative size", index: indexOf(types.OCIManifestSchema1, fmt.Sprintf("sha256:%064x", 1), -1, nil), want: []string{"index entry 0", "negative size -1"}},
		{name: "a layer where a manifest belongs", index: indexOf(types.OCILayer, fmt.Sprintf("sha256:%064x", 1), 1, nil), want: []string{"index entry 0", "is not a manifest's"}},
		{name: "a namespace climbing out of its repository", index: indexOf(types.OCIManifestSchema1, fmt.Sprintf("sha256:%064x", 1), 1,
			map[string]string{imagestore.AnnotationNamespace: "../kube-system", imagestore.AnnotationImageStream: "web"}), want: []string{"index entry 0", `invalid namespace "../kube-system"`}},
		{name: "an imagestream name that is a path", index: indexOf(types.OCIManifestSchema1, fmt.Sprintf("sha256:%064x", 1), 1,
			map[string]string{imagestore.AnnotationNamespace: "app", imagestore.AnnotationImageStream: "web/../../other"}), want: []string{"index entry 0", `invalid imagestream name "web/../../other"`}},
		{name: "a tag that is a path", index: indexOf(types.OCIManifestSchema1, fmt.Sprintf("sha256:%064x", 1), 1,
			map[string]string{imagestore.AnnotationNamespace: "app", imagestore.AnnotationImageStream: "web", imagestore.AnnotationTags: "latest,../../x/manifests/y"}),
			want: []string{"index entry 0", `invalid tag "../../x/manifests/y"`}},
	}
	for _, tt := range tests {
		for _, r := range readers {
			t.Run(tt.name+"/"+r.name, func(t *testing.T) {
				ctx := context.Background()
				s, hb := newHostileStore(t)
				// A blob that no backup references: GC deletes it only if it could read every
				// backup, which it cannot.
				canary := put(t, s, types.OCILayer, []byte("canary"))
				if tt.size > 0 {
					hb.putStream("backups/bad/index.json", tt.size, func() io.Reader { return repeat(' ') })
				} else {
					hb.put("backups/bad/index.json", tt.index)
				}
				err := r.read(ctx, s, "bad", filepath.Join(t.TempDir(), "export"))
				if err == nil {
					t.Fatalf("%s accepted the index", r.name)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s error = %q, want it to contain %q", r.name, err, w)
					}
				}
				if n := hb.bytesRead("backups/bad/index.json"); n > max(tt.maxRead, int64(len(tt.index))) {
					t.Errorf("%s read %d bytes of the index, want at most %d", r.name, n, max(tt.maxRead, int64(len(tt.index))))
				}
				if !hb.has("blobs/sha256/" + canary.Digest.Hex) {
					t.Errorf("%s deleted a blob although a backup could not be read", r.name)
				}
			})
		}
	}
}

// The parts of a backup share one budget: a bucket cannot make a restore read maxParts
// indexes of MaxIndexSize each.
func TestReadBackupBoundsThePartsTotalSize(t *testing.T) {
	ctx := context.Background()
	s, hb := newHostileStore(t)
	head := fmt.Sprintf(`{"schemaVersion":2,"annotations":{%q:"1000"},"manifests":[]}`, imagestore.AnnotationParts)
	hb.put("backups/big/index.json", []byte(head))
	// Each part is a valid, empty index padded with spaces to over half the limit.
	const empty = `{"schemaVersion":2,"manifests":[]}`
	for k := 1; k < 1000; k++ {
		hb.putStream(fmt.Sprintf("backups/big.%d/index.json", k), int64(len(empty))+imagestore.MaxIndexSize/2, func() io.Reader {
			return io.MultiReader(strings.NewReader(empty), io.LimitReader(repeat(' '), imagestore.MaxIndexSize/2))
		})
	}
	_, err := s.ReadBackup(ctx, "big")
	if err == nil || !strings.Contains(err.Error(), "index of backup big.2 is") {
		t.Fatalf("ReadBackup = %v, want it to stop at part 2 for want of budget", err)
	}
	if n := hb.bytesRead("backups/big.3/index.json"); n != 0 {
		t.Errorf("read %d bytes of part 3 after the budget was spent", n)
	}
}

// chain stores an image under n nested indexes and returns the outermost.
func chain(t *testing.T, s *imagestore.Store, n int) v1.Descriptor {
	t.Helper()
	d := storeImage(t, s, image(t))
	for range n {
		raw, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{d}})
		d = put(t, s, types.OCIImageIndex, raw)
	}
	return d
}

func writeIndex(t *testing.T, s *imagestore.Store, name string, d v1.Descriptor) {
	t.Helper()
	if err := s.WriteIndex(context.Background(), name, []imagestore.Entry{{Namespace: "app", ImageStream: "web", Tags: []string{"latest"}, Descriptor: d}}, imagestore.IndexMeta{}); err != nil {
		t.Fatal(err)
	}
}

// descend opens index children through the v1.ImageIndex API, as go-containerregistry's
// layout and remote packages do, until one fails.
func descend(ctx context.Context, s *imagestore.Store, d v1.Descriptor) error {
	idx, err := s.ImageIndex(ctx, d)
	for range 10_000 {
		if err != nil {
			return err
		}
		var m *v1.IndexManifest
		if m, err = idx.IndexManifest(); err != nil {
			return err
		}
		child := m.Manifests[0]
		if !child.MediaType.IsIndex() {
			_, err = idx.Image(child.Digest)
			return err
		}
		idx, err = idx.ImageIndex(child.Digest)
	}
	return fmt.Errorf("10,000 levels opened")
}

func TestHostileManifestsEndEveryWalk(t *testing.T) {
	selfIndex := func(hex string) []byte {
		return indexOf(types.OCIImageIndex, "sha256:"+hex, 100, map[string]string{})
	}
	tests := []struct {
		name string
		// plant stores what the backup's entry points at and returns that entry.
		plant func(t *testing.T, s *imagestore.Store, hb *hostileBucket) v1.Descriptor
		want  string
		// budget bounds the bytes read of any one key.
		budget int64
	}{
		{"an index nested 1,000 deep", func(t *testing.T, s *imagestore.Store, _ *hostileBucket) v1.Descriptor {
			return chain(t, s, 1000)
		}, "nested more than 8 levels deep", imagestore.MaxManifestSize},
		{"an index that lists itself", func(t *testing.T, _ *imagestore.Store, hb *hostileBucket) v1.Descriptor {
			hex := fmt.Sprintf("%064x", 0xa)
			raw := selfIndex(hex)
			hb.put("blobs/sha256/"+hex, raw)
			return v1.Descriptor{MediaType: types.OCIImageIndex, Size: int64(len(raw)), Digest: v1.Hash{Algorithm: "sha256", Hex: hex}}
		}, "does not match its digest", imagestore.MaxManifestSize},
		{"indexes A and B that list each other", func(t *testing.T, s *imagestore.Store, hb *hostileBucket) v1.Descriptor {
			a := fmt.Sprintf("%064x", 0xa)
			b := put(t, s, types.OCIImageIndex, selfIndex(a)) // B is genuine and lists A
			raw := selfIndex(b.Digest.Hex)                    // A is forged and lists B
			hb.put("blobs/sha256/"+a, raw)
			return v1.Descriptor{MediaType: types.OCIImageIndex, Size: int64(len(raw)), Digest: v1.Hash{Algorithm: "sha256", Hex: a}}
		}, "does not match its digest", imagestore.MaxManifestSize},
		{"a manifest claiming 1 GiB", func(t *testing.T, _ *imagestore.Store, hb *hostileBucket) v1.Descriptor {
			hex := fmt.Sprintf("%064x", 0xb)
			hb.putStream("blobs/sha256/"+hex, gib, func() io.Reader { return repeat('{') })
			return v1.Descriptor{MediaType: types.OCIImageIndex, Size: gib, Digest: v1.Hash{Algorithm: "sha256", Hex: hex}}
		}, "is 1073741824 bytes, more than the 4194304 allowed", 0},
		{"a manifest that claims 100 bytes and never ends", func(t *testing.T, _ *imagestore.Store, hb *hostileBucket) v1.Descriptor {
			hex := fmt.Sprintf("%064x", 0xc)
			hb.putStream("blobs/sha256/"+hex, 100, func() io.Reader { return repeat('{') })
			return v1.Descriptor{MediaType: types.OCIImageIndex, Size: 100, Digest: v1.Hash{Algorithm: "sha256", Hex: hex}}
		}, "more than the 100 bytes stored", 101},
		{"an image whose layer climbs out of the store", func(t *testing.T, s *imagestore.Store, _ *hostileBucket) v1.Descriptor {
			cfg := put(t, s, types.OCIConfigJSON, []byte("{}"))
			raw := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":2},"layers":[{"mediaType":%q,"digest":"sha256:../../../secret","size":1}]}`,
				types.OCIManifestSchema1, types.OCIConfigJSON, cfg.Digest, types.OCILayer)
			return put(t, s, types.OCIManifestSchema1, raw)
		}, "parsing manifest", imagestore.MaxManifestSize},
	}
	walkers := append(readers[2:], []struct {
		name string
		read func(ctx context.Context, s *imagestore.Store, backup, dir string) error
	}{
		{"Walk", func(ctx context.Context, s *imagestore.Store, b, _ string) error {
			entries, err := s.ReadIndex(ctx, b)
			if err != nil {
				return err
			}
			return s.Walk(ctx, imagestore.Descriptors(entries), func(v1.Descriptor) error { return nil })
		}},
		{"ImageIndex and Image", func(ctx context.Context, s *imagestore.Store, b, _ string) error {
			entries, err := s.ReadIndex(ctx, b)
			if err != nil {
				return err
			}
			if !entries[0].Descriptor.MediaType.IsIndex() {
				_, err := s.Image(ctx, entries[0].Descriptor)
				return err
			}
			return descend(ctx, s, entries[0].Descriptor)
		}},
	}...)
	for _, tt := range tests {
		for _, r := range walkers {
			t.Run(tt.name+"/"+r.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				s, hb := newHostileStore(t)
				writeIndex(t, s, "bad", tt.plant(t, s, hb))
				hb.resetCounts()
				err := r.read(ctx, s, "bad", filepath.Join(t.TempDir(), "export"))
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("%s error = %v, want one containing %q", r.name, err, tt.want)
				}
				hb.mu.Lock()
				defer hb.mu.Unlock()
				for k, n := range hb.read {
					if n > tt.budget && !strings.HasSuffix(k, "/index.json") {
						t.Errorf("%s read %d bytes of %s, want at most %d", r.name, n, k, tt.budget)
					}
				}
			})
		}
	}
}

// A manifest listing one child thousands of times, nested, must cost one read per digest: a
// reader that followed every listing would do 4,000,000 reads here.
func TestRepeatedChildrenAreReadOnce(t *testing.T) {
	ctx := context.Background()
	s, hb := newHostileStore(t)
	img := storeImage(t, s, image(t))
	const n = 2000
	fanOut := func(d v1.Descriptor) v1.Descriptor {
		m := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
		for range n {
			m.Manifests = append(m.Manifests, d)
		}
		raw, _ := json.Marshal(m)
		return put(t, s, types.OCIImageIndex, raw)
	}
	writeIndex(t, s, "wide", fanOut(fanOut(img)))
	for _, r := range readers[2:] {
		t.Run(r.name, func(t *testing.T) {
			hb.resetCounts()
			if err := r.read(ctx, s, "wide", filepath.Join(t.TempDir(), "export")); err != nil {
				t.Fatal(err)
			}
			// Verify and Export read each manifest twice: to walk it and to copy or check it.
			if key, opens := hb.maxOpens(); opens > 2 {
				t.Errorf("%s opened %s %d times", r.name, key, opens)
			}
		})
	}
}

func TestHostileMarkersNeitherBlockNorExhaustMemory(t *testing.T) {
	heartbeat := func(at time.Time) []byte {
		return fmt.Appendf(nil, `{"heartbeat":%q}`, at.UTC().Format(time.RFC3339Nano))
	}
	tests := []struct {
		name    string
		plant   func(hb *hostileBucket)
		running bool // whether the marker rightly says that a collection or backup runs
	}{
		{"a gc.json from the year 2999", func(hb *hostileBucket) { hb.put("gc.json", heartbeat(time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC))) }, false},
		{"a gc.json that never ends", func(hb *hostileBucket) {
			hb.putStream("gc.json", 50, func() io.Reader { return io.MultiReader(strings.NewReader(string(heartbeat(time.Now()))), repeat(' ')) })
		}, false},
		{"a gc.json of garbage", func(hb *hostileBucket) { hb.put("gc.json", []byte("\x00{")) }, false},
		{"a gc.json a minute old", func(hb *hostileBucket) { hb.put("gc.json", heartbeat(time.Now().Add(-time.Minute))) }, true},
		{"a gc.json a minute ahead, from a skewed clock", func(hb *hostileBucket) { hb.put("gc.json", heartbeat(time.Now().Add(time.Minute))) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			s, hb := newHostileStore(t)
			tt.plant(hb)
			_, gcErr := s.GC(ctx, 0)
			if running := gcErr == imagestore.ErrGCRunning; running != tt.running {
				t.Errorf("GC = %v; want a collection running: %v", gcErr, tt.running)
			}
			if n := hb.bytesRead("gc.json"); n > 4<<10+1 {
				t.Errorf("read %d bytes of gc.json", n)
			}
			if tt.running {
				return
			}
			if _, err := s.Begin(ctx, "b", "", 0); err != nil {
				t.Errorf("Begin = %v, want it not to wait for a marker that is not a running collection", err)
			}
		})
	}
	t.Run("a pending.json from the year 2999", func(t *testing.T) {
		s, hb := newHostileStore(t)
		hb.put("backups/stuck/pending.json", heartbeat(time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)))
		if rep, err := s.GC(context.Background(), 0); err != nil || rep.Deferred {
			t.Errorf("GC = %+v, %v; want it not deferred for ever", rep, err)
		}
	})
}
