package controller_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"gocloud.dev/blob"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/test/faults"
)

// completed creates a started backup of the images, each as the imagestream its repository
// names, and waits until it is stored.
func (c *cluster) completed(backup, bsl string, images ...string) *oadpv1alpha1.ImageStreamsBackup {
	c.t.Helper()
	var streams []oadpv1alpha1.ImageStream
	for _, r := range images {
		repo := must(name.NewDigest(r)).Context().RepositoryStr() // <namespace>/<imagestream>
		ns, is, _ := strings.Cut(repo, "/")
		streams = append(streams, oadpv1alpha1.ImageStream{Name: is, Namespace: ns, DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r, "latest")}})
	}
	isb := newBackup(c.ns, backup, streams...)
	if bsl != "" {
		isb.Spec.BackupLocation = &oadpv1alpha1.BackupLocation{Name: bsl}
	}
	c.create(isb)
	return waitFor(c.t, isb, time.Minute, backup+" Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))
}

// locationThrough adds BackupStorageLocation bsl, whose requests go through a faults proxy
// to the S3 server, under prefix bsl.
func (c *cluster) locationThrough(bsl string, cfg faults.Config) {
	c.t.Helper()
	proxy := faults.Start(c.t, strings.TrimPrefix(c.s3.URL, "http://"), cfg)
	c.create(&velerov1.BackupStorageLocation{
		ObjectMeta: metav1.ObjectMeta{Name: bsl, Namespace: c.ns},
		Spec: velerov1.BackupStorageLocationSpec{Provider: "aws",
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: "velero", Prefix: bsl}},
			Config:      map[string]string{"region": c.s3.Region, "s3Url": proxy.URL, "s3ForcePathStyle": "true"}},
	})
}

func isGone(*oadpv1alpha1.ImageStreamsBackup) bool { return false }

// Deleting an ImageStreamsBackup, or its whole namespace, is not a request to delete what it
// stored: every stored backup stays, the namespace goes, and a finalizer left by an earlier
// version is removed rather than obeyed. With the worker running and with it stopped.
func TestDeletingObjectsNeverDeletesStoredImages(t *testing.T) {
	for desc, running := range map[string]bool{"the worker running": true, "the worker stopped": false} {
		t.Run(desc, func(t *testing.T) {
			ctx := context.Background()
			c := newCluster(t)
			base := layerList(t, 2)
			r1, r2 := c.push("app/one", imageOn(t, base), c.registry.Host), c.push("app/two", imageOn(t, base), c.registry.Host)
			stop := c.startWorker(c.workerOptions())
			b1, b2 := c.completed("b1", "", r1), c.completed("b2", "", r2)
			// A slow third one is still copying when the namespace goes.
			proxy, b3, _ := slowBackup(t, c, "b3")
			o := c.workerOptions()
			o.Registry.Host = proxy.host()
			o.StaleAfter = 2 * time.Second
			stop()
			stop = c.startWorker(o)
			c.create(b3)
			waitFor(t, b3, 30*time.Second, "b3 InProgress", backupPhase(oadpv1alpha1.BackupPhaseInProgress))
			// An ImageStreamsBackup from an earlier version carries the old finalizer; the
			// worker takes it off.
			b2.Finalizers = []string{"oadp.openshift.io/imagestreams-backup"}
			if err := env.Client.Update(ctx, b2); err != nil {
				t.Fatal(err)
			}
			waitFor(t, b2, 30*time.Second, "the old finalizer removed", func(b *oadpv1alpha1.ImageStreamsBackup) bool { return len(b.Finalizers) == 0 })
			if !running {
				stop()
			}

			if err := env.Client.Delete(ctx, b1); err != nil {
				t.Fatal(err)
			}
			if err := env.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.ns}}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.ns}}, 2*time.Minute, "the namespace gone", func(*corev1.Namespace) bool { return false }, allowGone)

			store := c.store()
			for _, name := range []string{"b1", "b2"} {
				if _, err := store.Verify(ctx, name); err != nil {
					t.Errorf("stored backup %s after its ImageStreamsBackup and namespace were deleted: %v", name, err)
				}
			}
			// b3 stopped with the worker, or went with its namespace, or completed meanwhile;
			// an in-progress marker it left holds the collection off until it is stale.
			var rep imagestore.GCReport
			deadline := time.Now().Add(5 * o.StaleAfter)
			for {
				var err error
				if rep, err = store.GC(ctx, o.StaleAfter); err != nil {
					t.Fatal(err)
				}
				if !rep.Deferred || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if rep.Deferred || rep.Backups < 2 {
				t.Errorf("GC = %+v; want it to run once b3's marker is stale, and keep the stored backups", rep)
			}
			for _, name := range []string{"b1", "b2"} {
				if _, err := store.Verify(ctx, name); err != nil {
					t.Errorf("stored backup %s after a collection: %v", name, err)
				}
			}
		})
	}
}

