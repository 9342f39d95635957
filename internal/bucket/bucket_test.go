package bucket_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

func s3Config(s *peers.S3, profile string) bucket.Config {
	return bucket.Config{
		Provider:    "velero.io/aws",
		Bucket:      "velero",
		Config:      map[string]string{"region": s.Region, "s3Url": s.URL, "s3ForcePathStyle": "true", "profile": profile},
		Credentials: s.CredentialsFile(profile),
	}
}

// TestStoreOnS3 runs the store against a real S3 server the way a Velero AWS location
// describes it: path-style requests to a custom endpoint, credentials from a shared
// credentials file under a named profile.
func TestStoreOnS3(t *testing.T) {
	ctx := context.Background()
	s3 := peers.StartS3(t, "velero")
	b, err := bucket.Open(ctx, s3Config(s3, "backups"))
	if err != nil {
		t.Fatal(err)
	}
	store := imagestore.New(b, "cluster-a")
	defer store.Close()

	// 20 MiB: several multipart parts.
	data := make([]byte, 20<<20)
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)
	desc := v1.Descriptor{Size: int64(len(data)), Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}}
	open := func(b []byte) func(context.Context) (io.ReadCloser, error) {
		return func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}

	// A copy that goes wrong on the last byte leaves nothing behind: the multipart upload is
	// aborted, not completed.
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	var mismatch *imagestore.DigestMismatchError
	if _, err := store.PutBlob(ctx, desc, open(bad)); !errors.As(err, &mismatch) {
		t.Fatalf("PutBlob of corrupt bytes = %v, want a digest mismatch", err)
	}
	if ok, err := store.Has(ctx, desc.Digest); err != nil || ok {
		t.Fatalf("after a refused write Has = %v, %v; want false", ok, err)
	}

	if wrote, err := store.PutBlob(ctx, desc, open(data)); err != nil || !wrote {
		t.Fatalf("PutBlob = %v, %v", wrote, err)
	}
	if wrote, err := store.PutBlob(ctx, desc, open(data)); err != nil || wrote {
		t.Fatalf("second PutBlob = %v, %v; want it skipped", wrote, err)
	}
	got, err := store.ReadBlob(ctx, desc.Digest, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadBlob: %v (equal %v)", err, bytes.Equal(got, data))
	}
	if _, err := os.Stat(filepath.Join(s3.Dir, "velero", "cluster-a", "plugins", "imagestreams", "blobs", "sha256", desc.Digest.Hex)); err != nil {
		t.Errorf("blob is not where the layout puts it: %v", err)
	}
}

func TestOpenRefusesBadLocations(t *testing.T) {
	ctx := context.Background()
	s3 := peers.StartS3(t, "velero")
	good := s3Config(s3, "default")
	tests := []struct {
		name string
		cfg  bucket.Config
		want string
	}{
		{"an unknown provider", bucket.Config{Provider: "ftp", Bucket: "b"}, `unknown object store provider "ftp"`},
		{"no bucket", bucket.Config{Provider: "aws"}, "names no bucket"},
		{"aws without region or endpoint", bucket.Config{Provider: "aws", Bucket: "b"}, "config region is required"},
		{"a path-style flag that is not a boolean", func() bucket.Config {
			c := good
			c.Config = map[string]string{"region": "r", "s3ForcePathStyle": "yes please"}
			return c
		}(), `config s3ForcePathStyle: "yes please" is not a boolean`},
		{"credentials without the profile", func() bucket.Config {
			c := good
			c.Config = map[string]string{"region": "r", "profile": "missing"}
			return c
		}(), `profile "missing"`},
		{"malformed credentials", func() bucket.Config { c := good; c.Credentials = []byte("[default]\nnot a key file"); return c }(), "loading AWS credentials"},
		{"a CA bundle without certificates", func() bucket.Config { c := good; c.CACert = []byte("not PEM"); return c }(), "CA bundle holds no PEM certificate"},
		{"azure without storage account", bucket.Config{Provider: "azure", Bucket: "b"}, "config storageAccount is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := bucket.Open(ctx, tt.cfg)
			if err == nil {
				b.Close()
				t.Fatalf("Open accepted it; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open error = %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), s3.SecretKey) {
				t.Errorf("error reveals the secret key: %v", err)
			}
		})
	}
}

func TestWrongSecretIsRefusedByTheServer(t *testing.T) {
	ctx := context.Background()
	s3 := peers.StartS3(t, "velero")
	cfg := s3Config(s3, "default")
	cfg.Credentials = []byte(fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = wrong\n", s3.AccessKey))
	b, err := bucket.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Exists(ctx, "anything"); err == nil {
		t.Fatal("a wrong secret was accepted")
	}
}

func TestFileProviderWritesNoSidecars(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := bucket.Open(ctx, bucket.Config{Provider: "file", Bucket: filepath.Join(dir, "store")})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.WriteAll(ctx, "k", []byte("v"), nil); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "store"))
	if len(entries) != 1 || entries[0].Name() != "k" {
		t.Errorf("file bucket holds %v, want only k", entries)
	}
}
