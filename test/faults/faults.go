// Package faults puts a misbehaving HTTP reverse proxy in front of a real server, so that tests
// can show a client survives, or fails cleanly on, what networks and servers do in production:
// 5xx answers, connections cut partway through a body, latency, and a server that starts
// refusing writes.
//
// Every fault is decided from the seed, the request's key (method and path, see Config.Key) and
// how many requests with that key came before, never from arrival order: concurrent clients
// interleave differently from run to run, but the n-th attempt at the same request meets the
// same fate under the same seed. Counts says what was injected, so a test can assert that the
// faults it meant to survive really happened.
package faults

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

// Config says which faults to inject. The zero Config forwards everything untouched.
type Config struct {
	// ErrorRate is the fraction of requests answered with one of ErrorCodes instead of being
	// forwarded; the target never sees them.
	ErrorRate float64
	// ErrorCodes are the statuses injected errors carry, picked at random; 500 and 503 when empty.
	ErrorCodes []int
	// ErrorMatch limits injected errors to the requests it accepts; all requests when nil.
	ErrorMatch func(*http.Request) bool

	// ResetRate is the fraction of requests whose connection is reset partway: a request with a
	// body is cut after part of the body was read (and never forwarded); any other request is
	// forwarded and its connection reset after the status line, the headers and part of the
	// response body were sent.
	ResetRate float64
	// ResetMatch limits resets to the requests it accepts; all requests when nil.
	ResetMatch func(*http.Request) bool

	// Latency delays every request before it is forwarded.
	Latency time.Duration
	// LatencyMatch limits Latency to the requests it accepts; all requests when nil.
	LatencyMatch func(*http.Request) bool

	// Intercept, when it returns a reply, answers the request with it instead of forwarding.
	// It sees the counts so far, so that a target can, for example, turn read-only after so
	// many bytes were written. Intercepted requests get no random fault.
	Intercept func(r *http.Request, so Counts) *Reply

	// Observe, when set, sees every request as it arrives, for tests that count kinds of
	// request.
	Observe func(*http.Request)

	// CutForward, when it accepts a request with a body, has the request forwarded with half
	// of its body and both connections then reset: the target keeps what it read, as when the
	// network fails between a client and a server, where ResetRate's cut never reaches the
	// target. Such requests get no random fault.
	CutForward func(*http.Request) bool

	// Key names a request for the seeded decisions; DefaultKey when nil.
	Key func(*http.Request) string

	// Seed makes the faults reproducible.
	Seed uint64
}

// Reply is an answer the proxy gives in the target's place.
type Reply struct {
	Status int
	Header http.Header
	Body   string
}

// S3Error is the reply an S3 server gives for an error with the given code, such as
// AccessDenied.
func S3Error(status int, code, message string) *Reply {
	return &Reply{
		Status: status,
		Header: http.Header{"Content-Type": {"application/xml"}},
		Body: fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
			`<Error><Code>%s</Code><Message>%s</Message><RequestId>faults</RequestId></Error>`, code, message),
	}
}

// Counts is what the proxy did so far.
type Counts struct {
	// Requests is every request received.
	Requests int64
	// Forwarded is the requests passed to the target, including those whose response was cut.
	Forwarded int64
	// Errors is the requests answered with an injected error status.
	Errors int64
	// UploadResets is the connections reset while reading a request body.
	UploadResets int64
	// DownloadResets is the connections reset partway through a response.
	DownloadResets int64
	// ForwardCuts is the requests forwarded with part of their body (Config.CutForward).
	ForwardCuts int64
	// Intercepted is the requests answered by Config.Intercept.
	Intercepted int64
	// BytesUp is the request body bytes forwarded to the target.
	BytesUp int64
}

// Injected is the number of faults: errors, resets and forward cuts.
func (c Counts) Injected() int64 {
	return c.Errors + c.UploadResets + c.DownloadResets + c.ForwardCuts
}

func (c Counts) String() string {
	return fmt.Sprintf("%d requests: %d forwarded, %d errors, %d upload resets, %d download resets, %d forward cuts, %d intercepted",
		c.Requests, c.Forwarded, c.Errors, c.UploadResets, c.DownloadResets, c.ForwardCuts, c.Intercepted)
}

// Proxy is a running fault-injecting reverse proxy.
type Proxy struct {
	// Host is the proxy's host:port on 127.0.0.1.
	Host string
	// URL is http://Host.
	URL string

	cfg    Config
	target *url.URL
	rt     *http.Transport

	mu   sync.Mutex
	seen map[string]uint64 // key -> requests so far

	requests, forwarded, errors, uploadResets, downloadResets, forwardCuts, intercepted, bytesUp atomic.Int64
}

