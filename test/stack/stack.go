// Package stack runs the whole product the way users do, all on 127.0.0.1: kube-apiserver and
// etcd, every Velero CRD, versitygw with a BackupStorageLocation, the distribution registry with
// auth, a real `velero server` loading its AWS plugin and ours, and the worker. The end-to-end
// tests and `make demo` use it; both run in a network namespace of their own, because velero's
// manager always listens on *:8080.
package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	configv1 "github.com/openshift/api/config/v1"
	imagev1 "github.com/openshift/api/image/v1"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/controller"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
	"github.com/openshift/oadp-imagestreams-backup/test/testenv"
)

// VeleroNamespace is where Velero, its BackupStorageLocation and the worker live.
const VeleroNamespace = "velero"

// Stack is a running product.
type Stack struct {
	Env        *testenv.Environment
	Registry   *peers.Registry
	S3         *peers.S3
	kubeconfig string
	home       string
	velero     string
	// CredentialsFile holds the S3 credentials, for the worker's subcommands.
	CredentialsFile string

	cleanups []func()
	dir      string
}

// The stack is its own peers.TB: failures panic, cleanups run at Stop.
func (s *Stack) Helper()                           {}
func (s *Stack) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (s *Stack) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (s *Stack) Cleanup(f func())                  { s.cleanups = append(s.cleanups, f) }
func (s *Stack) TempDir() string {
	d, err := os.MkdirTemp(s.dir, "")
	if err != nil {
		panic(err)
	}
	return d
}

// Stop ends every process the stack started and removes its files.
func (s *Stack) Stop() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
	os.RemoveAll(s.dir)
}

func check(err error) {
	if err != nil {
		panic(err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Start brings the stack up; it panics when a part does not start. Call Stop at the end,
// also when Start panics halfway.
func Start(s *Stack) {
	ctx := context.Background()
	t := s
	s.dir = must(os.MkdirTemp("", "imagestreams-backup-"))
	s.home = t.TempDir()
	s.Env = must(testenv.Start())
	t.Cleanup(func() { _ = s.Env.Stop() })
	s.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	check(os.WriteFile(s.kubeconfig, must(s.Env.AdminKubeconfig()), 0o600))
	s.velero = peers.Binary(t, "VELERO", "velero-v*")
	c := s.Env.Client

	// Every CRD before velero starts: its discovery refreshes only every 5 minutes, and a
	// backup silently skips kinds it has not discovered.
	list := &unstructured.UnstructuredList{}
	check(list.UnmarshalJSON(must(yaml.YAMLToJSON([]byte(s.Run("install", "--crds-only", "--dry-run", "-o", "yaml"))))))
	check(list.EachListItem(func(o runtime.Object) error {
		if err := c.Create(ctx, o.(*unstructured.Unstructured)); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		return nil
	}))
	if len(list.Items) < 10 {
		panic(fmt.Sprintf("velero install --crds-only listed %d CRDs", len(list.Items)))
	}
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: VeleroNamespace}},
		// Velero's restore actions look this Deployment up on every restore.
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: VeleroNamespace, Name: "velero"}, Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "velero"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "velero"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "velero", Image: "velero"}}}},
		}},
	} {
		check(c.Create(ctx, o))
	}

	s.Registry = peers.StartRegistry(t, true)
	img := &configv1.Image{ObjectMeta: metav1.ObjectMeta{Name: "cluster"}}
	check(c.Create(ctx, img))
	img.Status.InternalRegistryHostname = s.Registry.Host
	check(c.Status().Update(ctx, img))

	s.S3 = peers.StartS3(t, "velero")
	s.CredentialsFile = filepath.Join(t.TempDir(), "cloud")
	check(os.WriteFile(s.CredentialsFile, s.S3.CredentialsFile("default"), 0o600))
	check(c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: VeleroNamespace, Name: "cloud-credentials"},
		Data: map[string][]byte{"cloud": s.S3.CredentialsFile("default")}}))
	check(c.Create(ctx, &velerov1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Namespace: VeleroNamespace, Name: "default"},
		Spec: velerov1.BackupStorageLocationSpec{Provider: "aws", Default: true,
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: "velero", Prefix: "cluster-a"}},
			Credential:  &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cloud-credentials"}, Key: "cloud"},
			Config:      map[string]string{"region": s.S3.Region, "s3Url": s.S3.URL, "s3ForcePathStyle": "true"}}}))

	// The plugins velero loads: its AWS object store and ours.
	plugins := t.TempDir()
	for env, pattern := range map[string]string{"VELERO_PLUGIN_AWS": "velero-plugin-for-aws-v*", "IMAGESTREAMS_BACKUP_PLUGIN": "imagestreams-backup-plugin"} {
		src := peers.Binary(t, env, pattern)
		check(os.Symlink(src, filepath.Join(plugins, filepath.Base(src))))
	}
	server := exec.Command(s.velero, "server", "--kubeconfig", s.kubeconfig, "--namespace", VeleroNamespace, "--plugin-dir", plugins,
		"--metrics-address", "127.0.0.1:0", "--profiler-address", "127.0.0.1:0", "--item-operation-sync-frequency", "1s",
		"--store-validation-frequency", "5s", "--log-level", "info")
	server.Env = s.environ()
	log := must(os.Create(filepath.Join(s.home, "velero-server.log")))
	server.Stdout, server.Stderr = log, log
	check(server.Start())
	t.Cleanup(func() { _ = server.Process.Kill(); _ = server.Wait(); log.Close() })

	// The worker, as in the cluster but in this process, with the registry's password as its token.
	token := filepath.Join(t.TempDir(), "token")
	check(os.WriteFile(token, []byte(s.Registry.Password), 0o600))
	mgr := must(controller.NewManager(s.Env.Config, controller.ManagerOptions{
		Config: controller.Config{Namespace: VeleroNamespace, ProgressInterval: 200 * time.Millisecond, RetryInterval: time.Second,
			Registry: controller.Registry{TokenFile: token, Username: s.Registry.Username, Jobs: 4}},
		MetricsAddress: "0", HealthProbeAddress: "0",
		Logger: zap.New(zap.WriteTo(must(os.Create(filepath.Join(s.home, "worker.log")))), zap.UseDevMode(true)),
	}))
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = mgr.Start(mctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	s.WaitFor(time.Minute, "the BackupStorageLocation Available", func() bool {
		bsl := &velerov1.BackupStorageLocation{}
		return c.Get(ctx, client.ObjectKey{Namespace: VeleroNamespace, Name: "default"}, bsl) == nil && bsl.Status.Phase == velerov1.BackupStorageLocationPhaseAvailable
	})
}

