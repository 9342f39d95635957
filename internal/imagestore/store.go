// Package imagestore keeps deduplicated OCI content in object storage through gocloud.dev/blob.
//
// Under a Velero location's prefix it uses the plugins/ directory that Velero reserves for
// plugins:
//
//	<prefix>/plugins/imagestreams/oci-layout                      {"imageLayoutVersion":"1.0.0"}
//	<prefix>/plugins/imagestreams/blobs/sha256/<hex>               every blob and manifest, once
//	<prefix>/plugins/imagestreams/backups/<name>/index.json        a backup's index, written last
//	<prefix>/plugins/imagestreams/backups/<name>/pending-<id>.json a backup in progress
//	<prefix>/plugins/imagestreams/gc/<id>.json                     a garbage collection in progress
//
// Every key derives from a digest validated as sha256 and 64 lowercase hex characters, or from a
// backup name validated as a DNS subdomain; never from free text.
package imagestore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// Root is the directory, under a location's prefix, that holds the store.
const Root = "plugins/imagestreams/"

// MaxManifestSize bounds manifests and indexes read into memory: 4 MiB, the limit the
// distribution registry puts on the manifests it accepts, so no image a registry served can be
// larger.
const MaxManifestSize = 4 << 20

var (
	// ErrNotFound is returned for a blob or backup the store does not hold.
	ErrNotFound = errors.New("not found")
	// ErrInvalidDigest is returned for a digest that is not sha256 with 64 lowercase hex characters.
	ErrInvalidDigest = errors.New("invalid digest")
)

// DigestMismatchError says that bytes did not hash to the digest that names them.
type DigestMismatchError struct {
	Digest v1.Hash
	Got    string // the computed digest, or a size mismatch
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("blob %s does not match its digest: got %s", e.Digest, e.Got)
}

// Store is a deduplicated OCI store in a bucket.
type Store struct {
	bucket *blob.Bucket

	mu       sync.Mutex
	inflight map[v1.Hash]chan struct{}
}

// New returns a store under prefix in bucket. The store owns bucket: Close closes it.
func New(bucket *blob.Bucket, prefix string) *Store {
	p := strings.Trim(prefix, "/")
	if p != "" {
		p += "/"
	}
	return &Store{
		bucket:   blob.PrefixedBucket(bucket, p+Root),
		inflight: map[v1.Hash]chan struct{}{},
	}
}

// Close closes the bucket.
func (s *Store) Close() error { return s.bucket.Close() }

// ValidateDigest checks that h is a sha256 digest of 64 lowercase hex characters, the only kind
// the store names objects by.
func ValidateDigest(h v1.Hash) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || strings.Trim(h.Hex, "0123456789abcdef") != "" {
		return fmt.Errorf("%w %q: want sha256 and 64 lowercase hex characters", ErrInvalidDigest, h.String())
	}
	return nil
}

// Has reports whether the store holds the blob.
func (s *Store) Has(ctx context.Context, h v1.Hash) (bool, error) {
	if err := ValidateDigest(h); err != nil {
		return false, err
	}
	ok, err := s.bucket.Exists(ctx, blobKey(h))
	if err != nil {
		return false, fmt.Errorf("checking blob %s: %w", h, err)
	}
	return ok, nil
}