// Start runs a proxy to target (host:port, or an http:// or https:// URL) until the test ends.
func Start(t peers.TB, target string, cfg Config) *Proxy {
	t.Helper()
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("proxy target %q: %v", target, err)
	}
	if len(cfg.ErrorCodes) == 0 {
		cfg.ErrorCodes = []int{http.StatusInternalServerError, http.StatusServiceUnavailable}
	}
	if cfg.Key == nil {
		cfg.Key = DefaultKey
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rt := http.DefaultTransport.(*http.Transport).Clone()
	// Bodies pass through as the target sent them: lengths and digests must not change.
	rt.DisableCompression = true
	p := &Proxy{Host: l.Addr().String(), cfg: cfg, target: u, rt: rt, seen: map[string]uint64{}}
	p.URL = "http://" + p.Host
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		rt.CloseIdleConnections()
	})
	return p
}

// Counts returns what the proxy did so far.
func (p *Proxy) Counts() Counts {
	return Counts{
		Requests: p.requests.Load(), Forwarded: p.forwarded.Load(), Errors: p.errors.Load(),
		UploadResets: p.uploadResets.Load(), DownloadResets: p.downloadResets.Load(), ForwardCuts: p.forwardCuts.Load(),
		Intercepted: p.intercepted.Load(), BytesUp: p.bytesUp.Load(),
	}
}

// DefaultKey is the method and path, without the query, and with the session ID of a
// distribution blob upload (/v2/<repo>/blobs/uploads/<id>) dropped, since it differs on every
// run. S3 multipart uploads keep their uploadId in the query, which is dropped too; the part
// number is kept.
func DefaultKey(r *http.Request) string {
	path := r.URL.Path
	if i := strings.Index(path, "/blobs/uploads/"); i >= 0 {
		path = path[:i+len("/blobs/uploads/")]
	}
	key := r.Method + " " + path
	if part := r.URL.Query().Get("partNumber"); part != "" {
		key += "?partNumber=" + part
	}
	return key
}

// fate is what happens to one request.
type fate struct {
	status   int     // inject this status, when not zero
	reset    bool    // cut the connection
	fraction float64 // how much of the body passes before a cut, in (0.1, 0.9)
}

func (p *Proxy) decide(r *http.Request) fate {
	key := p.cfg.Key(r)
	p.mu.Lock()
	n := p.seen[key]
	p.seen[key] = n + 1
	p.mu.Unlock()

	h := fnv.New64a()
	_, _ = io.WriteString(h, key)
	_ = binary.Write(h, binary.LittleEndian, n)
	rnd := rand.New(rand.NewPCG(p.cfg.Seed, h.Sum64()))
	// Draw every number whether or not it is used, so that changing one rate does not
	// reshuffle the other faults.
	errRoll, code, resetRoll, fraction := rnd.Float64(), rnd.IntN(len(p.cfg.ErrorCodes)), rnd.Float64(), 0.1+0.8*rnd.Float64()

	var f fate
	switch {
	case errRoll < p.cfg.ErrorRate && (p.cfg.ErrorMatch == nil || p.cfg.ErrorMatch(r)):
		f.status = p.cfg.ErrorCodes[code]
	case resetRoll < p.cfg.ResetRate && (p.cfg.ResetMatch == nil || p.cfg.ResetMatch(r)):
		f.reset, f.fraction = true, fraction
	}
	return f
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	if p.cfg.Observe != nil {
		p.cfg.Observe(r)
	}
	if p.cfg.Intercept != nil {
		if reply := p.cfg.Intercept(r, p.Counts()); reply != nil {
			p.intercepted.Add(1)
			writeReply(w, r, reply)
			return
		}
	}
	f := p.decide(r)
	if p.cfg.Latency > 0 && (p.cfg.LatencyMatch == nil || p.cfg.LatencyMatch(r)) {
		select {
		case <-time.After(p.cfg.Latency):
		case <-r.Context().Done():
			return
		}
	}
	switch {
	case p.cfg.CutForward != nil && hasBody(r) && p.cfg.CutForward(r):
		p.forwardCuts.Add(1)
		p.cutForward(w, r)
	case f.status != 0:
		p.errors.Add(1)
		// Drain a little of the body, as a server that fails early does; the client must
		// not take the error for success whatever it had sent.
		_, _ = io.CopyN(io.Discard, r.Body, 64<<10)
		writeReply(w, r, &Reply{Status: f.status, Header: http.Header{"Content-Type": {"text/plain"}}, Body: "injected fault\n"})
	case f.reset && hasBody(r):
		p.uploadResets.Add(1)
		p.cutUpload(w, r, f.fraction)
	default:
		p.forward(w, r, f)
	}
}

