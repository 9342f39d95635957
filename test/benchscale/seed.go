package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// registryStorage writes images straight into the distribution registry's filesystem storage,
// in the layout the registry reads (blobs by digest, per-repository links to layers, manifest
// revisions and tags). Pushing 20,000 images over HTTP would take this machine minutes of
// registry CPU and measure the registry, not the backup; the registry serves what is written
// here like anything pushed to it.
type registryStorage struct {
	root string // <rootdirectory>/docker/registry/v2
}

func newRegistryStorage(rootDirectory string) *registryStorage {
	return &registryStorage{root: filepath.Join(rootDirectory, "docker", "registry", "v2")}
}

func (r *registryStorage) write(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func (r *registryStorage) putBlob(data []byte) (v1.Hash, error) {
	h := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(data))}
	return h, r.write(filepath.Join(r.root, "blobs", "sha256", h.Hex[:2], h.Hex, "data"), data)
}

func (r *registryStorage) link(path string, h v1.Hash) error {
	return r.write(filepath.Join(path, "sha256", h.Hex, "link"), []byte(h.String()))
}

// putImage stores an image of the shared layers and a config of its own in repo under tag.
func (r *registryStorage) putImage(repo, tag string, layers []v1.Descriptor, unique string) (v1.Hash, error) {
	cfg, err := json.Marshal(v1.ConfigFile{Architecture: "amd64", OS: "linux", Config: v1.Config{Labels: map[string]string{"image": unique}}})
	if err != nil {
		return v1.Hash{}, err
	}
	cfgDigest, err := r.putBlob(cfg)
	if err != nil {
		return v1.Hash{}, err
	}
	m, err := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: cfgDigest}, Layers: layers})
	if err != nil {
		return v1.Hash{}, err
	}
	md, err := r.putBlob(m)
	if err != nil {
		return v1.Hash{}, err
	}
	repoDir := filepath.Join(r.root, "repositories", repo)
	for _, d := range append([]v1.Descriptor{{Digest: cfgDigest}}, layers...) {
		if err := r.link(filepath.Join(repoDir, "_layers"), d.Digest); err != nil {
			return v1.Hash{}, err
		}
	}
	for _, dir := range []string{filepath.Join(repoDir, "_manifests", "revisions"), filepath.Join(repoDir, "_manifests", "tags", tag, "index")} {
		if err := r.link(dir, md); err != nil {
			return v1.Hash{}, err
		}
	}
	return md, r.write(filepath.Join(repoDir, "_manifests", "tags", tag, "current", "link"), []byte(md.String()))
}

// sharedLayers are n layers of size bytes every image is built on.
func (r *registryStorage) sharedLayers(n, size int) ([]v1.Descriptor, error) {
	rng := rand.NewChaCha8([32]byte{42})
	var ds []v1.Descriptor
	for range n {
		b := make([]byte, size)
		_, _ = rng.Read(b)
		h, err := r.putBlob(b)
		if err != nil {
			return nil, err
		}
		ds = append(ds, v1.Descriptor{MediaType: types.OCILayer, Size: int64(size), Digest: h})
	}
	return ds, nil
}

// parallel runs f(i) for i in [0,n) on workers goroutines and returns the first error.
func parallel(n, workers int, f func(i int) error) error {
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}
