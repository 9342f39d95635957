package peers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
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
}

// StartRegistry starts Debian's docker-registry (distribution 2.8) on 127.0.0.1 with storage in
// a temporary directory, requiring basic auth when auth is true.
func StartRegistry(t TB, auth bool) *Registry {
	t.Helper()
	return startRegistry(t, "127.0.0.1", auth, false)
}

// TLSHost is the loopback address a TLS registry listens on. go-containerregistry talks plain
// HTTP to 127.0.0.1 and localhost whatever the client asks for, but HTTPS to any other address,
// so a registry here shows what a client does with a real one: verify its certificate, or fail.
const TLSHost = "127.0.0.2"

// StartTLSRegistry starts docker-registry as StartRegistry does, but on TLSHost and serving
// only TLS, with a certificate for that address from a CA made for the test: Registry.CACert.
func StartTLSRegistry(t TB, auth bool) *Registry {
	t.Helper()
	return startRegistry(t, TLSHost, auth, true)
}

func startRegistry(t TB, ip string, auth, useTLS bool) *Registry {
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
  delete:
    enabled: true
http:
  addr: %s
  secret: test-secret
`, r.Dir, r.Host)
	if auth {
		r.Username, r.Password = "tester", "s3cret-password"
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(t.TempDir(), "htpasswd")
		if err := os.WriteFile(htpasswd, fmt.Appendf(nil, "%s:%s\n", r.Username, hash), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", htpasswd)
	}
	if useTLS {
		var certFile, keyFile string
		r.CACert, certFile, keyFile = selfSigned(t, net.ParseIP(ip))
		// Under http:, which cfg ends with.
		cfg = strings.Replace(cfg, "  secret: test-secret\n",
			fmt.Sprintf("  secret: test-secret\n  tls:\n    certificate: %s\n    key: %s\n", certFile, keyFile), 1)
	}
	path := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, exec.Command(Binary(t, "DOCKER_REGISTRY", "docker-registry"), "serve", path), r.Host)
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
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "imagestreams-backup test registry"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{ip},
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
	dir := t.TempDir()
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPEM, certFile, keyFile
}
