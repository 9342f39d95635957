package peers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
)

// Registry is a running distribution registry.
type Registry struct {
	// Host is host:port, for image references.
	Host string
	// Username and Password are the registry's only user when it requires auth.
	Username, Password string
	// Dir is the registry's storage root.
	Dir string
	// CACert is the PEM certificate that verifies the registry's TLS, when it serves TLS.
	CACert []byte

	tokens *tokenServer
	pid    int
}

// CPU is the CPU time, user and system, the registry process has used so far.
func (r *Registry) CPU() (time.Duration, error) { return ProcessCPU(r.pid) }

// TokensIssued counts the bearer tokens the registry's token server has issued; 0 unless the
// registry takes tokens.
func (r *Registry) TokensIssued() int64 {
	if r.tokens == nil {
		return 0
	}
	return r.tokens.issued.Load()
}

// Pin keeps the registry's threads, and those they start, on cpus.
func (r *Registry) Pin(cpus *unix.CPUSet) error {
	pinned := map[string]bool{}
	// A thread started meanwhile by one not yet pinned is found by the next pass.
	for {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", r.pid))
		if err != nil {
			return err
		}
		more := false
		for _, task := range tasks {
			if pinned[task.Name()] {
				continue
			}
			tid, err := strconv.Atoi(task.Name())
			if err != nil {
				return fmt.Errorf("/proc/%d/task/%s: %w", r.pid, task.Name(), err)
			}
			if err := unix.SchedSetaffinity(tid, cpus); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("pinning thread %d of the registry: %w", tid, err)
			}
			pinned[task.Name()], more = true, true
		}
		if !more {
			return nil
		}
	}
}

// TokenRequestsInFlight counts the token requests the registry's token server is answering
// now; 0 unless the registry takes tokens.
func (r *Registry) TokenRequestsInFlight() int64 {
	if r.tokens == nil {
		return 0
	}
	return r.tokens.inFlight.Load()
}

// TokenRequestsAtOnce is the most token requests the registry's token server has been
// answering at one time; 0 unless the registry takes tokens.
func (r *Registry) TokenRequestsAtOnce() int64 {
	if r.tokens == nil {
		return 0
	}
	return r.tokens.peak.Load()
}

// Auth is how a test registry authenticates its clients.
type Auth struct {
	basic      bool
	tokenTTL   time.Duration
	tokenDelay time.Duration
}

var (
	// NoAuth serves everyone.
	NoAuth = Auth{}
	// BasicAuth takes a user and password on every request, checked against an htpasswd file
	// holding a bcrypt hash of the lowest cost (bcrypt.MinCost).
	BasicAuth = Auth{basic: true}
)

// TokenAuth takes bearer tokens, as OpenShift's registry does: a client turned away asks a
// token server for a token with the user and password, and the registry checks the token's
// signature on each request. The registry refuses a token ttl after it was issued.
func TokenAuth(ttl time.Duration) Auth { return Auth{tokenTTL: ttl} }

// SlowTokens makes the token server of TokenAuth take d to answer each request, as a token
// service under load does.
func (a Auth) SlowTokens(d time.Duration) Auth {
	a.tokenDelay = d
	return a
}

// StartRegistry starts Debian's docker-registry (distribution 2.8) on 127.0.0.1 with storage in
// a temporary directory, authenticating clients as auth says.
func StartRegistry(t TB, auth Auth) *Registry {
	t.Helper()
	return startRegistry(t, "127.0.0.1", auth, false)
}

// TLSHost is the loopback address a TLS registry listens on. go-containerregistry talks plain
// HTTP to 127.0.0.1 and localhost whatever the client asks for, but HTTPS to any other address,
// so a registry here shows what a client does with a real one: verify its certificate, or fail.
const TLSHost = "127.0.0.2"

// StartTLSRegistry starts docker-registry as StartRegistry does, but on TLSHost and serving
// only TLS, with a certificate for that address from a CA made for the test: Registry.CACert.
func StartTLSRegistry(t TB, auth Auth) *Registry {
	t.Helper()
	return startRegistry(t, TLSHost, auth, true)
}

func startRegistry(t TB, ip string, auth Auth, useTLS bool) *Registry {
	t.Helper()
	r := &Registry{Host: net.JoinHostPort(ip, fmt.Sprint(freePortOn(t, ip))), Dir: t.TempDir()}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  # As distribution's own sample configuration and OpenShift's registry have it.
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: %s
  secret: test-secret
`, r.Dir, r.Host)
	switch {
	case auth.basic:
		r.Username, r.Password = "tester", "s3cret-password"
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", writeFile(t, "htpasswd", fmt.Appendf(nil, "%s:%s\n", r.Username, hash)))
	case auth.tokenTTL > 0:
		r.Username, r.Password = "tester", "s3cret-password"
		r.tokens = startTokenServer(t, "test-registry", r.Username, r.Password, auth.tokenTTL, auth.tokenDelay)
		cfg += fmt.Sprintf("auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
			r.tokens.realm, r.tokens.service, r.tokens.issuer, writeFile(t, "token-ca.crt", r.tokens.rootCertBundle(t)))
	}
	if useTLS {
		var certFile, keyFile string
		r.CACert, certFile, keyFile = selfSigned(t, net.ParseIP(ip))
		// Under http:, which cfg ends with.
		cfg = strings.Replace(cfg, "  secret: test-secret\n",
			fmt.Sprintf("  secret: test-secret\n  tls:\n    certificate: %s\n    key: %s\n", certFile, keyFile), 1)
	}
	cmd := exec.Command(Binary(t, "DOCKER_REGISTRY", "docker-registry"), "serve", writeFile(t, "config.yml", []byte(cfg)))
	start(t, cmd, r.Host)
	r.pid = cmd.Process.Pid
	return r
}

// selfSigned writes a self-signed certificate for ip and its key, and returns the certificate
// as PEM with both files' paths.
func selfSigned(t TB, ip net.IP) (certPEM []byte, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return certificateFor(t, key, []net.IP{ip})
}

// certificateFor writes a self-signed certificate of key, for ips, and the key, and returns the
// certificate as PEM with both files' paths.
func certificateFor(t TB, key *ecdsa.PrivateKey, ips []net.IP) (certPEM []byte, certFile, keyFile string) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "imagestreams-backup test registry"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           ips,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return certPEM, writeFile(t, "tls.crt", certPEM), writeFile(t, "tls.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
}

// writeFile writes data into a new file named name in a temporary directory, and returns its
// path.
func writeFile(t TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