func (s *Stack) environ() []string {
	return append(os.Environ(), "KUBECONFIG="+s.kubeconfig, "HOME="+s.home, "TMPDIR="+s.home)
}

// Run runs the velero CLI and returns its output.
func (s *Stack) Run(args ...string) string {
	cmd := exec.Command(s.velero, append(args, "--kubeconfig", s.kubeconfig, "--namespace", VeleroNamespace)...)
	cmd.Env = s.environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		panic(fmt.Sprintf("velero %v: %v\n%s", args, err, out))
	}
	return string(out)
}

// WaitFor polls cond; it panics with the tails of velero's and the worker's logs on timeout.
func (s *Stack) WaitFor(timeout time.Duration, what string, cond func() bool) {
	if err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return cond(), nil
	}); err != nil {
		logs, _ := os.ReadFile(filepath.Join(s.home, "velero-server.log"))
		tail := string(logs)
		if len(tail) > 8000 {
			tail = tail[len(tail)-8000:]
		}
		wlog, _ := os.ReadFile(filepath.Join(s.home, "worker.log"))
		wtail := string(wlog)
		if len(wtail) > 4000 {
			wtail = wtail[len(wtail)-4000:]
		}
		panic(fmt.Sprintf("waiting for %s: %v\nvelero server log tail:\n%s\nworker log tail:\n%s", what, err, tail, wtail))
	}
}

// Store opens the location the way an administrator would.
func (s *Stack) Store() *imagestore.Store {
	b := must(bucket.Open(context.Background(), bucket.Config{Provider: "aws", Bucket: "velero", Credentials: s.S3.CredentialsFile("default"),
		Config: map[string]string{"region": s.S3.Region, "s3Url": s.S3.URL, "s3ForcePathStyle": "true"}}))
	return imagestore.New(b, "cluster-a")
}

// Home is the directory that holds velero's and the worker's logs.
func (s *Stack) Home() string { return s.home }

// PushImageStream pushes img to the registry as <ns>/<name>:<tag> and creates the imagestream
// pointing at it. On OpenShift the registry fills the imagestream's status on push; here the
// harness writes that status itself.
func (s *Stack) PushImageStream(ns, isName string, tags map[string]remote.Taggable, external map[string]string) (map[string]string, error) {
	ctx := context.Background()
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: s.Registry.Username, Password: s.Registry.Password}))
	repo := must(name.NewRepository(s.Registry.Host + "/" + ns + "/" + isName))
	is := &imagev1.ImageStream{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: isName}}
	if err := s.Env.Client.Create(ctx, is); err != nil {
		return nil, err
	}
	digests := map[string]string{}
	is.Status.DockerImageRepository = repo.String()
	for tag, tg := range tags {
		var h v1.Hash
		switch x := tg.(type) {
		case v1.Image:
			h = must(x.Digest())
			if err := remote.Write(repo.Tag(tag), x, auth); err != nil {
				return nil, err
			}
		case v1.ImageIndex:
			h = must(x.Digest())
			if err := remote.WriteIndex(repo.Tag(tag), x, auth); err != nil {
				return nil, err
			}
		}
		digests[tag] = h.String()
		is.Status.Tags = append(is.Status.Tags, imagev1.NamedTagEventList{Tag: tag, Items: []imagev1.TagEvent{
			{DockerImageReference: repo.String() + "@" + h.String(), Image: h.String(), Created: metav1.Now()}}})
	}
	for tag, ref := range external {
		is.Status.Tags = append(is.Status.Tags, imagev1.NamedTagEventList{Tag: tag, Items: []imagev1.TagEvent{
			{DockerImageReference: ref, Image: ref[strings.Index(ref, "@")+1:], Created: metav1.Now()}}})
	}
	if err := s.Env.Client.Status().Update(ctx, is); err != nil {
		return nil, err
	}
	return digests, nil
}
