package peers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

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
}

// StartRegistry starts Debian's docker-registry (distribution 2.8) on 127.0.0.1 with storage in
// a temporary directory, requiring basic auth when auth is true.
func StartRegistry(t TB, auth bool) *Registry {
	t.Helper()
	r := &Registry{Host: fmt.Sprintf("127.0.0.1:%d", freePort(t)), Dir: t.TempDir()}
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
	path := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, exec.Command(Binary(t, "DOCKER_REGISTRY", "docker-registry"), "serve", path), r.Host)
	return r
}
