// Package testenv starts a real kube-apiserver and etcd (controller-runtime's envtest) with the
// project's CRDs and the OpenShift CRDs its components read, for tests that need an API server,
// and, where deletion or ownership matters, the real kube-controller-manager's garbage
// collector and namespace controller beside them: without those, owner references never
// cascade and deleted namespaces stay Terminating, a world where deletion bugs hide.
//
// The binaries come from bin/k8s/<version>/, built from the Go module proxy by `make
// envtest-bins`; KUBEBUILDER_ASSETS overrides the directory.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	imagev1 "github.com/openshift/api/image/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/openshift/oadp-imagestreams-backup/internal/cluster"
)

// Environment is a running control plane with every CRD the project needs installed.
type Environment struct {
	// Config reaches the API server as a cluster administrator.
	Config *rest.Config
	// Client is a controller-runtime client over Scheme.
	Client client.Client
	// Scheme knows core Kubernetes kinds, this project's API, Velero's, and the OpenShift
	// image and config kinds.
	Scheme *k8sruntime.Scheme

	env *envtest.Environment
	kcm *controllerManager
}

// Options say what runs beside the API server.
type Options struct {
	// ControllerManager runs kube-controller-manager with its garbage collector and namespace
	// controller.
	ControllerManager bool
}

// RepoRoot is the repository's top directory, found from this file's location so that tests
// work from any package directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// NewScheme returns a scheme with every kind the project's tests use: those of
// cluster.NewScheme, which the worker and the plugin know, and the OpenShift image kinds the
// tests create.
func NewScheme() (*k8sruntime.Scheme, error) {
	s, err := cluster.NewScheme()
	if err != nil {
		return nil, err
	}
	if err := imagev1.Install(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Start starts kube-apiserver and etcd and installs the CRDs from deploy/crd and test/crds.
func Start() (*Environment, error) { return StartWith(Options{}) }

// StartWith is Start with what opts adds.
func StartWith(opts Options) (*Environment, error) {
	assets, err := assetsDir()
	if err != nil {
		return nil, err
	}
	scheme, err := NewScheme()
	if err != nil {
		return nil, fmt.Errorf("building scheme: %w", err)
	}
	root := RepoRoot()
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths: []string{
			filepath.Join(root, "deploy", "crd"),
			filepath.Join(root, "test", "crds"),
		},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest from %s: %w", assets, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("creating client: %w", err)
	}
	e := &Environment{Config: cfg, Client: c, Scheme: scheme, env: env}
	if opts.ControllerManager {
		if e.kcm, err = startControllerManager(e, assets); err != nil {
			_ = env.Stop()
			return nil, err
		}
	}
	return e, nil
}

// AdminKubeconfig returns a kubeconfig for a cluster administrator, for processes such as
// velero that the tests run beside.
func (e *Environment) AdminKubeconfig() ([]byte, error) {
	u, err := e.env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	return u.KubeConfig()
}

// Stop stops the control plane.
func (e *Environment) Stop() error {
	if e.kcm != nil {
		e.kcm.stop()
	}
	return e.env.Stop()
}

// Main runs a package's tests against one shared control plane: call it from TestMain.
func Main(m *testing.M, env **Environment) { MainWith(m, env, Options{}) }

// MainWith is Main with what opts adds to the control plane.
func MainWith(m *testing.M, env **Environment, opts Options) {
	e, err := StartWith(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		os.Exit(1)
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv: stopping:", err)
	}
	os.Exit(code)
}

// Namespace creates a namespace with a generated name for one test and returns its name. It is
// left behind (without a namespace controller it could not go); names never collide.
func (e *Environment) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

// assetsDir finds the kube-apiserver and etcd binaries: KUBEBUILDER_ASSETS, or the only
// version built under bin/k8s.
func assetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	matches, _ := filepath.Glob(filepath.Join(RepoRoot(), "bin", "k8s", "*", "kube-apiserver"))
	if len(matches) != 1 {
		return "", fmt.Errorf("found %d kube-apiserver builds under bin/k8s; run `make envtest-bins` or set KUBEBUILDER_ASSETS", len(matches))
	}
	return filepath.Dir(matches[0]), nil
}
