package imagestore

import (
	"context"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// VerifyReport says what Verify read.
type VerifyReport struct {
	Images int
	Blobs  int
	Bytes  int64
}

// Verify reads every blob a backup reaches and checks that it exists and hashes to its digest.
// The error names the first blob that does not.
func (s *Store) Verify(ctx context.Context, name string) (VerifyReport, error) {
	var rep VerifyReport
	entries, err := s.ReadIndex(ctx, name)
	if err != nil {
		return rep, err
	}
	rep.Images = len(entries)
	err = s.Walk(ctx, Descriptors(entries), func(d v1.Descriptor) error {
		rc, size, err := s.Blob(ctx, d.Digest)
		if err != nil {
			return err
		}
		defer rc.Close()
		if size != d.Size {
			return &DigestMismatchError{Digest: d.Digest, Got: fmt.Sprintf("%d bytes stored, want %d", size, d.Size)}
		}
		n, err := io.Copy(io.Discard, rc)
		if err != nil {
			return err
		}
		rep.Blobs++
		rep.Bytes += n
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("verifying backup %s: %w", name, err)
	}
	return rep, nil
}

// Export writes a backup as a standard OCI image layout in dir, which skopeo (oci:DIR:REF) and
// crane read. Each image is named by the annotation org.opencontainers.image.ref.name as
// <namespace>/<imagestream>:<first tag>, or by its digest when it has no tag.
func (s *Store) Export(ctx context.Context, name, dir string) error {
	entries, err := s.ReadIndex(ctx, name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("creating layout in %s: %w", dir, err)
	}
	for _, e := range entries {
		ref := e.Namespace + "/" + e.ImageStream + "@" + e.Descriptor.Digest.String()
		if len(e.Tags) > 0 {
			ref = e.Namespace + "/" + e.ImageStream + ":" + e.Tags[0]
		}
		opt := layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})
		switch {
		case e.Descriptor.MediaType.IsIndex():
			idx, err := s.ImageIndex(ctx, e.Descriptor)
			if err == nil {
				err = p.AppendIndex(idx, opt)
			}
			if err != nil {
				return fmt.Errorf("exporting %s: %w", ref, err)
			}
		case e.Descriptor.MediaType.IsImage():
			img, err := s.Image(ctx, e.Descriptor)
			if err == nil {
				err = p.AppendImage(img, opt)
			}
			if err != nil {
				return fmt.Errorf("exporting %s: %w", ref, err)
			}
		default:
			return fmt.Errorf("exporting %s: unsupported media type %q", ref, e.Descriptor.MediaType)
		}
	}
	return nil
}
