package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// controllerManager is a running kube-controller-manager.
type controllerManager struct {
	cmd    *exec.Cmd
	dir    string
	exited chan struct{}
}

// startControllerManager runs kube-controller-manager from assets with the garbage collector and
// the namespace controller only, and returns once both have shown they work.
func startControllerManager(e *Environment, assets string) (*controllerManager, error) {
	dir, err := os.MkdirTemp("", "kube-controller-manager-")
	if err != nil {
		return nil, err
	}
	kubeconfig, err := e.AdminKubeconfig()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "kube-controller-manager.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(assets, "kube-controller-manager"), "--kubeconfig", path,
		"--controllers=garbagecollector,namespace", "--leader-elect=false", "--use-service-account-credentials=false",
		"--secure-port=0", "--concurrent-gc-syncs=5", "--namespace-sync-period=10s")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting kube-controller-manager (build it with `make envtest-bins`): %w", err)
	}
	k := &controllerManager{cmd: cmd, dir: dir, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logFile.Close(); close(k.exited) }()
	if err := k.ready(e.Client); err != nil {
		k.stop()
		log, _ := os.ReadFile(logFile.Name())
		return nil, fmt.Errorf("kube-controller-manager: %w\n%s", err, tail(log, 4000))
	}
	return k, nil
}

// ready waits until the garbage collector has deleted a dependent of a deleted owner and the
// namespace controller has removed a deleted namespace.
func (k *controllerManager) ready(c client.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "kcm-ready-"}}
	if err := c.Create(ctx, ns); err != nil {
		return err
	}
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "owner"}}
	if err := c.Create(ctx, owner); err != nil {
		return err
	}
	dependent := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "dependent", OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID, BlockOwnerDeletion: ptr.To(true)}}}}
	if err := c.Create(ctx, dependent); err != nil {
		return err
	}
	if err := c.Delete(ctx, owner); err != nil {
		return err
	}
	gone := func(obj client.Object) wait.ConditionWithContextFunc {
		return func(ctx context.Context) (bool, error) {
			select {
			case <-k.exited:
				return false, fmt.Errorf("exited")
			default:
			}
			err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		}
	}
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, gone(dependent)); err != nil {
		return fmt.Errorf("the garbage collector did not delete a dependent: %w", err)
	}
	if err := c.Delete(ctx, ns); err != nil {
		return err
	}
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, gone(ns)); err != nil {
		return fmt.Errorf("the namespace controller did not remove a deleted namespace: %w", err)
	}
	return nil
}

func (k *controllerManager) stop() {
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(10 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
	os.RemoveAll(k.dir)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
