package copier_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/test/faults"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

// refusal is how a bucket refuses writes once it is read-only or full.
type refusal struct {
	name    string
	reply   *faults.Reply
	wantErr error
	words   string // what the message must say
}

// TestBackupIntoABucketThatStopsTakingWrites backs up one image, then a second into an S3 bucket
// that turns read-only, or full, partway through the second's 17 MiB multipart upload. The
// second backup must fail saying why, write no index, and leave nothing that garbage
// collection does not remove: no unfinished multipart upload, and, once collected, no blob
// but those of the complete backup.
func TestBackupIntoABucketThatStopsTakingWrites(t *testing.T) {
	for _, tt := range []refusal{
		{"read-only", faults.S3Error(http.StatusForbidden, "AccessDenied", "Access Denied"), bucket.ErrDenied, "denied access"},
		{"full (MinIO)", faults.S3Error(http.StatusInsufficientStorage, "XMinioStorageFull", "Storage backend has reached its minimum free drive threshold."), bucket.ErrNoSpace, "out of space"},
		{"over quota (Ceph RGW)", faults.S3Error(http.StatusForbidden, "QuotaExceeded", ""), bucket.ErrNoSpace, "out of space"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			reg := peers.StartRegistry(t, peers.NoAuth)
			s3srv := peers.StartS3(t, "velero")
			// Writes (PUT and POST; not DELETE, which aborts uploads) pass until the test sets
			// a limit on the bytes written.
			var limit atomic.Int64
			limit.Store(math.MaxInt64)
			proxy := faults.Start(t, strings.TrimPrefix(s3srv.URL, "http://"), faults.Config{
				Intercept: func(r *http.Request, so faults.Counts) *faults.Reply {
					if (r.Method == http.MethodPut || r.Method == http.MethodPost) && so.BytesUp >= limit.Load() {
						return tt.reply
					}
					return nil
				},
			})
			store := imagestore.New(s3Bucket(t, s3srv, proxy.URL), "cluster-a")
			t.Cleanup(func() { store.Close() })
			direct := s3Bucket(t, s3srv, s3srv.URL)
			t.Cleanup(func() { direct.Close() })
			refs := pushImages(t, reg.Host, bigImages(t, 1))

			complete := backUp(ctx, t, store, "complete", refs[1])
			if complete != nil {
				t.Fatalf("backup before the bucket stops taking writes: %v", complete)
			}
			// One 8 MiB part more, and the bucket refuses.
			limit.Store(proxy.Counts().BytesUp + 9<<20)
			err := backUp(ctx, t, store, "cut-off", refs[0])
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.words) {
				t.Fatalf("backup error = %v, want %v saying %q", err, tt.wantErr, tt.words)
			}
			t.Logf("%s after %d MiB: %v", tt.name, limit.Load()>>20, err)
			if proxy.Counts().Intercepted == 0 {
				t.Fatal("the bucket never refused a write")
			}
			assertCollectable(ctx, t, imagestore.New(direct, "cluster-a"), "cut-off", uniqueBlobs(t, must[v1.Image](t)(remote.Image(refs[1]))))

			// No multipart upload is left half done: GC cannot see those.
			var client *s3.Client
			if !direct.As(&client) {
				t.Fatal("not an S3 bucket")
			}
			out, err := client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String("velero")})
			if err != nil {
				t.Fatal(err)
			}
			if len(out.Uploads) != 0 {
				t.Errorf("%d multipart uploads left unfinished, first %s", len(out.Uploads), aws.ToString(out.Uploads[0].Key))
			}
		})
	}
}

// TestBackupOntoAFullDisk backs up into a file bucket on a 12 MiB tmpfs, where the second
// backup's 17 MiB layer meets ENOSPC. It needs root to mount, and skips without.
func TestBackupOntoAFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m,mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	// Registered after TempDir's cleanup, so it runs before the directory is removed.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	ctx := context.Background()
	reg := peers.StartRegistry(t, peers.NoAuth)
	refs := pushImages(t, reg.Host, bigImages(t, 1))
	b, err := bucket.Open(ctx, bucket.Config{Provider: "file", Bucket: dir})
	if err != nil {
		t.Fatal(err)
	}
	store := imagestore.New(b, "cluster-a")
	t.Cleanup(func() { store.Close() })

	if err := backUp(ctx, t, store, "complete", refs[1]); err != nil {
		t.Fatalf("backup that fits: %v", err)
	}
	err = backUp(ctx, t, store, "cut-off", refs[0])
	if !errors.Is(err, bucket.ErrNoSpace) || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("backup error = %v, want bucket.ErrNoSpace saying no space left on device", err)
	}
	t.Logf("%v", err)
	assertCollectable(ctx, t, store, "cut-off", uniqueBlobs(t, must[v1.Image](t)(remote.Image(refs[1]))))
	// Nothing but the store's own files: no temporary file of the write that failed.
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.Contains(path, "/plugins/imagestreams/") {
			t.Errorf("left behind: %s", path)
		}
		if err == nil && strings.HasSuffix(path, ".tmp") {
			t.Errorf("left behind: %s", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func pushImages(t *testing.T, host string, images []v1.Image) []name.Digest {
	var refs []name.Digest
	for i, img := range images {
		repo := must[name.Repository](t)(name.NewRepository(fmt.Sprintf("%s/app/big-%d", host, i)))
		ref := repo.Digest(must[v1.Hash](t)(img.Digest()).String())
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	return refs
}

// backUp does what the backup controller does: mark the backup in progress, copy, then write
// the index, or on failure remove the marker and write none.
func backUp(ctx context.Context, t *testing.T, store *imagestore.Store, backup string, ref name.Digest) error {
	t.Helper()
	pending, err := store.Begin(ctx, backup, "", 0)
	if err != nil {
		return err
	}
	c, err := copier.New(store, copier.Options{})
	if err != nil {
		t.Fatal(err)
	}
	desc, err := c.Copy(ctx, ref)
	if err != nil {
		if aerr := pending.Abort(ctx); aerr != nil {
			t.Errorf("aborting backup %s: %v", backup, aerr)
		}
		return err
	}
	return pending.Commit(ctx, []imagestore.Entry{{Namespace: "app", ImageStream: "img", Descriptor: desc}}, imagestore.IndexMeta{})
}

// assertCollectable checks that the failed backup wrote no index and that GC then leaves
// exactly the blobs of the complete backups, want.
func assertCollectable(ctx context.Context, t *testing.T, store *imagestore.Store, failed string, want map[v1.Hash]int64) {
	t.Helper()
	if _, err := store.ReadIndex(ctx, failed); !errors.Is(err, imagestore.ErrNotFound) {
		t.Errorf("index of the failed backup: %v, want %v", err, imagestore.ErrNotFound)
	}
	rep, err := store.GC(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deferred {
		t.Fatalf("GC deferred to backups still marked in progress: %v", rep.Running)
	}
	if rep.Kept != len(want) {
		t.Errorf("GC kept %d blobs and deleted %d, want the %d of the complete backup", rep.Kept, rep.Deleted, len(want))
	}
	for h := range want {
		if ok, err := store.Has(ctx, h); err != nil || !ok {
			t.Errorf("blob %s of the complete backup: present %v, %v", h, ok, err)
		}
	}
	if _, err := store.Verify(ctx, "complete"); err != nil {
		t.Errorf("the complete backup does not verify after GC: %v", err)
	}
}
