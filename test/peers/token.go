package peers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenServer issues the bearer tokens of the Docker token authentication the distribution
// registry implements (its auth: token: configuration): a client that the registry turns away
// with a Bearer challenge asks the realm for a token, with the registry's user and password,
// and sends that token with each request. The registry then checks a signature per request,
// not a password: this is the shape of OpenShift's registry, which takes bearer tokens.
//
// The server grants the user whatever it asks for, and signs with an ECDSA P-256 key that the
// registry trusts through the certificate in rootCertBundle, named in each token by its
// libtrust key ID.
type tokenServer struct {
	service, issuer    string
	username, password string
	ttl                time.Duration
	key                *ecdsa.PrivateKey
	keyID              string
	realm              string
	issued             atomic.Int64
	// delay is how long each answer takes; inFlight counts the requests being answered, and
	// peak is the most there were at once.
	delay          time.Duration
	inFlight, peak atomic.Int64
}

// startTokenServer serves tokens for service on 127.0.0.1 until the test ends. Tokens are
// valid for ttl; each answer takes delay.
func startTokenServer(t TB, service, username, password string, ttl, delay time.Duration) *tokenServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := &tokenServer{service: service, issuer: "imagestreams-backup-test-tokens", username: username, password: password,
		ttl: ttl, delay: delay, key: key, keyID: libtrustKeyID(&key.PublicKey)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// go-containerregistry asks a realm at a private or loopback IP address for tokens only
	// when it is the registry's own host:port (OpenShift's is); it does not resolve names.
	s.realm = fmt.Sprintf("http://localhost:%d/token", l.Addr().(*net.TCPAddr).Port)
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// rootCertBundle is a self-signed certificate of the signing key, for the registry's
// rootcertbundle.
func (s *tokenServer) rootCertBundle(t TB) []byte {
	t.Helper()
	pem, _, _ := certificateFor(t, s.key, nil)
	return pem
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for peak := s.peak.Load(); n > peak && !s.peak.CompareAndSwap(peak, n); peak = s.peak.Load() {
	}
	select {
	case <-time.After(s.delay):
	case <-r.Context().Done():
		return
	}
	// Anonymous clients get a token that grants nothing, as public registries give them: the
	// registry then refuses what they ask for. Wrong credentials get no token.
	user, password, ok := r.BasicAuth()
	grant := access(r.URL.Query()["scope"])
	switch {
	case !ok:
		user, grant = "", []resourceActions{}
	case subtle.ConstantTimeCompare([]byte(user), []byte(s.username)) != 1 ||
		subtle.ConstantTimeCompare([]byte(password), []byte(s.password)) != 1:
		w.Header().Set("WWW-Authenticate", `Basic realm="test tokens"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if r.URL.Query().Get("service") != s.service {
		http.Error(w, "unknown service", http.StatusBadRequest)
		return
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": s.issuer, "sub": user, "aud": s.service,
		"iat": now.Unix(), "nbf": now.Add(-time.Second).Unix(), "exp": now.Add(s.ttl - registryLeeway).Unix(),
		"jti": fmt.Sprint(s.issued.Add(1)), "access": grant,
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = s.keyID
	signed, err := tok.SignedString(s.key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token": signed, "access_token": signed, "expires_in": int(s.ttl.Seconds()), "issued_at": now.UTC().Format(time.RFC3339),
	})
}

// registryLeeway is how long past its expiry the registry still takes a token (distribution's
// token.Leeway); tokens here name an expiry that much earlier, so that the registry refuses
// them ttl after they were issued.
const registryLeeway = 60 * time.Second

type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// access grants every scope asked for; a scope is type:name:action,action, and a name may hold
// colons of its own.
func access(scopes []string) []resourceActions {
	out := []resourceActions{}
	for _, scope := range scopes {
		for one := range strings.FieldsSeq(scope) {
			typ, rest, ok1 := strings.Cut(one, ":")
			i := strings.LastIndexByte(rest, ':')
			if !ok1 || i < 0 {
				continue
			}
			out = append(out, resourceActions{Type: typ, Name: rest[:i], Actions: strings.Split(rest[i+1:], ",")})
		}
	}
	return out
}

// libtrustKeyID is the key ID the registry gives a trusted public key: the first 240 bits of
// the SHA-256 of its PKIX form, in base32, in groups of four joined by colons.
func libtrustKeyID(pub *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	sum := sha256.Sum256(der)
	s := strings.TrimRight(base32.StdEncoding.EncodeToString(sum[:30]), "=")
	groups := make([]string, 0, len(s)/4)
	for i := 0; i < len(s); i += 4 {
		groups = append(groups, s[i:min(i+4, len(s))])
	}
	return strings.Join(groups, ":")
}
