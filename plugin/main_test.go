package main

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The plugin runs inside Velero for every backup: it must stay small and must not carry the
// copy engine or any object store SDK (as go-containerregistry's depcheck tests keep their
// packages lean).
func TestPluginLinksNoCopyEngine(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %v", deps)
	}
	for _, d := range deps {
		for _, banned := range []string{
			"gocloud.dev/",
			"github.com/aws/", "cloud.google.com/", "github.com/Azure/",
			"github.com/google/go-containerregistry/pkg/v1/remote",
			"github.com/openshift/oadp-imagestreams-backup/internal/copier",
			"github.com/openshift/oadp-imagestreams-backup/internal/imagestore",
			"github.com/openshift/oadp-imagestreams-backup/internal/bucket",
		} {
			if strings.HasPrefix(d, banned) {
				t.Errorf("the plugin depends on %s", d)
			}
		}
	}
}

func TestInitializerFailsWithoutACluster(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // no in-cluster config either
	init := withClient(func(logrus.FieldLogger, client.Client) any { return "action" })
	if a, err := init(logrus.New()); err == nil {
		t.Fatalf("initializer = %v without any kubeconfig, want an error", a)
	}
}

type recordingFlusher struct {
	flushed int
	err     error
}

func (f *recordingFlusher) Flush(context.Context) error {
	f.flushed++
	return f.err
}

// When Velero stops the plugin, main flushes every action it created, even after one of them
// failed to write everything.
func TestFlushWritesEveryHeldAction(t *testing.T) {
	var fs flushers
	failed := hold(&fs, &recordingFlusher{err: errors.New("refused")})
	ok := hold(&fs, &recordingFlusher{})
	if err := fs.flush(context.Background()); err == nil || err.Error() != "refused" {
		t.Errorf("flush = %v, want the failed action's error", err)
	}
	if failed.flushed != 1 || ok.flushed != 1 {
		t.Errorf("flushed %d and %d times, want each action once", failed.flushed, ok.flushed)
	}
}