// PutBlob stores the blob that open returns, unless the store already holds it. It reports
// whether it wrote. open is called only when the blob is missing, and at most once at a time per
// digest within this Store: a second caller for the same digest waits for the first and then
// finds the blob present. The bytes are hashed and counted as they stream to the bucket; on a
// mismatch or an interrupted copy the write is aborted and nothing appears at the blob's key.
func (s *Store) PutBlob(ctx context.Context, desc v1.Descriptor, open func(context.Context) (io.ReadCloser, error)) (bool, error) {
	if err := ValidateDigest(desc.Digest); err != nil {
		return false, err
	}
	if desc.Size < 0 {
		return false, fmt.Errorf("blob %s has negative size %d", desc.Digest, desc.Size)
	}
	for {
		s.mu.Lock()
		wait, busy := s.inflight[desc.Digest]
		if !busy {
			done := make(chan struct{})
			s.inflight[desc.Digest] = done
			s.mu.Unlock()
			wrote, err := s.putBlob(ctx, desc, open)
			s.mu.Lock()
			delete(s.inflight, desc.Digest)
			close(done)
			s.mu.Unlock()
			return wrote, err
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

func (s *Store) putBlob(ctx context.Context, desc v1.Descriptor, open func(context.Context) (io.ReadCloser, error)) (bool, error) {
	if ok, err := s.Has(ctx, desc.Digest); err != nil || ok {
		return false, err
	}
	rc, err := open(ctx)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	return true, s.write(ctx, blobKey(desc.Digest), desc, rc)
}

// WriteBlob stores data as the blob desc names, checking its size and digest, without first
// looking whether the store holds it: for a caller that has just found it missing, such as the
// copier with a manifest it fetched because the store lacked it. Two writes of one blob write
// the same bytes.
func (s *Store) WriteBlob(ctx context.Context, desc v1.Descriptor, data []byte) error {
	if err := ValidateDigest(desc.Digest); err != nil {
		return err
	}
	return s.write(ctx, blobKey(desc.Digest), desc, bytes.NewReader(data))
}

// write streams r to key, checking size and digest on the way, and aborts the write (cancels
// its context before Close, which gocloud turns into "nothing written") on any failure.
func (s *Store) write(ctx context.Context, key string, desc v1.Descriptor, r io.Reader) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.bucket.NewWriter(wctx, key, &blob.WriterOptions{
		ContentType: "application/octet-stream",
		// Large enough that S3 multipart parts stream without tiny requests, small enough to
		// keep memory bounded.
		BufferSize: 8 << 20,
		// S3 holds MaxConcurrency+1 part buffers per upload, and the copier runs several
		// uploads at once, so the worker's memory grows with their product: the SDK's default
		// of 5 does not fit the worker's memory limit (docs/reliability.md). Two parts in
		// flight still keep a blob streaming.
		MaxConcurrency: 2,
	})
	if err != nil {
		return fmt.Errorf("opening %s for writing: %w", key, err)
	}
	h := sha256.New()
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	n, err := io.CopyBuffer(writerOnly{io.MultiWriter(w, h)}, io.LimitReader(r, desc.Size+1), *buf)
	if err == nil {
		err = checkSum(desc, n, h)
	}
	if err != nil {
		cancel()
		_ = w.Close()
		return fmt.Errorf("writing blob %s: %w", desc.Digest, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("committing blob %s: %w", desc.Digest, err)
	}
	return nil
}

func checkSum(desc v1.Descriptor, n int64, h hash.Hash) error {
	if n != desc.Size {
		return &DigestMismatchError{Digest: desc.Digest, Got: fmt.Sprintf("%d bytes, want %d", n, desc.Size)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != desc.Digest.Hex {
		return &DigestMismatchError{Digest: desc.Digest, Got: "sha256:" + got}
	}
	return nil
}

// writerOnly hides ReadFrom so that io.CopyBuffer uses our buffer.
type writerOnly struct{ io.Writer }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// Blob opens a stored blob for reading. The reader hashes what it returns and fails at the end
// with a *DigestMismatchError when the bytes are not those the digest names, so a corrupt
// object is never passed on as good.
func (s *Store) Blob(ctx context.Context, h v1.Hash) (io.ReadCloser, int64, error) {
	if err := ValidateDigest(h); err != nil {
		return nil, 0, err
	}
	r, err := s.bucket.NewReader(ctx, blobKey(h), nil)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return nil, 0, fmt.Errorf("blob %s: %w", h, ErrNotFound)
		}
		return nil, 0, fmt.Errorf("opening blob %s: %w", h, err)
	}
	// The reader stops one byte past the size the bucket claims, so that an object that
	// streams more than it claims fails as a mismatch instead of being read without end.
	return &verifyingReader{r: io.LimitReader(r, r.Size()+1), c: r, want: h, size: r.Size(), h: sha256.New()}, r.Size(), nil
}

// ReadBlob reads a small stored blob, such as a manifest, whole and verified.
func (s *Store) ReadBlob(ctx context.Context, h v1.Hash, max int64) ([]byte, error) {
	rc, size, err := s.Blob(ctx, h)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > max {
		return nil, fmt.Errorf("blob %s is %d bytes, more than the %d allowed", h, size, max)
	}
	// The size is what the bucket claims; the bytes it then sends are bounded too, so that an
	// object that grows or lies about its size cannot exhaust memory.
	raw, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > max {
		return nil, fmt.Errorf("blob %s is more than the %d bytes allowed", h, max)
	}
	return raw, nil
}

type verifyingReader struct {
	r    io.Reader
	c    io.Closer
	want v1.Hash
	size int64
	n    int64
	h    hash.Hash
}

// Read checks the blob once it has read as many bytes as the blob is long, before it returns
// the last of them: a caller that reads no further than the size, as an HTTP request with a
// Content-Length does, never passes a blob on whole unless it matches its digest. It checks
// again at the end, which a blob longer than it claims does not reach unnoticed.
func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n > v.size {
		return 0, &DigestMismatchError{Digest: v.want, Got: fmt.Sprintf("more than the %d bytes stored", v.size)}
	}
	if v.n == v.size && n > 0 || err == io.EOF {
		if e := checkSum(v1.Descriptor{Digest: v.want, Size: v.size}, v.n, v.h); e != nil {
			return 0, e
		}
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.c.Close() }

// ensureLayout writes the oci-layout file the OCI image layout specification asks for.
func (s *Store) ensureLayout(ctx context.Context) error {
	ok, err := s.bucket.Exists(ctx, layoutKey)
	if err != nil || ok {
		return err
	}
	return s.bucket.WriteAll(ctx, layoutKey, []byte(`{"imageLayoutVersion":"1.0.0"}`), &blob.WriterOptions{ContentType: "application/json"})
}
