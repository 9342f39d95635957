//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/test/stack"
)

// No credential of the object store or the registry reaches the Velero backup's contents (our
// ImageStreamsBackup is among them), velero's log with our plugin's lines, or the worker's log.
func TestNoCredentialInTheVeleroBackupOrTheLogs(t *testing.T) {
	ctx := context.Background()
	if err := st.Env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "secure"}}); err != nil {
		t.Fatal(err)
	}
	pushImageStream(t, "secure", "web", map[string]remote.Taggable{"latest": must(random.Image(16<<10, 1))}, nil)
	st.Run("backup", "create", "secure", "--include-namespaces", "secure", "--wait")
	contents := tarballEntries(t, "secure")
	sawISB := false
	for name := range contents {
		sawISB = sawISB || strings.Contains(name, "imagestreamsbackups.oadp.openshift.io")
	}
	if !sawISB {
		t.Errorf("the Velero backup holds no ImageStreamsBackup; the test would prove nothing about it")
	}
	for _, log := range []string{"velero-server.log", "worker.log"} {
		b, err := os.ReadFile(filepath.Join(st.Home(), log))
		if err != nil {
			t.Fatal(err)
		}
		contents[log] = b
	}
	for what, secret := range map[string]string{"S3 secret key": st.S3.SecretKey, "registry password": st.Registry.Password} {
		for where, b := range contents {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("the %s appears in %s", what, where)
			}
		}
	}
}

// tarballEntries downloads a Velero backup's tarball and returns its files by name.
func tarballEntries(t *testing.T, backup string) map[string][]byte {
	t.Helper()
	tarball := filepath.Join(t.TempDir(), backup+".tar.gz")
	st.Run("backup", "download", backup, "-o", tarball)
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	contents := map[string][]byte{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return contents
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		contents["backup:"+h.Name] = b
	}
}

// The worker sends its registry token only to the internal registry: an ImageStreamsBackup
// naming an image of another registry, one that asks for credentials, fails that image by name
// and the other registry hears nothing from the worker.
func TestAForeignRegistryGetsNoCredentials(t *testing.T) {
	ctx := context.Background()
	var requests, withCredentials atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Header.Get("Authorization") != "" {
			withCredentials.Add(1)
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="evil"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer evil.Close()
	if err := st.Env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "foreign"}}); err != nil {
		t.Fatal(err)
	}
	digests := pushImageStream(t, "foreign", "web", map[string]remote.Taggable{"latest": must(random.Image(16<<10, 1))}, nil)
	foreign := strings.TrimPrefix(evil.URL, "http://") + "/evil/x@sha256:" + strings.Repeat("a", 64)
	isb := &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: stack.VeleroNamespace, Name: "foreign"},
		Spec: oadpv1alpha1.ImageStreamsBackupSpec{StartBackup: true, ImageStreams: []oadpv1alpha1.ImageStream{{Name: "web", Namespace: "foreign",
			DockerImageReferences: []oadpv1alpha1.DockerImageReference{
				{DockerImageReference: st.Registry.Host + "/foreign/web@" + digests["latest"], Tags: []string{"latest"}},
				{DockerImageReference: foreign, Tags: []string{"evil"}}}}}}}
	if err := st.Env.Client.Create(ctx, isb); err != nil {
		t.Fatal(err)
	}
	st.WaitFor(time.Minute, "the backup PartiallyFailed", func() bool {
		return st.Env.Client.Get(ctx, client.ObjectKeyFromObject(isb), isb) == nil && isb.Status.Phase == oadpv1alpha1.BackupPhasePartiallyFailed
	})
	if len(isb.Status.Failures) != 1 || isb.Status.Failures[0].Reason != "ExternalImage" {
		t.Errorf("failures %+v, want the foreign image refused as ExternalImage", isb.Status.Failures)
	}
	if requests.Load() != 0 || withCredentials.Load() != 0 {
		t.Errorf("the foreign registry got %d requests, %d with credentials; want none", requests.Load(), withCredentials.Load())
	}
}
