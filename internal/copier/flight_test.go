package copier_test

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
)

// Two images that share a manifest share one copy of it; the caller that started that copy
// going away (its backup canceled) must not fail the other one.
func TestASiblingsCancellationDoesNotFailASharedManifest(t *testing.T) {
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	fetching, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/manifests/"+digest.String()) {
			once.Do(func() { close(fetching) })
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	refs := map[string]name.Digest{}
	for _, repo := range []string{"app/first", "app/second"} {
		ref, err := name.NewDigest(host+"/"+repo+"@"+digest.String(), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		refs[repo] = ref
	}
	c, err := copier.New(newStore(t).store, copier.Options{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}

	firstCtx, cancelFirst := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() { _, err := c.Copy(firstCtx, refs["app/first"]); firstErr <- err }()
	<-fetching
	secondErr := make(chan error, 1)
	go func() { _, err := c.Copy(context.Background(), refs["app/second"]); secondErr <- err }()
	time.Sleep(100 * time.Millisecond) // the second caller joins the copy under way
	cancelFirst()
	if err := <-firstErr; err == nil {
		t.Error("the canceled caller's copy succeeded")
	}
	close(release)
	select {
	case err := <-secondErr:
		if err != nil {
			t.Errorf("the other image failed with its sibling's cancellation: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the other image's copy never ended")
	}
}
