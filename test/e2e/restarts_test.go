//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/test/stack"
)

// bigImage is an image of layers of layerMiB MiB of incompressible bytes from seed.
func bigImage(t *testing.T, seed uint64, layers, layerMiB int) remote.Taggable {
	t.Helper()
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	img := empty.Image
	for range layers {
		b := make([]byte, layerMiB<<20)
		_, _ = rng.Read(b)
		img = must(mutate.AppendLayers(img, static.NewLayer(b, types.OCILayer)))
	}
	return mutate.MediaType(img, types.OCIManifestSchema1)
}

func veleroBackup(t *testing.T, name string) *velerov1.Backup {
	t.Helper()
	vb := &velerov1.Backup{}
	if err := st.Env.Client.Get(context.Background(), client.ObjectKey{Namespace: stack.VeleroNamespace, Name: name}, vb); err != nil {
		t.Fatal(err)
	}
	return vb
}

// The worker is SIGKILLed five times, at random points, while it stores 2 GiB; each time a new
// one starts. The Velero backup completes, every blob verifies, and what was sent to S3 is the
// unique bytes plus at most the blobs in flight at each kill.
func TestWorkerKilledFiveTimesDuringABackup(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "big"}}); err != nil {
		t.Fatal(err)
	}
	const images, layers, layerMiB = 8, 4, 64
	tags := map[string]remote.Taggable{}
	for i := range images {
		tags[fmt.Sprintf("v%d", i)] = bigImage(t, uint64(i+1), layers, layerMiB)
	}
	pushImageStream(t, "big", "data", tags, nil)
	clear(tags) // let the layers' memory go
	unique := int64(images * layers * layerMiB << 20)

	sentBefore := st.BytesSentToS3()
	st.Run("backup", "create", "killed", "--include-namespaces", "big")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var peak int64
	for k := 1; k <= 5; k++ {
		// Somewhere in the k-th sixth of the unique bytes, counting everything sent so far.
		at := sentBefore + unique*int64(k)/6 + rng.Int64N(unique/6)
		st.WaitFor(5*time.Minute, fmt.Sprintf("upload past %d bytes before kill %d", at, k), func() bool { return st.BytesSentToS3() >= at })
		peak = max(peak, st.KillWorker())
		t.Logf("kill %d after %d MiB sent", k, (st.BytesSentToS3()-sentBefore)>>20)
		st.StartWorker()
	}
	st.WaitFor(10*time.Minute, "the Velero backup to end", func() bool {
		p := veleroBackup(t, "killed").Status.Phase
		return p == velerov1.BackupPhaseCompleted || p == velerov1.BackupPhasePartiallyFailed || p == velerov1.BackupPhaseFailed
	})
	if p := veleroBackup(t, "killed").Status.Phase; p != velerov1.BackupPhaseCompleted {
		t.Fatalf("Velero backup %s after the worker was killed 5 times, want Completed", p)
	}
	sent := st.BytesSentToS3() - sentBefore
	t.Logf("sent to S3: %d MiB for %d MiB of unique blobs (%.2fx); peak worker RSS before a kill %d MiB",
		sent>>20, unique>>20, float64(sent)/float64(unique), peak>>20)
	// Each kill loses at most the blobs in flight: --jobs 4 of them.
	if limit := unique + 5*4*layerMiB<<20 + 64<<20; sent > limit {
		t.Errorf("sent %d bytes to S3, more than the unique %d plus the blobs in flight at 5 kills", sent, unique)
	}
	store := st.Store()
	defer store.Close()
	rep, err := store.Verify(ctx, "killed")
	if err != nil || rep.Images != images || rep.Bytes < unique {
		t.Fatalf("verify after the kills: %+v, %v; want %d images and %d bytes", rep, err, images, unique)
	}
	// Nothing is left marked in progress: a collection sweeps and deletes no referenced blob.
	gc, err := store.GC(ctx, 0)
	if err != nil || gc.Deferred || gc.Deleted != 0 {
		t.Errorf("GC after the backup: %+v, %v; want it to run and delete nothing", gc, err)
	}
}

// Velero restarts while a backup waits for our operations: the restarted server resumes them
// from the operations it stored, and the backup completes with one ImageStreamsBackup and no
// backup left marked in progress.
func TestVeleroRestartedWhileWaitingForPluginOperations(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "restart"}}); err != nil {
		t.Fatal(err)
	}
	pushImageStream(t, "restart", "web", map[string]remote.Taggable{"latest": bigImage(t, 99, 2, 1)}, nil)
	// Without a worker the operations stay open.
	st.KillWorker()
	st.Run("backup", "create", "restarted", "--include-namespaces", "restart")
	st.WaitFor(time.Minute, "the backup waiting for plugin operations", func() bool {
		return veleroBackup(t, "restarted").Status.Phase == velerov1.BackupPhaseWaitingForPluginOperations
	})
	st.StopVelero()
	st.StartVelero(true)
	st.StartWorker()
	st.WaitFor(3*time.Minute, "the Velero backup to end", func() bool {
		p := veleroBackup(t, "restarted").Status.Phase
		return p == velerov1.BackupPhaseCompleted || p == velerov1.BackupPhasePartiallyFailed || p == velerov1.BackupPhaseFailed
	})
	if p := veleroBackup(t, "restarted").Status.Phase; p != velerov1.BackupPhaseCompleted {
		t.Fatalf("Velero backup %s after velero restarted, want Completed:\n%s", p, st.Run("backup", "describe", "restarted", "--details"))
	}
	list := &oadpv1alpha1.ImageStreamsBackupList{}
	if err := c.List(ctx, list, client.InNamespace(stack.VeleroNamespace), client.MatchingLabels{"velero.io/backup-name": "restarted"}); err != nil ||
		len(list.Items) != 1 || list.Items[0].Status.Phase != oadpv1alpha1.BackupPhaseCompleted {
		t.Fatalf("ImageStreamsBackups of the restarted backup: %+v (%v), want one Completed", list.Items, err)
	}
	store := st.Store()
	defer store.Close()
	if rep, err := store.Verify(ctx, "restarted"); err != nil || rep.Images != 1 {
		t.Errorf("verify: %+v, %v", rep, err)
	}
	if gc, err := store.GC(ctx, 0); err != nil || gc.Deferred {
		t.Errorf("GC after the backup: %+v, %v; want no backup left in progress", gc, err)
	}
}
