package imagestore

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

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

// Verify reads every blob a backup and its parts reach and checks that it exists and hashes to
// its digest. The error names the first blob that does not, or the parts that are missing.
func (s *Store) Verify(ctx context.Context, name string) (VerifyReport, error) {
	var rep VerifyReport
	entries, err := s.readWhole(ctx, name)
	if err != nil {
		return rep, err
	}
	rep.Images = len(entries)
	err = s.Walk(ctx, Descriptors(entries), func(d v1.Descriptor) error {
		rc, err := s.blobOfSize(ctx, d)
		if err != nil {
			return err
		}
		defer rc.Close()
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
//
// The blobs are those Walk reaches, each copied once and verified: a hostile index cannot make
// the export recurse without end or copy a shared manifest over and over.
func (s *Store) Export(ctx context.Context, name, dir string) error {
	entries, err := s.readWhole(ctx, name)
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
	if err := s.Walk(ctx, Descriptors(entries), func(d v1.Descriptor) error {
		return s.exportBlob(ctx, p, d)
	}); err != nil {
		return fmt.Errorf("exporting backup %s: %w", name, err)
	}
	for _, e := range entries {
		ref := e.Namespace + "/" + e.ImageStream + "@" + e.Descriptor.Digest.String()
		if len(e.Tags) > 0 {
			ref = e.Namespace + "/" + e.ImageStream + ":" + e.Tags[0]
		}
		d := e.Descriptor
		d.Annotations = map[string]string{"org.opencontainers.image.ref.name": ref}
		if err := p.AppendDescriptor(d); err != nil {
			return fmt.Errorf("exporting %s: %w", ref, err)
		}
	}
	return nil
}

// readWhole reads the entries of a backup and its parts, failing when a part is missing.
func (s *Store) readWhole(ctx context.Context, name string) ([]Entry, error) {
	b, err := s.ReadBackup(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(b.Missing) > 0 {
		return nil, fmt.Errorf("backup %s: parts %s: %w", name, strings.Join(b.Missing, ", "), ErrNotFound)
	}
	return b.Entries, nil
}

// exportBlob copies one verified blob into the layout through a temporary file, so that a
// blob failing verification leaves nothing at its name.
func (s *Store) exportBlob(ctx context.Context, p layout.Path, d v1.Descriptor) error {
	dst := filepath.Join(string(p), "blobs", d.Digest.Algorithm, d.Digest.Hex)
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() && fi.Size() == d.Size {
		return nil
	}
	rc, err := s.blobOfSize(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), d.Digest.Hex+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := io.Copy(tmp, rc); err != nil {
		tmp.Close()
		return fmt.Errorf("exporting blob %s: %w", d.Digest, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// blobOfSize opens a stored blob for a verified read, refusing one whose stored size is not the
// descriptor's.
func (s *Store) blobOfSize(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	rc, size, err := s.Blob(ctx, d.Digest)
	if err != nil {
		return nil, err
	}
	if size != d.Size {
		rc.Close()
		return nil, &DigestMismatchError{Digest: d.Digest, Got: fmt.Sprintf("%d bytes stored, want %d", size, d.Size)}
	}
	return rc, nil
}