func TestDeletingStoredImagesKeepsAnIndexTheBackupDidNotWrite(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	r := c.push("app/one", imageOn(t, nil), c.registry.Host)
	c.startWorker(c.workerOptions())
	orig := c.completed("mine", "", r)
	// A person's ImageStreamsBackup of the same name in another cluster (here: made after the
	// first was deleted, which kept its images) asks for the stored images to be deleted.
	if err := env.Client.Delete(ctx, orig); err != nil {
		t.Fatal(err)
	}
	waitFor(t, gone(c.ns, "mine"), 30*time.Second, "gone", isGone, allowGone)
	other := newBackup(c.ns, "mine")
	other.Spec.StartBackup = false
	other.Spec.DeleteStoredImages = true
	c.create(other)
	waitFor(t, gone(c.ns, "mine"), 30*time.Second, "the request done", isGone, allowGone)
	if _, err := c.store().Verify(ctx, "mine"); err != nil {
		t.Errorf("the stored backup after another ImageStreamsBackup of its name asked to delete it: %v", err)
	}
}

// The parts of one Velero backup deleted at once share one collection; a collection that finds
// a backup in progress sweeps nothing and runs again by itself once it is over.
func TestGarbageCollectionRunsOncePerLocationAndWaitsForBackupsInProgress(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	o := c.workerOptions()
	o.GCDelay = time.Second
	c.startWorker(o)
	var parts []*oadpv1alpha1.ImageStreamsBackup
	for i := range 3 {
		r := c.push(fmt.Sprintf("app/part%d", i), imageOn(t, nil), c.registry.Host)
		parts = append(parts, c.completed(fmt.Sprintf("big-part%d", i), "", r))
	}
	keep := c.completed("keep", "", c.push("app/keep", imageOn(t, nil), c.registry.Host))
	store := c.store()
	busy, err := store.Begin(ctx, "busy", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	completed, deferred := labeledCounter(t, "imagestreams_backup_gc_runs_total", "result", "completed"), labeledCounter(t, "imagestreams_backup_gc_runs_total", "result", "deferred")

	for _, p := range parts {
		requestDeletion(t, p)
	}
	for _, p := range parts {
		p = waitFor(t, p, 30*time.Second, "waiting for the backup in progress", func(b *oadpv1alpha1.ImageStreamsBackup) bool {
			_, msg := readyReason(b.Status.Conditions)
			return b.Status.Phase == oadpv1alpha1.BackupPhaseDeleting && strings.Contains(msg, "waiting for backups in progress: busy")
		})
		if ok := must(store.HasIndex(ctx, p.Name)); ok {
			t.Errorf("%s's index is still stored while it waits for the collection", p.Name)
		}
	}
	if got := labeledCounter(t, "imagestreams_backup_gc_runs_total", "result", "deferred"); got <= deferred {
		t.Errorf("no deferred collection counted")
	}
	blobs := blobKeys(t, c, "cluster-a")

	if err := busy.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		waitFor(t, p, 30*time.Second, p.Name+" gone", isGone, allowGone)
	}
	if got := labeledCounter(t, "imagestreams_backup_gc_runs_total", "result", "completed") - completed; got != 1 {
		t.Errorf("%v collections completed for the three parts, want 1", got)
	}
	if after := blobKeys(t, c, "cluster-a"); len(after) >= len(blobs) {
		t.Errorf("%d blobs stored after the collection, %d before: nothing collected", len(after), len(blobs))
	}
	if _, err := store.Verify(ctx, keep.Name); err != nil {
		t.Errorf("verify keep: %v", err)
	}
}

