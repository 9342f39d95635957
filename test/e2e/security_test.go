//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	tarball := filepath.Join(t.TempDir(), "secure.tar.gz")
	st.Run("backup", "download", "secure", "-o", tarball)

	contents := map[string][]byte{}
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	sawISB := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		contents["backup:"+h.Name] = b
		sawISB = sawISB || strings.Contains(h.Name, "imagestreamsbackups.oadp.openshift.io")
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
