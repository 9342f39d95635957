// Package copier moves images between a registry and an imagestore.Store: Copier backs images
// up, each blob streamed from the registry into the bucket in one pass, and Pusher restores
// them, byte for byte, so that digests after a restore equal those before.
package copier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/singleflight"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// DefaultJobs is how many blobs move at once unless Options.Jobs says otherwise.
const DefaultJobs = 4

// A blob under SmallBlobSize, such as an image's config or manifest, costs the worker its
// size in memory while it is written (the S3 client sends it in one request from what it
// read), not the part buffers of a large upload; its copy is bound by round trips. Such blobs
// move SmallBlobsPerJob times Jobs at once, in slots of their own, so that a backup of many
// small images is not held to Jobs round trips at a time by a bound made for memory.
const (
	SmallBlobSize    = 1 << 20
	SmallBlobsPerJob = 4
)

// Options configure the registry side of a copy.
type Options struct {
	// Auth authenticates to the registry; anonymous when nil. authn.FromConfig builds bearer
	// token and basic authenticators.
	Auth authn.Authenticator
	// AuthHost, when set, is the only registry (host[:port]) Auth is sent to: every other one
	// is reached anonymously, so that credentials never go to a registry a resource names.
	AuthHost string
	// CACert is a PEM bundle trusted in addition to the system's roots.
	CACert []byte
	// Insecure skips TLS verification and allows plain HTTP. Only for registries that cannot
	// present a verifiable certificate; never the default.
	Insecure bool
	// Jobs is how many blobs move at once; DefaultJobs when zero. Small blobs (under
	// SmallBlobSize) move SmallBlobsPerJob times as many at once, beside them.
	Jobs int
	// Slots, when set, bounds the blobs moving at once across every Copier given the same
	// channel, in place of each Copier's own Jobs: a worker backing up twenty parts at once
	// then holds the memory of cap(Slots) transfers, not of twenty times Jobs.
	Slots chan struct{}
	// SmallSlots does for small blobs what Slots does for the others; each Copier and Pusher
	// has SmallBlobsPerJob times Jobs of its own when nil.
	SmallSlots chan struct{}
	// Backoff paces retries of failed requests and interrupted transfers.
	Backoff remote.Backoff
	// Progress, when set, is called after every blob with the counts so far.
	Progress func(Stats)
}

// defaultBackoff retries five times over about three seconds: enough for a registry that
// answers 500 or resets a connection now and then, short enough to report a dead one soon.
var defaultBackoff = remote.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 5}

func (o *Options) jobs() int {
	if o.Jobs > 0 {
		return o.Jobs
	}
	return DefaultJobs
}

func (o *Options) backoff() remote.Backoff {
	if o.Backoff.Steps > 0 {
		return o.Backoff
	}
	return defaultBackoff
}

// authFor is the authenticator for registry host.
func (o *Options) authFor(host string) authn.Authenticator {
	if o.Auth == nil || o.AuthHost != "" && host != o.AuthHost {
		return authn.Anonymous
	}
	return o.Auth
}