// blobKeys lists the blobs stored under prefix, straight from the bucket.
func blobKeys(t *testing.T, c *cluster, prefix string) []string {
	t.Helper()
	ctx := context.Background()
	b, err := bucket.Open(ctx, bucket.Config{Provider: "aws", Bucket: "velero", Credentials: c.s3.CredentialsFile("default"),
		Config: map[string]string{"region": c.s3.Region, "s3Url": c.s3.URL, "s3ForcePathStyle": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var keys []string
	it := b.List(&blob.ListOptions{Prefix: prefix + "/" + imagestore.Root + "blobs/"})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return keys
		}
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, obj.Key)
	}
}

// A collection that takes longer than the stale-marker time keeps its marker fresh: a backup
// that starts meanwhile waits for it, instead of counting on blobs it is about to remove.
// Without a refreshed marker the new backup would find every layer present, upload none, and
// commit an index naming blobs the sweep then deleted.
func TestALongGarbageCollectionNeverRemovesWhatANewBackupNeeds(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	var sweeping atomic.Int64
	isDelete := func(r *http.Request) bool {
		return r.Method == http.MethodDelete || r.Method == http.MethodPost && r.URL.Query().Has("delete")
	}
	c.locationThrough("slow", faults.Config{Latency: 250 * time.Millisecond, LatencyMatch: func(r *http.Request) bool {
		if isDelete(r) && strings.Contains(r.URL.Path, "/blobs/") {
			sweeping.Add(1)
			return true
		}
		return false
	}})
	o := c.workerOptions()
	o.StaleAfter = time.Second
	c.startWorker(o)
	img := imageOn(t, layerList(t, 16))
	r := c.push("app/big", img, c.registry.Host)
	first := c.completed("first", "slow", r)

	requestDeletion(t, first)
	if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return sweeping.Load() > 0, nil
	}); err != nil {
		t.Fatal("the collection never started sweeping")
	}
	time.Sleep(o.StaleAfter + 200*time.Millisecond) // a marker written once is stale by now
	again := c.completed("again", "slow", r)
	waitFor(t, first, time.Minute, "first gone", isGone, allowGone)
	if _, err := c.storeAt("slow").Verify(ctx, again.Name); err != nil {
		t.Errorf("the backup that started during the collection names a blob the collection removed: %v", err)
	}
	if again.Status.Progress.BlobsUploaded == 0 {
		t.Errorf("the new backup uploaded nothing: it started before the collection ended (%+v)", again.Status.Progress)
	}
}

// Collections run apart from the reconcilers: a restore completes while one sweeps.
func TestAGarbageCollectionHoldsUpNoOtherResource(t *testing.T) {
	c := newCluster(t)
	c.locationThrough("slow", faults.Config{Latency: 300 * time.Millisecond, LatencyMatch: func(r *http.Request) bool {
		return (r.Method == http.MethodDelete || r.Method == http.MethodPost && r.URL.Query().Has("delete")) && strings.Contains(r.URL.Path, "/blobs/")
	}})
	c.startWorker(c.workerOptions())
	doomed := c.completed("doomed", "slow", c.push("app/doomed", imageOn(t, layerList(t, 20)), c.registry.Host))
	rw := c.push("app/web", imageOn(t, nil), c.registry.Host)
	c.completed("b1", "", rw)

	requestDeletion(t, doomed)
	waitFor(t, doomed, 30*time.Second, "doomed Deleting", backupPhase(oadpv1alpha1.BackupPhaseDeleting))
	isr := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "meanwhile"}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b1"}, NamespaceMapping: map[string]string{"app": "meanwhile"}}}
	c.create(isr)
	waitFor(t, isr, 30*time.Second, "restore Completed", restorePhase(oadpv1alpha1.RestorePhaseCompleted))
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(doomed), doomed); err != nil {
		t.Errorf("the deletion ended (%v) before the restore: the test did not overlap them", err)
	}
	waitFor(t, doomed, time.Minute, "doomed gone", isGone, allowGone)
}

