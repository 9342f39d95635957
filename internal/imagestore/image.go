package imagestore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image returns the stored image that desc names as a v1.Image. Its manifest and config are
// read now; layers stream from the bucket, verified, when asked for.
func (s *Store) Image(ctx context.Context, desc v1.Descriptor) (v1.Image, error) {
	if !desc.MediaType.IsImage() {
		return nil, fmt.Errorf("%s has media type %q, not an image manifest's", desc.Digest, desc.MediaType)
	}
	raw, err := s.readManifest(ctx, desc)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing manifest %s: %w", desc.Digest, err)
	}
	// Everything the image references must be a blob of the store before any of it is
	// handed out: the error then names the manifest and the offending descriptor.
	if err := validateDescriptor(m.Config); err != nil {
		return nil, fmt.Errorf("manifest %s: config: %w", desc.Digest, err)
	}
	for i, l := range m.Layers {
		if err := validateDescriptor(l); err != nil {
			return nil, fmt.Errorf("manifest %s: layer %d: %w", desc.Digest, i, err)
		}
	}
	config, err := s.ReadBlob(ctx, m.Config.Digest, MaxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("reading config of %s: %w", desc.Digest, err)
	}
	return partial.CompressedToImage(&storedImage{s: s, ctx: ctx, desc: desc, raw: raw, manifest: m, config: config})
}

// storedImage implements partial.CompressedImageCore over the store; partial fills in the
// rest of v1.Image.
type storedImage struct {
	s        *Store
	ctx      context.Context
	desc     v1.Descriptor
	raw      []byte
	manifest *v1.Manifest
	config   []byte
}

func (i *storedImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *storedImage) MediaType() (types.MediaType, error) { return i.desc.MediaType, nil }
func (i *storedImage) RawManifest() ([]byte, error)        { return i.raw, nil }

// Descriptor keeps the descriptor the image was found by, annotations and platform included.
func (i *storedImage) Descriptor() (*v1.Descriptor, error) { d := i.desc; return &d, nil }

func (i *storedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.manifest.Config.Digest {
		return &storedBlob{s: i.s, ctx: i.ctx, desc: i.manifest.Config}, nil
	}
	for _, l := range i.manifest.Layers {
		if l.Digest == h {
			if err := validateDescriptor(l); err != nil {
				return nil, err
			}
			return &storedBlob{s: i.s, ctx: i.ctx, desc: l}, nil
		}
	}
	return nil, fmt.Errorf("image %s has no layer %s", i.desc.Digest, h)
}

// storedBlob is a layer or config streamed from the store.
type storedBlob struct {
	s    *Store
	ctx  context.Context
	desc v1.Descriptor
}

func (b *storedBlob) Digest() (v1.Hash, error)            { return b.desc.Digest, nil }
func (b *storedBlob) Size() (int64, error)                { return b.desc.Size, nil }
func (b *storedBlob) MediaType() (types.MediaType, error) { return b.desc.MediaType, nil }

// Descriptor keeps the layer's descriptor (annotations, URLs) as the manifest gives it.
func (b *storedBlob) Descriptor() (*v1.Descriptor, error) { d := b.desc; return &d, nil }

func (b *storedBlob) Compressed() (io.ReadCloser, error) {
	rc, size, err := b.s.Blob(b.ctx, b.desc.Digest)
	if err != nil {
		return nil, err
	}
	if size != b.desc.Size {
		rc.Close()
		return nil, &DigestMismatchError{Digest: b.desc.Digest, Got: fmt.Sprintf("%d bytes stored, want %d", size, b.desc.Size)}
	}
	return rc, nil
}

// ImageIndex returns the stored index or manifest list that desc names as a v1.ImageIndex.
// Its child indexes, opened through it, may nest at most MaxDepth levels below it and never
// contain one of their ancestors, so that callers recursing through it always end.
func (s *Store) ImageIndex(ctx context.Context, desc v1.Descriptor) (v1.ImageIndex, error) {
	idx, err := s.imageIndex(ctx, desc, nil)
	if err != nil {
		return nil, err // not a nil *storedIndex in a non-nil interface
	}
	return idx, nil
}

func (s *Store) imageIndex(ctx context.Context, desc v1.Descriptor, ancestors []v1.Hash) (*storedIndex, error) {
	if !desc.MediaType.IsIndex() {
		return nil, fmt.Errorf("%s has media type %q, not an index's", desc.Digest, desc.MediaType)
	}
	if slices.Contains(ancestors, desc.Digest) {
		return nil, fmt.Errorf("index %s contains itself: manifests form a cycle", desc.Digest)
	}
	if len(ancestors) >= MaxDepth {
		return nil, fmt.Errorf("index %s is nested more than %d levels deep", desc.Digest, MaxDepth)
	}
	raw, err := s.readManifest(ctx, desc)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing index %s: %w", desc.Digest, err)
	}
	return &storedIndex{s: s, ctx: ctx, desc: desc, raw: raw, manifest: m, ancestors: ancestors}, nil
}

type storedIndex struct {
	s        *Store
	ctx      context.Context
	desc     v1.Descriptor
	raw      []byte
	manifest *v1.IndexManifest
	// ancestors are the indexes this one was opened through, outermost first.
	ancestors []v1.Hash
}

func (x *storedIndex) MediaType() (types.MediaType, error)       { return x.desc.MediaType, nil }
func (x *storedIndex) Digest() (v1.Hash, error)                  { return x.desc.Digest, nil }
func (x *storedIndex) Size() (int64, error)                      { return x.desc.Size, nil }
func (x *storedIndex) IndexManifest() (*v1.IndexManifest, error) { return x.manifest.DeepCopy(), nil }
func (x *storedIndex) RawManifest() ([]byte, error)              { return x.raw, nil }
func (x *storedIndex) Descriptor() (*v1.Descriptor, error)       { d := x.desc; return &d, nil }

func (x *storedIndex) child(h v1.Hash) (v1.Descriptor, error) {
	for _, d := range x.manifest.Manifests {
		if d.Digest == h {
			if err := validateDescriptor(d); err != nil {
				return v1.Descriptor{}, fmt.Errorf("index %s: %w", x.desc.Digest, err)
			}
			return d, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("index %s has no manifest %s", x.desc.Digest, h)
}

func (x *storedIndex) Image(h v1.Hash) (v1.Image, error) {
	d, err := x.child(h)
	if err != nil {
		return nil, err
	}
	return x.s.Image(x.ctx, d)
}

func (x *storedIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	d, err := x.child(h)
	if err != nil {
		return nil, err
	}
	idx, err := x.s.imageIndex(x.ctx, d, append(slices.Clip(x.ancestors), x.desc.Digest))
	if err != nil {
		return nil, err
	}
	return idx, nil
}

// readManifest reads the manifest desc names, verified, and checks that it is desc.Size bytes:
// the descriptor comes from the bucket too, and go-containerregistry hands its size on as the
// manifest's.
func (s *Store) readManifest(ctx context.Context, desc v1.Descriptor) ([]byte, error) {
	if desc.Size > MaxManifestSize {
		return nil, fmt.Errorf("manifest %s is %d bytes, more than the %d allowed", desc.Digest, desc.Size, MaxManifestSize)
	}
	raw, err := s.ReadBlob(ctx, desc.Digest, MaxManifestSize)
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) != desc.Size {
		return nil, &DigestMismatchError{Digest: desc.Digest, Got: fmt.Sprintf("%d bytes stored, want %d", len(raw), desc.Size)}
	}
	return raw, nil
}