// NameOptions are the options that parse references as the copier and pusher reach registries.
func (o *Options) NameOptions() []name.Option {
	if o.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

// roundTripper is the HTTP transport to the registry: TLS verified against the system roots
// plus CACert, an idle connection kept for every blob that may move at once (Jobs large and
// SmallBlobsPerJob times Jobs small), and retries of 5xx/429.
func (o *Options) roundTripper() (http.RoundTripper, error) {
	tlsConfig, err := bucket.TLSConfig(o.CACert, o.Insecure)
	if err != nil {
		return nil, fmt.Errorf("registry %w", err)
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.TLSClientConfig = tlsConfig
	base.MaxIdleConnsPerHost = (1 + SmallBlobsPerJob) * o.jobs()
	return &retryTransport{inner: base, backoff: o.backoff()}, nil
}

// retryTransport sends a request again after a transient error or status, when it can: the
// request has no body, or one it can rewind (GetBody). At a steady rate of faults per request,
// starting a whole exchange over on any one failure fails far more often than sending the one
// failed request again; only a blob's bytes into an upload session are left to the whole retry
// (blobBody.once).
type retryTransport struct {
	inner   http.RoundTripper
	backoff remote.Backoff
}

// errBodySent fails a request whose body was sent before and may not be sent again
// (blobBody.once); its caller starts over.
var errBodySent = errors.New("the request's body was sent before: starting over")

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if b, ok := req.Body.(*sentBody); ok && b.handed.Swap(true) {
		if req.GetBody == nil {
			return nil, errBodySent
		}
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		req.Body = body
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	delay := t.backoff.Duration
	for attempt := 1; ; attempt++ {
		resp, err := t.inner.RoundTrip(req)
		if !replayable || attempt >= t.backoff.Steps || !retryable(resp, err) {
			return resp, err
		}
		if resp != nil {
			// Read a little so that the connection can be reused.
			_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		}
		if !sleep(req.Context(), jittered(delay, t.backoff.Jitter)) {
			return nil, req.Context().Err()
		}
		delay = time.Duration(float64(delay) * t.backoff.Factor)
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

func retryable(resp *http.Response, err error) bool {
	if err != nil {
		return transient(err)
	}
	return slices.Contains(retryStatusCodes, resp.StatusCode)
}

// retryStatusCodes are the answers worth asking again.
var retryStatusCodes = []int{http.StatusRequestTimeout, http.StatusTooManyRequests,
	http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}

// transports are authenticated round trippers, one per repository, each holding the token
// for scope in it.
type transports struct {
	opts  *Options
	rt    http.RoundTripper
	scope string // transport.PullScope or transport.PushScope

	mu sync.Mutex
	m  map[string]http.RoundTripper
	// handshakes are the authentications under way, by repository. Callers for one
	// repository share its handshake; a handshake (a ping and, with bearer tokens, a token
	// request) never holds back another repository's, as a restore starts many at once.
	handshakes singleflight.Group
}

func newTransports(opts *Options, scope string) (*transports, error) {
	rt, err := opts.roundTripper()
	if err != nil {
		return nil, err
	}
	return &transports{opts: opts, rt: rt, scope: scope, m: map[string]http.RoundTripper{}}, nil
}

func (ts *transports) get(ctx context.Context, repo name.Repository) (http.RoundTripper, error) {
	key := repo.String()
	if t := ts.cached(key); t != nil {
		return t, nil
	}
	for {
		v, err, _ := ts.handshakes.Do(key, func() (any, error) {
			t, err := ts.handshake(ctx, repo)
			if err != nil && ctx.Err() != nil {
				return nil, &abandonedError{err}
			}
			return t, err
		})
		// A shared handshake runs under the context of the caller that started it; when that
		// caller gave up, the others start one of their own.
		var abandoned *abandonedError
		if errors.As(err, &abandoned) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return nil, err
		}
		return v.(http.RoundTripper), nil
	}
}

// abandonedError is the error of a handshake whose caller gave up on it.
type abandonedError struct{ err error }

func (e *abandonedError) Error() string { return e.err.Error() }
func (e *abandonedError) Unwrap() error { return e.err }

func (ts *transports) cached(key string) http.RoundTripper {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.m[key]
}

// handshake returns repo's transport, authenticating unless a handshake that ended since the
// caller looked did.
func (ts *transports) handshake(ctx context.Context, repo name.Repository) (http.RoundTripper, error) {
	key := repo.String()
	if t := ts.cached(key); t != nil {
		return t, nil
	}
	t, err := transport.NewWithContext(ctx, repo.Registry, ts.opts.authFor(repo.RegistryStr()), ts.rt, []string{repo.Scope(ts.scope)})
	if err != nil {
		return nil, fmt.Errorf("authenticating to %s: %w", repo, err)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.m[key] = t
	return t, nil
}

// puller fetches manifests and blobs by digest. It talks HTTP itself rather than through
// remote.Layer because remote verifies every blob's digest as it streams, and the store verifies
// it again on write: each byte is hashed once, by the store, not twice.
type puller struct {
	transports *transports
}

func newPuller(opts *Options) (*puller, error) {
	ts, err := newTransports(opts, transport.PullScope)
	if err != nil {
		return nil, err
	}
	return &puller{transports: ts}, nil
}

var manifestAccept = strings.Join([]string{
	string(types.OCIImageIndex), string(types.OCIManifestSchema1),
	string(types.DockerManifestList), string(types.DockerManifestSchema2),
}, ",")

func (p *puller) get(ctx context.Context, repo name.Repository, kind string, h v1.Hash, accept string) (*http.Response, error) {
	t, err := p.transports.get(ctx, repo)
	if err != nil {
		return nil, err
	}
	u := fmt.Sprintf("%s://%s/v2/%s/%s/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), kind, h)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := (&http.Client{Transport: t}).Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// manifest fetches a manifest by digest and checks that its bytes hash to it.
func (p *puller) manifest(ctx context.Context, repo name.Repository, h v1.Hash) (v1.Descriptor, []byte, error) {
	resp, err := p.get(ctx, repo, "manifests", h, manifestAccept)
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("fetching manifest %s@%s: %w", repo, h, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, imagestore.MaxManifestSize+1))
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("reading manifest %s@%s: %w", repo, h, err)
	}
	if len(raw) > imagestore.MaxManifestSize {
		return v1.Descriptor{}, nil, fmt.Errorf("manifest %s@%s is larger than %d bytes", repo, h, imagestore.MaxManifestSize)
	}
	if sum := sha256.Sum256(raw); "sha256:"+hex.EncodeToString(sum[:]) != h.String() {
		return v1.Descriptor{}, nil, &imagestore.DigestMismatchError{Digest: h, Got: "sha256:" + hex.EncodeToString(sum[:])}
	}
	mt := types.MediaType(resp.Header.Get("Content-Type"))
	if i := strings.IndexByte(string(mt), ';'); i >= 0 {
		mt = mt[:i]
	}
	return v1.Descriptor{MediaType: sniffMediaType(mt, raw), Digest: h, Size: int64(len(raw))}, raw, nil
}

// blob opens a blob by digest; the store checks its digest as it writes.
func (p *puller) blob(ctx context.Context, repo name.Repository, h v1.Hash) (io.ReadCloser, error) {
	resp, err := p.get(ctx, repo, "blobs", h, "")
	if err != nil {
		return nil, fmt.Errorf("fetching blob %s@%s: %w", repo, h, err)
	}
	return resp.Body, nil
}

// transient reports whether an error may pass on retry: a dropped connection, a truncated
// body, or a registry that is busy or failing. It is also the retry predicate handed to
// go-containerregistry, whose own one does not retry a 5xx answer without a registry error
// code: while it pushes a blob, a single 500 to a ping or a POST would fail the restore.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		// An upload session the registry no longer knows was lost, or completed by a
		// request whose answer was: a new upload, which first looks for the blob, settles it.
		return terr.Temporary() || terr.StatusCode >= 500 || terr.StatusCode == http.StatusTooManyRequests ||
			slices.ContainsFunc(terr.Errors, func(d transport.Diagnostic) bool { return d.Code == transport.BlobUploadUnknownErrorCode })
	}
	var nerr net.Error
	// io.EOF: the server closed a reused connection before answering.
	return errors.Is(err, errBodySent) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		(errors.As(err, &nerr) && nerr.Timeout())
}

// retry runs f until it succeeds, fails for good, or the backoff is spent.
func retry(ctx context.Context, b remote.Backoff, f func() error) error {
	return retryIf(ctx, b, transient, f)
}

// retryIf runs f until it succeeds, fails with an error again does not accept, or the backoff is
// spent.
func retryIf(ctx context.Context, b remote.Backoff, again func(error) bool, f func() error) error {
	delay := b.Duration
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || !again(err) || attempt >= b.Steps || ctx.Err() != nil {
			return err
		}
		if !sleep(ctx, jittered(delay, b.Jitter)) {
			return err
		}
		delay = time.Duration(float64(delay) * b.Factor)
	}
}

// jittered adds up to jitter times d, so that clients that failed together do not retry
// together.
func jittered(d time.Duration, jitter float64) time.Duration {
	if jitter <= 0 {
		return d
	}
	return d + time.Duration(rand.Float64()*jitter*float64(d))
}

// sleep waits for d, or reports false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// Ping checks that the registry answers and accepts the credentials.
func Ping(ctx context.Context, reg name.Registry, opts Options) error {
	rt, err := opts.roundTripper()
	if err != nil {
		return err
	}
	_, err = transport.NewWithContext(ctx, reg, opts.authFor(reg.RegistryStr()), rt, nil)
	return err
}