// A store error while checking for an existing backup of the name is asked again, not taken
// for that backup. The store refuses the first two checks outright (as it does while rotated
// credentials propagate), which the S3 client does not retry itself.
func TestATransientStoreErrorIsNotBackupExists(t *testing.T) {
	c := newCluster(t)
	var refused atomic.Int64
	c.locationThrough("flaky", faults.Config{Intercept: func(r *http.Request, _ faults.Counts) *faults.Reply {
		if r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/backups/b1/index.json") && refused.Add(1) <= 2 {
			return faults.S3Error(http.StatusForbidden, "AccessDenied", "Access Denied")
		}
		return nil
	}})
	c.startWorker(c.workerOptions())
	r := c.push("app/web", imageOn(t, nil), c.registry.Host)
	isb := newBackup(c.ns, "b1", oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r, "latest")}})
	isb.Spec.BackupLocation = &oadpv1alpha1.BackupLocation{Name: "flaky"}
	c.create(isb)
	isb = waitFor(t, isb, time.Minute, "backup Completed", func(b *oadpv1alpha1.ImageStreamsBackup) bool {
		return b.Status.Phase == oadpv1alpha1.BackupPhaseCompleted || b.Status.Phase == oadpv1alpha1.BackupPhaseFailed
	})
	if isb.Status.Phase != oadpv1alpha1.BackupPhaseCompleted {
		reason, msg := readyReason(isb.Status.Conditions)
		t.Fatalf("backup %s (%s: %s), want Completed once the store answers", isb.Status.Phase, reason, msg)
	}
	if refused.Load() <= 2 || !strings.Contains(c.logs.String(), `"reason": "StoreUnavailable"`) {
		t.Errorf("the store refused %d checks; want them refused and the backup waiting with StoreUnavailable meanwhile", refused.Load())
	}
}

// Images appended to a completed backup are copied by a new run. An image the first run stored
// that the new run cannot read (here the store fails every request for its manifest) stays in
// the new index, and so its blobs survive collections.
func TestAnEarlierImageThatNowFailsStaysInTheBackup(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	one, two := imageOn(t, nil), imageOn(t, nil)
	r1, r2 := c.push("app/one", one, c.registry.Host), c.push("app/two", two, c.registry.Host)
	oneManifest := "/blobs/sha256/" + must(one.Digest()).Hex
	var failing atomic.Bool
	c.locationThrough("faulty", faults.Config{Intercept: func(r *http.Request, _ faults.Counts) *faults.Reply {
		if failing.Load() && strings.HasSuffix(r.URL.Path, oneManifest) {
			return faults.S3Error(http.StatusInternalServerError, "InternalError", "We encountered an internal error.")
		}
		return nil
	}})
	c.startWorker(c.workerOptions())
	isb := c.completed("grows", "faulty", r1)

	failing.Store(true)
	patch := client.MergeFrom(isb.DeepCopy())
	isb.Spec.ImageStreams = append(isb.Spec.ImageStreams, oadpv1alpha1.ImageStream{Name: "two", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r2, "latest")}})
	if err := env.Client.Patch(ctx, isb, patch); err != nil {
		t.Fatal(err)
	}
	isb = waitFor(t, isb, time.Minute, "the grown backup PartiallyFailed", func(b *oadpv1alpha1.ImageStreamsBackup) bool {
		return b.Status.Phase == oadpv1alpha1.BackupPhasePartiallyFailed && b.Status.ObservedGeneration == b.Generation
	})
	if len(isb.Status.Failures) != 1 || isb.Status.Failures[0].DockerImageReference != r1 || !strings.Contains(isb.Status.Failures[0].Message, "stays in the backup") {
		t.Errorf("failures %+v, want %s, saying the earlier copy stays", isb.Status.Failures, r1)
	}
	failing.Store(false)
	store := c.storeAt("faulty")
	entries := must(store.ReadIndex(ctx, "grows"))
	if len(entries) != 2 {
		t.Fatalf("index holds %d images after the grown run, want both: %+v", len(entries), entries)
	}
	if rep, err := store.GC(ctx, 0); err != nil || rep.Deferred {
		t.Fatalf("GC = %+v, %v", rep, err)
	}
	if _, err := store.Verify(ctx, "grows"); err != nil {
		t.Errorf("verify after a collection: %v", err)
	}
}

