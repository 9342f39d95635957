package imagestore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/blob/driver"
	"gocloud.dev/gcerrors"

	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// storeRoot is where newHostileStore's store lives in its bucket.
const storeRoot = "prefix/" + imagestore.Root

// hostileBucket is an in-memory gocloud.dev/blob driver whose objects the test controls,
// claimed sizes and endless content included, and which records every key the store asks for
// and every byte it reads.
type hostileBucket struct {
	mu      sync.Mutex
	objects map[string]*object
	keys    []string
	read    map[string]int64 // bytes served per key
	opens   map[string]int   // readers opened per key

	// deleteDelay slows every delete down; refuseWrites, when set, fails the writes of the
	// keys it returns true for.
	deleteDelay  time.Duration
	refuseWrites func(key string) bool
	deletes      int
}

type object struct {
	data   []byte
	size   int64            // the size the bucket claims
	stream func() io.Reader // the content when set, instead of data
}

var errNoObject = errors.New("no such object")

// newHostileStore returns a store under "prefix" in a hostileBucket. When the test ends it
// checks that the store asked the bucket for no key outside its root.
func newHostileStore(t *testing.T) (*imagestore.Store, *hostileBucket) {
	t.Helper()
	hb := &hostileBucket{objects: map[string]*object{}, read: map[string]int64{}, opens: map[string]int{}}
	s := imagestore.New(blob.NewBucket(hb), "prefix")
	t.Cleanup(func() {
		s.Close()
		for _, k := range hb.keysSeen() {
			if !strings.HasPrefix(k, storeRoot) {
				t.Errorf("the store touched %q, outside %s", k, storeRoot)
			}
		}
	})
	return s, hb
}

// put writes data at key, relative to the store's root, as anyone with access to the bucket
// could.
func (b *hostileBucket) put(key string, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objects[storeRoot+key] = &object{data: bytes.Clone(data), size: int64(len(data))}
}

// putStream makes key claim size bytes and serve what open returns.
func (b *hostileBucket) putStream(key string, size int64, open func() io.Reader) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objects[storeRoot+key] = &object{size: size, stream: open}
}

func (b *hostileBucket) has(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.objects[storeRoot+key]
	return ok
}

func (b *hostileBucket) keysSeen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.keys)
}

func (b *hostileBucket) bytesRead(key string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read[storeRoot+key]
}

// maxOpens returns the key opened for reading most often, and how often.
func (b *hostileBucket) maxOpens() (string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var key string
	var n int
	for k, c := range b.opens {
		if c > n {
			key, n = k, c
		}
	}
	return key, n
}

func (b *hostileBucket) resetCounts() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.read, b.opens = map[string]int64{}, map[string]int{}
}

func (b *hostileBucket) touch(key string) (*object, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.keys = append(b.keys, key)
	o, ok := b.objects[key]
	return o, ok
}

func (b *hostileBucket) ErrorCode(err error) gcerrors.ErrorCode {
	if errors.Is(err, errNoObject) {
		return gcerrors.NotFound
	}
	return gcerrors.Unknown
}

func (b *hostileBucket) As(any) bool             { return false }
func (b *hostileBucket) ErrorAs(error, any) bool { return false }
func (b *hostileBucket) Close() error            { return nil }
func (b *hostileBucket) SignedURL(context.Context, string, *driver.SignedURLOptions) (string, error) {
	return "", errors.New("not supported")
}

func (b *hostileBucket) Attributes(_ context.Context, key string) (*driver.Attributes, error) {
	o, ok := b.touch(key)
	if !ok {
		return nil, errNoObject
	}
	return &driver.Attributes{Size: o.size, ModTime: time.Now()}, nil
}

func (b *hostileBucket) ListPaged(_ context.Context, opts *driver.ListOptions) (*driver.ListPage, error) {
	b.touch(opts.Prefix)
	if opts.BeforeList != nil {
		if err := opts.BeforeList(func(any) bool { return false }); err != nil {
			return nil, err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var keys []string
	for k := range b.objects {
		if strings.HasPrefix(k, opts.Prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	page := &driver.ListPage{}
	dirs := map[string]bool{}
	for _, k := range keys {
		if opts.Delimiter != "" {
			if i := strings.Index(k[len(opts.Prefix):], opts.Delimiter); i >= 0 {
				dir := k[:len(opts.Prefix)+i+len(opts.Delimiter)]
				if !dirs[dir] {
					dirs[dir] = true
					page.Objects = append(page.Objects, &driver.ListObject{Key: dir, IsDir: true})
				}
				continue
			}
		}
		page.Objects = append(page.Objects, &driver.ListObject{Key: k, Size: b.objects[k].size, ModTime: time.Now()})
	}
	return page, nil
}

func (b *hostileBucket) NewRangeReader(_ context.Context, key string, offset, length int64, _ *driver.ReaderOptions) (driver.Reader, error) {
	o, ok := b.touch(key)
	if !ok {
		return nil, errNoObject
	}
	b.mu.Lock()
	b.opens[key]++
	b.mu.Unlock()
	var r io.Reader
	if o.stream != nil {
		r = o.stream()
		if _, err := io.CopyN(io.Discard, r, offset); err != nil {
			return nil, err
		}
	} else {
		r = bytes.NewReader(o.data[min(offset, int64(len(o.data))):])
	}
	if length >= 0 {
		r = io.LimitReader(r, length)
	}
	return &hostileReader{b: b, key: key, r: r, size: o.size}, nil
}

type hostileReader struct {
	b    *hostileBucket
	key  string
	r    io.Reader
	size int64
}

func (r *hostileReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.b.mu.Lock()
	r.b.read[r.key] += int64(n)
	r.b.mu.Unlock()
	return n, err
}

func (r *hostileReader) Close() error { return nil }
func (r *hostileReader) As(any) bool  { return false }
func (r *hostileReader) Attributes() *driver.ReaderAttributes {
	return &driver.ReaderAttributes{Size: r.size, ModTime: time.Now()}
}

func (b *hostileBucket) NewTypedWriter(ctx context.Context, key, _ string, _ *driver.WriterOptions) (driver.Writer, error) {
	b.touch(key)
	return &hostileWriter{ctx: ctx, b: b, key: key}, nil
}

type hostileWriter struct {
	ctx context.Context
	b   *hostileBucket
	key string
	buf bytes.Buffer
}

func (w *hostileWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }

// Close commits unless the write's context ended, which is how gocloud aborts a write.
func (w *hostileWriter) Close() error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	w.b.mu.Lock()
	defer w.b.mu.Unlock()
	if w.b.refuseWrites != nil && w.b.refuseWrites(w.key) {
		return errors.New("write refused")
	}
	w.b.objects[w.key] = &object{data: w.buf.Bytes(), size: int64(w.buf.Len())}
	return nil
}

func (b *hostileBucket) Copy(_ context.Context, dst, src string, _ *driver.CopyOptions) error {
	o, ok := b.touch(src)
	b.touch(dst)
	if !ok {
		return errNoObject
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objects[dst] = o
	return nil
}

func (b *hostileBucket) Delete(_ context.Context, key string, _ *driver.DeleteOptions) error {
	b.touch(key)
	b.mu.Lock()
	delay := b.deleteDelay
	b.mu.Unlock()
	time.Sleep(delay)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deletes++
	if _, ok := b.objects[key]; !ok {
		return errNoObject
	}
	delete(b.objects, key)
	return nil
}

// repeat is an endless reader of one byte.
type repeat byte

func (r repeat) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}
