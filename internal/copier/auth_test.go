package copier_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
)

// Options.AuthHost confines the credentials to one registry: another one that asks for them
// gets none, from copies, pushes and pings alike.
func TestCredentialsGoOnlyToTheirRegistry(t *testing.T) {
	for desc, tt := range map[string]struct {
		authHost func(self string) string
		wantAuth bool
	}{
		"a registry other than AuthHost":        {func(string) string { return "internal-registry:5000" }, false},
		"the registry AuthHost names":           {func(self string) string { return self }, true},
		"any registry when AuthHost is not set": {func(string) string { return "" }, true},
	} {
		t.Run(desc, func(t *testing.T) {
			var withAuth atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "" {
					withAuth.Add(1)
				}
				w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
				w.WriteHeader(http.StatusUnauthorized)
			}))
			t.Cleanup(srv.Close)
			self := strings.TrimPrefix(srv.URL, "http://")
			opts := copier.Options{Auth: authn.FromConfig(authn.AuthConfig{Username: "serviceaccount", Password: "token"}), AuthHost: tt.authHost(self),
				Backoff: remote.Backoff{Duration: 1, Factor: 1, Steps: 1}}
			ref := must[name.Digest](t)(name.NewDigest(self + "/app/web@sha256:" + strings.Repeat("a", 64)))
			c, err := copier.New(newStore(t).store, opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Copy(context.Background(), ref); err == nil {
				t.Fatal("Copy from a registry that refuses everyone succeeded")
			}
			_ = copier.Ping(context.Background(), ref.Context().Registry, opts)
			if got := withAuth.Load() > 0; got != tt.wantAuth {
				t.Errorf("credentials sent: %v, want %v", got, tt.wantAuth)
			}
		})
	}
}
