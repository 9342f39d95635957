package transfer

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"gocloud.dev/blob/memblob"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// testRegistry is an in-process registry on 127.0.0.1. Before each request, hook (when set)
// may answer it itself or delay it.
type testRegistry struct {
	*httptest.Server
	hook func(w http.ResponseWriter, r *http.Request) (handled bool)
}

func newRegistry(t *testing.T, hook func(w http.ResponseWriter, r *http.Request) bool) *testRegistry {
	t.Helper()
	reg := &testRegistry{hook: hook}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	reg.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if reg.hook != nil && reg.hook(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(reg.Close)
	return reg
}

func (r *testRegistry) host() string { return strings.TrimPrefix(r.URL, "http://") }

// push writes a random image of one small layer to app/is and returns its reference.
func (r *testRegistry) push(t *testing.T, is string) oadpv1alpha1.DockerImageReference {
	t.Helper()
	return r.pushSized(t, "app", is, 2048, 1)
}

// pushSized writes a random image of layers layers of size bytes each.
func (r *testRegistry) pushSized(t *testing.T, ns, is string, size int64, layers int) oadpv1alpha1.DockerImageReference {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return r.write(t, ns, is, img)
}

// pushWith writes an image of layer and a small layer of its own to ns/is.
func (r *testRegistry) pushWith(t *testing.T, ns, is string, layer v1.Layer) oadpv1alpha1.DockerImageReference {
	t.Helper()
	own, err := random.Layer(2048, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer, own)
	if err != nil {
		t.Fatal(err)
	}
	return r.write(t, ns, is, img)
}

// write pushes img to ns/is by digest and returns its reference, tagged latest.
func (r *testRegistry) write(t *testing.T, ns, is string, img v1.Image) oadpv1alpha1.DockerImageReference {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewDigest(r.host()+"/"+ns+"/"+is+"@"+d.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return oadpv1alpha1.DockerImageReference{DockerImageReference: ref.String(), Tags: []string{"latest"}}
}

// missing is a reference to an image the registry does not have.
func (r *testRegistry) missing(ns, is string, n int) oadpv1alpha1.DockerImageReference {
	h := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", n+1)}
	return oadpv1alpha1.DockerImageReference{DockerImageReference: r.host() + "/" + ns + "/" + is + "@" + h.String()}
}

// newStore is a store in memory.
func newStore(t *testing.T) *imagestore.Store {
	t.Helper()
	return imagestore.New(memblob.OpenBucket(nil), "")
}

// peak tracks the most requests in flight at once.
type peak struct{ now, max atomic.Int64 }

func (p *peak) enter() {
	n := p.now.Add(1)
	for {
		m := p.max.Load()
		if n <= m || p.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func (p *peak) leave() { p.now.Add(-1) }

// run runs job to its end, as a runner would, and returns its result.
func run(t *testing.T, job Job) Result {
	t.Helper()
	defer job.Close()
	return job.Run(context.Background(), func(int64, string) {})
}
