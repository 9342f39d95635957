package admin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/openshift/oadp-imagestreams-backup/internal/admin"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

func put(t *testing.T, s *imagestore.Store, mt types.MediaType, b []byte) v1.Descriptor {
	d := v1.Descriptor{MediaType: mt, Size: int64(len(b)), Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(b))}}
	if _, err := s.PutBlob(context.Background(), d, func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCommandsOnS3 runs ls, verify, export and gc against a backup in a real S3 server, with
// the flags an operator would pass.
func TestCommandsOnS3(t *testing.T) {
	ctx := context.Background()
	s3 := peers.StartS3(t, "velero")
	creds := filepath.Join(t.TempDir(), "cloud")
	if err := os.WriteFile(creds, s3.CredentialsFile("default"), 0o600); err != nil {
		t.Fatal(err)
	}
	loc := []string{"--provider", "aws", "--bucket", "velero", "--prefix", "cluster-a",
		"--config", "region=" + s3.Region + ",s3Url=" + s3.URL + ",s3ForcePathStyle=true", "--credentials-file", creds}

	b, err := bucket.Open(ctx, bucket.Config{Provider: "aws", Bucket: "velero", Credentials: s3.CredentialsFile("default"),
		Config: map[string]string{"region": s3.Region, "s3Url": s3.URL, "s3ForcePathStyle": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	store := imagestore.New(b, "cluster-a")
	defer store.Close()
	layer := put(t, store, types.OCILayer, []byte("layer"))
	config := put(t, store, types.OCIConfigJSON, []byte("{}"))
	manifest := put(t, store, types.OCIManifestSchema1, fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		types.OCIManifestSchema1, config.MediaType, config.Digest, config.Size, layer.MediaType, layer.Digest, layer.Size))
	orphan := put(t, store, types.OCILayer, []byte("orphan"))
	if err := store.WriteIndex(ctx, "b1", []imagestore.Entry{{Namespace: "app", ImageStream: "web", Tags: []string{"latest"}, Descriptor: manifest}}, imagestore.IndexMeta{}); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "layout")
	tests := []struct {
		cmd  string
		args []string
		want string
	}{
		{"ls", nil, "b1\t1 images"},
		{"verify", []string{"--backup", "b1"}, "backup b1 verified: 1 images, 3 blobs"},
		{"export", []string{"--backup", "b1", "--dir", dir}, "backup b1 exported to " + dir},
		{"gc", nil, "kept 3 blobs of 1 backups, deleted 1 blobs (6 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			var out bytes.Buffer
			if err := admin.Run(ctx, tt.cmd, append(append([]string{}, loc...), tt.args...), &out); err != nil {
				t.Fatalf("%s: %v", tt.cmd, err)
			}
			if !strings.Contains(out.String(), tt.want) {
				t.Errorf("%s printed %q, want %q", tt.cmd, out.String(), tt.want)
			}
		})
	}
	if ok, _ := store.Has(ctx, orphan.Digest); ok {
		t.Errorf("gc kept a blob no backup references")
	}
	if err := admin.Run(ctx, "verify", loc, io.Discard); err == nil || !strings.Contains(err.Error(), "--backup is required") {
		t.Errorf("verify without --backup = %v", err)
	}
	if err := admin.Run(ctx, "verify", append(loc, "--backup", "nope"), io.Discard); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("verify of a missing backup = %v", err)
	}
}
