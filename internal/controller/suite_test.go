package controller_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/controller"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
	"github.com/openshift/oadp-imagestreams-backup/test/testenv"
)

var env *testenv.Environment

// The worker's tests delete resources and namespaces: the garbage collector and namespace
// controller run beside the API server, as in a cluster.
func TestMain(m *testing.M) { testenv.MainWith(m, &env, testenv.Options{ControllerManager: true}) }

// secrets collects every credential the tests hand the worker, to check that none leaks.
var secrets sync.Map

// cluster is one test's world: a namespace where the worker and Velero live, a registry with
// auth, an S3 server with a BackupStorageLocation pointing at it, and the worker's service
// account bound to the generated role only.
type cluster struct {
	t        *testing.T
	ns       string
	registry *peers.Registry
	s3       *peers.S3
	logs     *syncBuffer
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, ns: env.Namespace(t), registry: peers.StartRegistry(t, peers.BasicAuth), s3: peers.StartS3(t, "velero"), logs: &syncBuffer{}}
	secrets.Store(c.registry.Password, true)
	secrets.Store(c.s3.SecretKey, true)
	c.create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cloud-credentials", Namespace: c.ns},
		Data: map[string][]byte{"cloud": c.s3.CredentialsFile("default")}})
	c.create(&velerov1.BackupStorageLocation{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: c.ns},
		Spec: velerov1.BackupStorageLocationSpec{
			Provider: "aws", Default: true,
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: "velero", Prefix: "cluster-a"}},
			Config:      map[string]string{"region": c.s3.Region, "s3Url": c.s3.URL, "s3ForcePathStyle": "true"},
		},
	})
	c.bindGeneratedRole()
	return c
}

// vouchFor adds a BackupStorageLocation that uses Secret secret (key cloud) with the S3
// endpoint s3URL, as an administrator does, so that inline locations may use the Secret there.
func (c *cluster) vouchFor(secret, s3URL string) {
	c.t.Helper()
	c.create(&velerov1.BackupStorageLocation{
		ObjectMeta: metav1.ObjectMeta{Name: "uses-" + secret, Namespace: c.ns},
		Spec: velerov1.BackupStorageLocationSpec{
			Provider:    "aws",
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: "velero", Prefix: "uses-" + secret}},
			Config:      map[string]string{"region": c.s3.Region, "s3Url": s3URL, "s3ForcePathStyle": "true"},
			Credential:  &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "cloud"},
		},
	})
}

func (c *cluster) create(o ctrl.Object) {
	c.t.Helper()
	if err := env.Client.Create(context.Background(), o); err != nil {
		c.t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
	}
}

// bindGeneratedRole installs deploy/rbac/role.yaml for a service account "worker" in the
// test's namespace.
func (c *cluster) bindGeneratedRole() {
	c.t.Helper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "deploy", "rbac", "role.yaml"))
	if err != nil {
		c.t.Fatal(err)
	}
	c.create(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "worker", Namespace: c.ns}})
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "worker", Namespace: c.ns}}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		if strings.TrimSpace(strings.Trim(doc, "-\n")) == "" {
			continue
		}
		if strings.Contains(doc, "kind: ClusterRole") {
			cr := &rbacv1.ClusterRole{}
			if err := yaml.Unmarshal([]byte(doc), cr); err != nil {
				c.t.Fatal(err)
			}
			cr.Name = cr.Name + "-" + c.ns
			c.create(cr)
			c.create(&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: cr.Name}, Subjects: subject,
				RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: cr.Name}})
			continue
		}
		role := &rbacv1.Role{}
		if err := yaml.Unmarshal([]byte(doc), role); err != nil {
			c.t.Fatal(err)
		}
		role.Namespace = c.ns
		c.create(role)
		c.create(&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: c.ns}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name}})
	}
}

// workerOptions are the worker's settings for this cluster; tests adjust them.
func (c *cluster) workerOptions() controller.ManagerOptions {
	token := filepath.Join(c.t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(c.registry.Password+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return controller.ManagerOptions{
		Config: controller.Config{
			Namespace:        c.ns,
			Registry:         controller.Registry{Host: c.registry.Host, TokenFile: token, Username: c.registry.Username, Jobs: 4},
			ProgressInterval: 100 * time.Millisecond, RetryInterval: 200 * time.Millisecond, GCDelay: 300 * time.Millisecond,
		},
		MetricsAddress: "0", HealthProbeAddress: "0", SeveralPerProcess: true,
	}
}

// startWorker runs a worker as the service account bound to the generated role and returns a
// function that stops it.
func (c *cluster) startWorker(o controller.ManagerOptions) (stop func()) {
	c.t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: fmt.Sprintf("system:serviceaccount:%s:worker", c.ns)}
	tw := &testWriter{t: c.t}
	// Registered before the worker's stop, so it runs after it: goroutines that still log once
	// the test has ended must not reach t.Log, which panics then.
	c.t.Cleanup(func() { tw.done.Store(true) })
	o.Logger = zap.New(zap.WriteTo(io.MultiWriter(c.logs, tw)), zap.UseDevMode(true))
	mgr, err := controller.NewManager(cfg, o)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				c.t.Errorf("worker stopped with %v", err)
			}
		})
	}
	c.t.Cleanup(stop)
	return stop
}