// The worker sends its registry credentials to the internal registry only: an image any
// other registry holds fails by name, and that registry hears nothing from the worker.
func TestAnImageOfAnotherRegistryGetsNoCredentials(t *testing.T) {
	c := newCluster(t)
	var requests, withCredentials atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Header.Get("Authorization") != "" {
			withCredentials.Add(1)
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="evil"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(evil.Close)
	internal := c.push("app/web", imageOn(t, nil), c.registry.Host)
	foreign := strings.TrimPrefix(evil.URL, "http://") + "/evil/x@sha256:" + strings.Repeat("a", 64)
	c.startWorker(c.workerOptions())
	isb := newBackup(c.ns, "mixed", oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{
		ref(internal, "latest"), ref(foreign, "evil")}})
	c.create(isb)
	isb = waitFor(t, isb, 30*time.Second, "backup PartiallyFailed", backupPhase(oadpv1alpha1.BackupPhasePartiallyFailed))
	if len(isb.Status.Failures) != 1 || isb.Status.Failures[0].Reason != oadpv1alpha1.ReasonExternalImage || isb.Status.Failures[0].DockerImageReference != foreign {
		t.Errorf("failures %+v, want %s refused as ExternalImage", isb.Status.Failures, foreign)
	}
	if requests.Load() != 0 || withCredentials.Load() != 0 {
		t.Errorf("the other registry got %d requests, %d of them with credentials; want none", requests.Load(), withCredentials.Load())
	}
}

// An inline location may not send the cluster's object store credentials to an endpoint no
// BackupStorageLocation uses them with.
func TestAnInlineLocationCannotSendCredentialsElsewhere(t *testing.T) {
	c := newCluster(t)
	var requests atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(attacker.Close)
	c.startWorker(c.workerOptions())
	r := c.push("app/web", imageOn(t, nil), c.registry.Host)
	isb := newBackup(c.ns, "elsewhere", oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r)}})
	isb.Spec.BackupLocation = &oadpv1alpha1.BackupLocation{Velero: &oadpv1alpha1.VeleroLocation{Provider: "aws",
		ObjectStorage: oadpv1alpha1.ObjectStorageLocation{Bucket: "velero"},
		Config:        map[string]string{"region": c.s3.Region, "s3Url": attacker.URL, "s3ForcePathStyle": "true"}}}
	c.create(isb)
	isb = waitFor(t, isb, 30*time.Second, "a CredentialsNotAllowed condition", func(b *oadpv1alpha1.ImageStreamsBackup) bool {
		reason, _ := readyReason(b.Status.Conditions)
		return reason == oadpv1alpha1.ReasonCredentialsNotAllowed
	})
	if _, msg := readyReason(isb.Status.Conditions); !strings.Contains(msg, c.ns+"/cloud-credentials") || !strings.Contains(msg, attacker.URL) {
		t.Errorf("message %q does not name the Secret and the endpoint", msg)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("the endpoint got %d requests, want none", n)
	}
	if _, msg := readyReason(isb.Status.Conditions); strings.Contains(msg, c.s3.SecretKey) {
		t.Errorf("the message reveals the credentials: %q", msg)
	}
}

// A restore of a split backup that misses a part restores the rest and names the part.
func TestARestoreNamesAMissingPart(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	c.startWorker(c.workerOptions())
	images := map[string]string{}
	var backups []*oadpv1alpha1.ImageStreamsBackup
	for _, n := range []string{"split", "split-part1-abc", "split-part2-abc"} {
		images[n] = c.push("app/"+n, imageOn(t, nil), c.registry.Host)
		isb := newBackup(c.ns, n, oadpv1alpha1.ImageStream{Name: n, Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(images[n], "latest")}})
		if n == "split" {
			isb.Spec.Parts = []string{"split-part1-abc", "split-part2-abc"}
		}
		c.create(isb)
		backups = append(backups, isb)
	}
	for _, b := range backups {
		waitFor(t, b, 30*time.Second, b.Name+" Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))
	}
	if err := c.store().DeleteBackup(ctx, "split-part2-abc"); err != nil {
		t.Fatal(err)
	}
	isr := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "all"}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "split"}, NamespaceMapping: map[string]string{"app": "back"}}}
	c.create(isr)
	isr = waitFor(t, isr, 30*time.Second, "restore PartiallyFailed", restorePhase(oadpv1alpha1.RestorePhasePartiallyFailed))
	if reason, msg := readyReason(isr.Status.Conditions); reason != oadpv1alpha1.ReasonBackupPartMissing || !strings.Contains(msg, "split-part2-abc") {
		t.Errorf("Ready %s: %q; want BackupPartMissing naming split-part2-abc", reason, msg)
	}
	for _, n := range []string{"split", "split-part1-abc"} {
		got, err := remote.Head(must(name.NewTag(c.registry.Host+"/back/"+n+":latest")), c.auth())
		if err != nil || got.Digest.String() != digestOf(t, images[n]) {
			t.Errorf("back/%s:latest = %v, %v; want %s", n, got, err, digestOf(t, images[n]))
		}
	}
}

