package copier_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"gocloud.dev/blob"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/test/faults"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

// s3Bucket opens the bucket "velero" of s3 at endpoint, which may be a proxy in front of it.
func s3Bucket(t *testing.T, s3 *peers.S3, endpoint string) *blob.Bucket {
	t.Helper()
	b, err := bucket.Open(context.Background(), bucket.Config{
		Provider: "aws", Bucket: "velero", Credentials: s3.CredentialsFile("default"),
		Config: map[string]string{"region": s3.Region, "s3Url": endpoint, "s3ForcePathStyle": "true"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bigImages returns two images whose bytes derive from seed: one with a 17 MiB layer, which the
// store writes to S3 as a multipart upload, and both with a 6 MiB layer, written in one PUT.
func bigImages(t *testing.T, seed uint64) []v1.Image {
	rnd := rand.New(rand.NewPCG(seed, seed))
	layer := func(size int) v1.Layer {
		b := make([]byte, size)
		for i := 0; i < size; i += 8 {
			v := rnd.Uint64()
			for j := 0; j < 8 && i+j < size; j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		return static.NewLayer(b, types.OCIUncompressedLayer)
	}
	shared := layer(6 << 20)
	return []v1.Image{
		must[v1.Image](t)(mutate.AppendLayers(empty.Image, shared, layer(17<<20), layer(64<<10))),
		must[v1.Image](t)(mutate.AppendLayers(empty.Image, shared, layer(64<<10))),
	}
}

func isS3Put(r *http.Request) bool { return r.Method == http.MethodPut }

// TestBackupToAFaultyS3 backs images up into the real versitygw S3 server through a proxy that
// fails a tenth of all requests with 500 or 503 and cuts a twentieth of object and part
// uploads partway through their body. The backup must complete with every blob intact.
func TestBackupToAFaultyS3(t *testing.T) {
	ctx := context.Background()
	seed := faults.SeedFromEnv(t, 4)
	reg := peers.StartRegistry(t, peers.NoAuth)
	s3 := peers.StartS3(t, "velero")
	var parts atomic.Int64
	proxy := faults.Start(t, strings.TrimPrefix(s3.URL, "http://"), faults.Config{
		ErrorRate: 0.10, ResetRate: 0.05, ResetMatch: isS3Put, Latency: 2 * time.Millisecond, Seed: seed,
		Observe: func(r *http.Request) {
			if r.Method == http.MethodPut && r.URL.Query().Has("partNumber") {
				parts.Add(1)
			}
		},
	})

	images := bigImages(t, seed)
	var refs []name.Digest
	for i, img := range images {
		repo := must[name.Repository](t)(name.NewRepository(fmt.Sprintf("%s/app/big-%d", reg.Host, i)))
		ref := repo.Digest(must[v1.Hash](t)(img.Digest()).String())
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}

	store := imagestore.New(s3Bucket(t, s3, proxy.URL), "cluster-a")
	t.Cleanup(func() { store.Close() })
	c, err := copier.New(store, copier.Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var entries []imagestore.Entry
	for i, ref := range refs {
		desc, err := c.Copy(ctx, ref)
		if err != nil {
			t.Fatalf("backup of %s through %s: %v", ref, proxy.Counts(), err)
		}
		entries = append(entries, imagestore.Entry{Namespace: "app", ImageStream: fmt.Sprintf("big-%d", i), Descriptor: desc})
	}
	if err := store.WriteIndex(ctx, "faulty", entries, imagestore.IndexMeta{}); err != nil {
		t.Fatalf("writing the index through %s: %v", proxy.Counts(), err)
	}
	t.Logf("backup of %d MiB in %v through %s; %d part uploads", c.Stats().BytesUploaded>>20, time.Since(start).Round(time.Millisecond), proxy.Counts(), parts.Load())

	// Verify straight from the server, every byte.
	direct := imagestore.New(s3Bucket(t, s3, s3.URL), "cluster-a")
	t.Cleanup(func() { direct.Close() })
	rep, err := direct.Verify(ctx, "faulty")
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	want := uniqueBlobs(t, images[0], images[1])
	if rep.Blobs != len(want) {
		t.Errorf("verify read %d blobs, want %d", rep.Blobs, len(want))
	}
	if parts.Load() < 2 {
		t.Errorf("the store sent %d part uploads; the test needs a blob large enough for a multipart upload", parts.Load())
	}
	if got := proxy.Counts(); got.Errors == 0 || got.UploadResets == 0 {
		t.Errorf("the backup met no errors or no upload resets (%s): the test needs another seed", got)
	}
}