// testWriter sends the worker's log to the test's log, shown when it fails, until the test ends.
type testWriter struct {
	t    *testing.T
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// push writes an image or index to <registry>/<path> by digest, as a cluster's builds do.
func (c *cluster) push(path string, tg remote.Taggable, host string) string {
	c.t.Helper()
	repo, err := name.NewRepository(host + "/" + path)
	if err != nil {
		c.t.Fatal(err)
	}
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: c.registry.Username, Password: c.registry.Password}))
	var h v1.Hash
	switch x := tg.(type) {
	case v1.Image:
		h, _ = x.Digest()
		err = remote.Write(repo.Digest(h.String()), x, auth)
	case v1.ImageIndex:
		h, _ = x.Digest()
		err = remote.WriteIndex(repo.Digest(h.String()), x, auth)
	}
	if err != nil {
		c.t.Fatalf("pushing %s: %v", repo, err)
	}
	return repo.Digest(h.String()).String()
}

func (c *cluster) auth() remote.Option {
	return remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: c.registry.Username, Password: c.registry.Password}))
}

// store opens the BackupStorageLocation's store directly, as an administrator would.
func (c *cluster) store() *imagestore.Store { return c.storeAt("cluster-a") }

// storeAt opens the store under prefix in the S3 server's bucket.
func (c *cluster) storeAt(prefix string) *imagestore.Store {
	c.t.Helper()
	b, err := bucket.Open(context.Background(), bucket.Config{Provider: "aws", Bucket: "velero",
		Config:      map[string]string{"region": c.s3.Region, "s3Url": c.s3.URL, "s3ForcePathStyle": "true"},
		Credentials: c.s3.CredentialsFile("default")})
	if err != nil {
		c.t.Fatal(err)
	}
	s := imagestore.New(b, prefix)
	c.t.Cleanup(func() { s.Close() })
	return s
}

// allowGone makes waitFor succeed once the object no longer exists.
const allowGone = true

// waitFor polls obj until cond holds (or, with allowGone, until obj is deleted).
func waitFor[T ctrl.Object](t *testing.T, obj T, timeout time.Duration, what string, cond func(T) bool, gone ...bool) T {
	t.Helper()
	var last T
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, ctrl.ObjectKeyFromObject(obj), obj); err != nil {
			return len(gone) > 0 && gone[0] && apierrors.IsNotFound(err), nil
		}
		last = obj
		return cond(obj), nil
	})
	if err != nil {
		b, _ := yaml.Marshal(last)
		t.Fatalf("waiting for %s: %v; last seen:\n%s", what, err, b)
	}
	return obj
}

func backupPhase(p oadpv1alpha1.BackupPhase) func(*oadpv1alpha1.ImageStreamsBackup) bool {
	return func(b *oadpv1alpha1.ImageStreamsBackup) bool { return b.Status.Phase == p }
}

func restorePhase(p oadpv1alpha1.RestorePhase) func(*oadpv1alpha1.ImageStreamsRestore) bool {
	return func(r *oadpv1alpha1.ImageStreamsRestore) bool { return r.Status.Phase == p }
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// countingProxy sits between the worker and the registry, counts blob bytes served, and can
// slow them down so that a test can act in the middle of a copy.
type countingProxy struct {
	*httptest.Server
	blobBytes atomic.Int64
	delay     atomic.Int64 // per 32 KiB, in nanoseconds
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	p := &countingProxy{}
	u, _ := url.Parse("http://" + target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/blobs/sha256:") && resp.Request.Method == http.MethodGet {
			resp.Body = &slowBody{ReadCloser: resp.Body, p: p}
		}
		return nil
	}
	p.Server = httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p
}

func (p *countingProxy) host() string { return strings.TrimPrefix(p.URL, "http://") }

type slowBody struct {
	io.ReadCloser
	p *countingProxy
}

func (b *slowBody) Read(buf []byte) (int, error) {
	if len(buf) > 32<<10 {
		buf = buf[:32<<10]
	}
	n, err := b.ReadCloser.Read(buf)
	b.p.blobBytes.Add(int64(n))
	if d := b.p.delay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	return n, err
}