func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

func writeReply(w http.ResponseWriter, r *http.Request, reply *Reply) {
	for k, v := range reply.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(reply.Body)))
	// Closing makes the client open a new connection instead of reusing one whose request
	// body may be only partly read.
	w.Header().Set("Connection", "close")
	w.WriteHeader(reply.Status)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, reply.Body)
	}
}

// cutUpload reads part of the request body and resets the connection.
func (p *Proxy) cutUpload(w http.ResponseWriter, r *http.Request, fraction float64) {
	n := int64(32 << 10)
	if r.ContentLength > 0 {
		n = max(1, int64(float64(r.ContentLength)*fraction))
	}
	_, _ = io.CopyN(io.Discard, r.Body, n)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	reset(conn)
}

// outbound is r as the proxy sends it to the target.
func (p *Proxy) outbound(r *http.Request) *http.Request {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.target.Scheme, p.target.Host
	// out.Host stays the client's: registries build upload URLs from it, and S3 signatures
	// cover it, so both must see the proxy's address.
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	return out
}

// cutForward sends the target r with the first half of its body, then closes the connection
// to the target (the transport does, as the body ends short) and resets the client's.
func (p *Proxy) cutForward(w http.ResponseWriter, r *http.Request) {
	out := p.outbound(r)
	n := int64(32 << 10)
	if r.ContentLength > 0 {
		n = r.ContentLength / 2
	}
	// The body ends before its Content-Length: the transport fails the request and closes
	// the connection once it has sent the half, and the target reads no more.
	out.Body = io.NopCloser(&countingReader{r: io.LimitReader(r.Body, n), n: &p.bytesUp})
	p.forwarded.Add(1)
	if resp, err := p.rt.RoundTrip(out); err == nil {
		resp.Body.Close()
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	reset(conn)
}

// forward passes the request to the target and its response back, cut partway when f says so.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, f fate) {
	out := p.outbound(r)
	if hasBody(r) {
		out.Body = &countingReader{r: r.Body, n: &p.bytesUp}
	} else {
		out.Body = nil
	}
	p.forwarded.Add(1)
	resp, err := p.rt.RoundTrip(out)
	if err != nil {
		http.Error(w, fmt.Sprintf("proxy: %v", err), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if f.reset {
		p.downloadResets.Add(1)
		p.cutDownload(w, r, resp, f.fraction)
		return
	}
	for _, h := range hopHeaders {
		resp.Header.Del(h)
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// cutDownload sends the status line, the headers and part of the body, then resets the
// connection. A response without a body is reset before anything is sent.
func (p *Proxy) cutDownload(w http.ResponseWriter, r *http.Request, resp *http.Response, fraction float64) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer reset(conn)
	if r.Method == http.MethodHead || resp.ContentLength == 0 {
		return
	}
	n := int64(32 << 10)
	if resp.ContentLength > 0 {
		n = max(1, int64(float64(resp.ContentLength)*fraction))
	}
	fmt.Fprintf(buf, "HTTP/1.1 %s\r\n", resp.Status)
	for _, h := range hopHeaders {
		resp.Header.Del(h)
	}
	if resp.ContentLength > 0 {
		resp.Header.Set("Content-Length", fmt.Sprint(resp.ContentLength))
	}
	_ = resp.Header.Write(buf)
	_, _ = buf.WriteString("\r\n")
	_, _ = io.CopyN(buf, resp.Body, n)
	_ = buf.Flush()
}

// reset closes conn with an RST instead of a FIN, as a crashed peer or a middlebox does.
func reset(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// hopHeaders are meaningful for one connection only (RFC 9110, section 7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingReader) Close() error { return nil }

// SeedFromEnv returns FAULTS_SEED when it is set, else def, so that a run with other faults,
// or a failure seen elsewhere, is one environment variable away.
func SeedFromEnv(t peers.TB, def uint64) uint64 {
	t.Helper()
	v := os.Getenv("FAULTS_SEED")
	if v == "" {
		return def
	}
	seed, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("FAULTS_SEED=%q: %v", v, err)
	}
	return seed
}