// A Velero restore adds imagestreams to its ImageStreamsRestore as it goes. One added after a
// run that failed altogether (its only imagestream was not in the backup) is restored by
// another run, so that Velero's operations for it end.
func TestARestoreWhoseRunFailedRestoresWhatIsAddedLater(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	rw := c.push("app/web", imageOn(t, nil), c.registry.Host)
	c.startWorker(c.workerOptions())
	c.completed("b1", "", rw)
	isr := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "grows"}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b1"},
		ImageStreams:                []oadpv1alpha1.ImageStream{{Name: "ghost", Namespace: "app"}}}}
	c.create(isr)
	waitFor(t, isr, 30*time.Second, "restore Failed", restorePhase(oadpv1alpha1.RestorePhaseFailed))
	patch := client.MergeFrom(isr.DeepCopy())
	isr.Spec.ImageStreams = append(isr.Spec.ImageStreams, oadpv1alpha1.ImageStream{Name: "web", Namespace: "app"})
	if err := env.Client.Patch(ctx, isr, patch); err != nil {
		t.Fatal(err)
	}
	isr = waitFor(t, isr, 30*time.Second, "the grown restore ended", func(r *oadpv1alpha1.ImageStreamsRestore) bool {
		return r.Status.ObservedGeneration == r.Generation && r.Status.Phase == oadpv1alpha1.RestorePhasePartiallyFailed
	})
	if isr.Status.Progress.ImagesDone != 1 {
		t.Errorf("progress %+v, want web restored", isr.Status.Progress)
	}
}

// A store that refuses a backup's index once, after the copy, or a restore's read of it, costs a
// new attempt, not the backup or the restore.
func TestAStoreThatRefusesTheIndexOnceIsAskedAgain(t *testing.T) {
	c := newCluster(t)
	var puts, gets atomic.Int64
	c.locationThrough("flaky", faults.Config{Intercept: func(r *http.Request, _ faults.Counts) *faults.Reply {
		if !strings.HasSuffix(r.URL.Path, "/backups/b1/index.json") {
			return nil
		}
		if r.Method == http.MethodPut && puts.Add(1) == 1 || r.Method == http.MethodGet && gets.Add(1) == 1 {
			return faults.S3Error(http.StatusForbidden, "AccessDenied", "Access Denied")
		}
		return nil
	}})
	c.startWorker(c.workerOptions())
	rw := c.push("app/web", imageOn(t, nil), c.registry.Host)
	isb := c.completed("b1", "flaky", rw)
	if puts.Load() < 2 {
		t.Errorf("the index was written %d times, want a second attempt after the refusal", puts.Load())
	}
	if isb.Status.Progress.ImagesDone != 1 {
		t.Errorf("progress %+v, want the image", isb.Status.Progress)
	}
	isr := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "r1"}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b1"}, BackupLocation: &oadpv1alpha1.BackupLocation{Name: "flaky"},
		NamespaceMapping: map[string]string{"app": "again"}}}
	c.create(isr)
	waitFor(t, isr, time.Minute, "restore Completed", restorePhase(oadpv1alpha1.RestorePhaseCompleted))
	if gets.Load() < 2 {
		t.Errorf("the index was read %d times, want a second attempt after the refusal", gets.Load())
	}
}
