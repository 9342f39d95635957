//go:build e2e

// Package e2e runs the product the way users do: `velero backup create` and `velero restore
// create` against a real velero server that loads our plugin, with the worker reconciling, a
// real distribution registry and a real S3 server, all on 127.0.0.1. `make e2e` runs it in a
// network namespace of its own, because velero's manager always listens on *:8080.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	configv1 "github.com/openshift/api/config/v1"
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

const veleroNS = "velero"

// stack is everything one run shares.
type stack struct {
	env        *testenv.Environment
	kubeconfig string
	home       string
	velero     string
	registry   *peers.Registry
	s3         *peers.S3
	// credentialsFile holds the S3 credentials, for the worker's subcommands.
	credentialsFile string
}

var st *stack

// tb lets the peers package start servers from TestMain, outside any test.
type tb struct {
	cleanups []func()
	dir      string
}

func (t *tb) Helper()                           {}
func (t *tb) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (t *tb) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (t *tb) Cleanup(f func())                  { t.cleanups = append(t.cleanups, f) }
func (t *tb) TempDir() string {
	d, err := os.MkdirTemp(t.dir, "")
	if err != nil {
		panic(err)
	}
	return d
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "e2e-")
	if err != nil {
		panic(err)
	}
	t := &tb{dir: dir}
	code := func() int {
		defer func() {
			for i := len(t.cleanups) - 1; i >= 0; i-- {
				t.cleanups[i]()
			}
			os.RemoveAll(dir)
		}()
		st = start(t)
		return m.Run()
	}()
	os.Exit(code)
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

func start(t *tb) *stack {
	ctx := context.Background()
	s := &stack{home: t.TempDir()}
	s.env = must(testenv.Start())
	t.Cleanup(func() { _ = s.env.Stop() })
	s.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	check(os.WriteFile(s.kubeconfig, must(s.env.AdminKubeconfig()), 0o600))
	s.velero = peers.Binary(t, "VELERO", "velero-v*")
	c := s.env.Client

	// Every CRD before velero starts: its discovery refreshes only every 5 minutes, and a
	// backup silently skips kinds it has not discovered.
	list := &unstructured.UnstructuredList{}
	check(list.UnmarshalJSON(must(yaml.YAMLToJSON([]byte(s.run("install", "--crds-only", "--dry-run", "-o", "yaml"))))))
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
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: veleroNS}},
		// Velero's restore actions look this Deployment up on every restore.
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: veleroNS, Name: "velero"}, Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "velero"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "velero"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "velero", Image: "velero"}}}},
		}},
	} {
		check(c.Create(ctx, o))
	}

	s.registry = peers.StartRegistry(t, true)
	img := &configv1.Image{ObjectMeta: metav1.ObjectMeta{Name: "cluster"}}
	check(c.Create(ctx, img))
	img.Status.InternalRegistryHostname = s.registry.Host
	check(c.Status().Update(ctx, img))

	s.s3 = peers.StartS3(t, "velero")
	s.credentialsFile = filepath.Join(t.TempDir(), "cloud")
	check(os.WriteFile(s.credentialsFile, s.s3.CredentialsFile("default"), 0o600))
	check(c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: veleroNS, Name: "cloud-credentials"},
		Data: map[string][]byte{"cloud": s.s3.CredentialsFile("default")}}))
	check(c.Create(ctx, &velerov1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Namespace: veleroNS, Name: "default"},
		Spec: velerov1.BackupStorageLocationSpec{Provider: "aws", Default: true,
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: "velero", Prefix: "cluster-a"}},
			Credential:  &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cloud-credentials"}, Key: "cloud"},
			Config:      map[string]string{"region": s.s3.Region, "s3Url": s.s3.URL, "s3ForcePathStyle": "true"}}}))

	// The plugins velero loads: its AWS object store and ours.
	plugins := t.TempDir()
	for env, pattern := range map[string]string{"VELERO_PLUGIN_AWS": "velero-plugin-for-aws-v*", "IMAGESTREAMS_BACKUP_PLUGIN": "imagestreams-backup-plugin"} {
		src := peers.Binary(t, env, pattern)
		check(os.Symlink(src, filepath.Join(plugins, filepath.Base(src))))
	}
	server := exec.Command(s.velero, "server", "--kubeconfig", s.kubeconfig, "--namespace", veleroNS, "--plugin-dir", plugins,
		"--metrics-address", "127.0.0.1:0", "--profiler-address", "127.0.0.1:0", "--item-operation-sync-frequency", "1s",
		"--store-validation-frequency", "5s", "--log-level", "info")
	server.Env = s.environ()
	log := must(os.Create(filepath.Join(s.home, "velero-server.log")))
	server.Stdout, server.Stderr = log, log
	check(server.Start())
	t.Cleanup(func() { _ = server.Process.Kill(); _ = server.Wait(); log.Close() })

	// The worker, as in the cluster but in this process, with the registry's password as its token.
	token := filepath.Join(t.TempDir(), "token")
	check(os.WriteFile(token, []byte(s.registry.Password), 0o600))
	mgr := must(controller.NewManager(s.env.Config, controller.ManagerOptions{
		Config: controller.Config{Namespace: veleroNS, ProgressInterval: 200 * time.Millisecond, RetryInterval: time.Second,
			Registry: controller.Registry{TokenFile: token, Username: s.registry.Username, Jobs: 4}},
		MetricsAddress: "0", HealthProbeAddress: "0",
		Logger: zap.New(zap.WriteTo(must(os.Create(filepath.Join(s.home, "worker.log")))), zap.UseDevMode(true)),
	}))
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = mgr.Start(mctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	s.waitFor(time.Minute, "the BackupStorageLocation Available", func() bool {
		bsl := &velerov1.BackupStorageLocation{}
		return c.Get(ctx, client.ObjectKey{Namespace: veleroNS, Name: "default"}, bsl) == nil && bsl.Status.Phase == velerov1.BackupStorageLocationPhaseAvailable
	})
	return s
}

func (s *stack) environ() []string {
	return append(os.Environ(), "KUBECONFIG="+s.kubeconfig, "HOME="+s.home, "TMPDIR="+s.home)
}

// run runs the velero CLI and returns its output.
func (s *stack) run(args ...string) string {
	cmd := exec.Command(s.velero, append(args, "--kubeconfig", s.kubeconfig, "--namespace", veleroNS)...)
	cmd.Env = s.environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		panic(fmt.Sprintf("velero %v: %v\n%s", args, err, out))
	}
	return string(out)
}

func (s *stack) waitFor(timeout time.Duration, what string, cond func() bool) {
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

// store opens the location the way an administrator would.
func (s *stack) store() *imagestore.Store {
	b := must(bucket.Open(context.Background(), bucket.Config{Provider: "aws", Bucket: "velero", Credentials: s.s3.CredentialsFile("default"),
		Config: map[string]string{"region": s.s3.Region, "s3Url": s.s3.URL, "s3ForcePathStyle": "true"}}))
	return imagestore.New(b, "cluster-a")
}
