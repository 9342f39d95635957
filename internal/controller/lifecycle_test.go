package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// slowBackup prepares an image of eight 1 MiB layers behind a proxy that serves blobs slowly,
// and a backup of it through the proxy.
func slowBackup(t *testing.T, c *cluster, backup string) (*countingProxy, *oadpv1alpha1.ImageStreamsBackup, v1.Image) {
	var layers []v1.Layer
	for range 8 {
		layers = append(layers, layer(t, 1<<20))
	}
	img := imageOn(t, layers)
	proxy := newCountingProxy(t, c.registry.Host)
	r := strings.Replace(c.push("app/big", img, c.registry.Host), c.registry.Host, proxy.host(), 1)
	proxy.delay.Store(int64(8 * time.Millisecond))
	return proxy, newBackup(c.ns, backup, oadpv1alpha1.ImageStream{Name: "big", Namespace: "app",
		DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r, "latest")}}), img
}

func TestAStoppedWorkerResumesWithoutUploadingTwice(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	proxy, isb, img := slowBackup(t, c, "resumed")
	o := c.workerOptions()
	o.Registry.Host = proxy.host()
	stop := c.startWorker(o)
	c.create(isb)
	waitFor(t, isb, 30*time.Second, "a blob uploaded", func(b *oadpv1alpha1.ImageStreamsBackup) bool { return b.Status.Progress.BlobsUploaded >= 1 })
	stop()
	if got := must(c.store().Backups(ctx)); len(got) != 0 {
		t.Fatalf("an interrupted backup wrote its index: %v", got)
	}

	c.startWorker(o)
	waitFor(t, isb, time.Minute, "backup Completed after the restart", backupPhase(oadpv1alpha1.BackupPhaseCompleted))
	var layerBytes, largest int64
	for _, l := range must(img.Layers()) {
		size := must(l.Size())
		layerBytes += size
		largest = max(largest, size)
	}
	configSize := must(img.Manifest()).Config.Size
	// Blobs in flight when the worker stopped are fetched again; nothing else is.
	limit := layerBytes + configSize + int64(o.Registry.Jobs)*largest
	if got := proxy.blobBytes.Load(); got < layerBytes || got > limit {
		t.Errorf("registry served %d blob bytes over both runs; want the %d unique bytes plus at most %d in flight", got, layerBytes, limit-layerBytes)
	}
	if isb.Status.Progress.BlobsSkipped == 0 {
		t.Errorf("the resumed run skipped no blob: %+v", isb.Status.Progress)
	}
	if _, err := c.store().Verify(ctx, "resumed"); err != nil {
		t.Errorf("verify after resume: %v", err)
	}
}

func TestCancelStopsTheCopyAndWritesNoIndex(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	proxy, isb, _ := slowBackup(t, c, "canceled")
	o := c.workerOptions()
	o.Registry.Host = proxy.host()
	c.startWorker(o)
	c.create(isb)
	waitFor(t, isb, 30*time.Second, "backup InProgress", backupPhase(oadpv1alpha1.BackupPhaseInProgress))
	patch := client.MergeFrom(isb.DeepCopy())
	isb.Spec.Cancel = true
	if err := env.Client.Patch(ctx, isb, patch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, isb, 30*time.Second, "backup Canceled", backupPhase(oadpv1alpha1.BackupPhaseCanceled))
	if reason, _ := readyReason(isb.Status.Conditions); reason != oadpv1alpha1.ReasonCanceled {
		t.Errorf("Ready reason %s, want Canceled", reason)
	}
	if got := must(c.store().Backups(ctx)); len(got) != 0 {
		t.Errorf("a canceled backup wrote an index: %v", got)
	}
}

func TestAppendingImagesAfterCompletionCopiesOnlyThem(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	first, second := imageOn(t, nil), imageOn(t, nil)
	r1, r2 := c.push("app/one", first, c.registry.Host), c.push("app/two", second, c.registry.Host)
	c.startWorker(c.workerOptions())
	isb := newBackup(c.ns, "grows", oadpv1alpha1.ImageStream{Name: "one", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r1, "latest")}})
	c.create(isb)
	waitFor(t, isb, 30*time.Second, "backup Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))

	patch := client.MergeFrom(isb.DeepCopy())
	isb.Spec.ImageStreams = append(isb.Spec.ImageStreams, oadpv1alpha1.ImageStream{Name: "two", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r2, "latest")}})
	if err := env.Client.Patch(ctx, isb, patch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, isb, 30*time.Second, "the grown backup Completed", func(b *oadpv1alpha1.ImageStreamsBackup) bool {
		return b.Status.Phase == oadpv1alpha1.BackupPhaseCompleted && b.Status.ObservedGeneration == b.Generation
	})
	_, wantBytes := unique(t, second)
	if p := isb.Status.Progress; p.BytesUploaded != wantBytes || p.ImagesDone != 2 {
		t.Errorf("progress %+v, want only the new image's %d bytes uploaded and 2 images done", p, wantBytes)
	}
	if entries := must(c.store().ReadIndex(ctx, "grows")); len(entries) != 2 {
		t.Errorf("index holds %d images, want 2", len(entries))
	}
}

// requestDeletion sets spec.deleteStoredImages, as `velero backup delete` does through the plugin.
func requestDeletion(t *testing.T, isb *oadpv1alpha1.ImageStreamsBackup) {
	t.Helper()
	if err := env.Client.Patch(context.Background(), isb, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"deleteStoredImages":true}}`))); err != nil {
		t.Fatal(err)
	}
}

func gone(ns, backup string) *oadpv1alpha1.ImageStreamsBackup {
	return &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: backup}}
}

func TestDeletingABackupsStoredImagesRemovesWhatOnlyItUsed(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	base := layerList(t, 2)
	own1, own2 := imageOn(t, base), imageOn(t, base)
	r1, r2 := c.push("app/one", own1, c.registry.Host), c.push("app/two", own2, c.registry.Host)
	c.startWorker(c.workerOptions())
	b1 := newBackup(c.ns, "b1", oadpv1alpha1.ImageStream{Name: "one", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r1)}})
	b2 := newBackup(c.ns, "b2", oadpv1alpha1.ImageStream{Name: "two", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r2)}})
	c.create(b1)
	c.create(b2)
	waitFor(t, b1, 30*time.Second, "b1 Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))
	waitFor(t, b2, 30*time.Second, "b2 Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))

	requestDeletion(t, b1)
	waitFor(t, gone(c.ns, "b1"), 30*time.Second, "b1 gone", func(*oadpv1alpha1.ImageStreamsBackup) bool { return false }, allowGone)
	store := c.store()
	if names := must(store.Backups(ctx)); len(names) != 1 || names[0] != "b2" {
		t.Errorf("backups after deleting b1: %v, want [b2]", names)
	}
	ownLayers := must(own1.Layers())
	if ok := must(store.Has(ctx, must(ownLayers[len(ownLayers)-1].Digest()))); ok {
		t.Errorf("the layer only b1 used is still stored")
	}
	for _, l := range base {
		if ok := must(store.Has(ctx, must(l.Digest()))); !ok {
			t.Errorf("a base layer b2 uses was deleted")
		}
	}
	if _, err := store.Verify(ctx, "b2"); err != nil {
		t.Errorf("verify b2: %v", err)
	}
}

func TestRestoreOfASubsetAndOfAMissingBackup(t *testing.T) {
	c := newCluster(t)
	web, api := imageOn(t, nil), imageOn(t, nil)
	rw, ra := c.push("app/web", web, c.registry.Host), c.push("app/api", api, c.registry.Host)
	c.startWorker(c.workerOptions())
	isb := newBackup(c.ns, "b1",
		oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(rw, "latest")}},
		oadpv1alpha1.ImageStream{Name: "api", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(ra, "latest")}})
	c.create(isb)
	waitFor(t, isb, 30*time.Second, "backup Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))

	// Only web, into namespace restored, under the conventional spelling of the reference.
	isr := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "subset"}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReferenceAlias: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b1"},
		ImageStreams:                     []oadpv1alpha1.ImageStream{{Name: "web", Namespace: "app"}},
		NamespaceMapping:                 map[string]string{"app": "restored"},
	}}
	c.create(isr)
	waitFor(t, isr, 30*time.Second, "restore Completed", restorePhase(oadpv1alpha1.RestorePhaseCompleted))
	got, err := remote.Get(must(name.NewTag(c.registry.Host+"/restored/web:latest")), c.auth())
	if err != nil || got.Digest.String() != digestOf(t, rw) {
		t.Errorf("restored/web:latest = %v, %v; want %s", got, err, digestOf(t, rw))
	}
	if _, err := remote.Head(must(name.NewTag(c.registry.Host+"/restored/api:latest")), c.auth()); err == nil {
		t.Errorf("api was restored though the restore did not list it")
	}

	missing := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "missing"}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "no-such-backup"}}}
	c.create(missing)
	waitFor(t, missing, 30*time.Second, "restore Failed", restorePhase(oadpv1alpha1.RestorePhaseFailed))
	c2 := meta.FindStatusCondition(missing.Status.Conditions, oadpv1alpha1.ConditionReady)
	if c2 == nil || c2.Reason != oadpv1alpha1.ReasonBackupNotFound || !strings.Contains(c2.Message, "no-such-backup") {
		t.Errorf("Ready condition %+v, want BackupNotFound naming no-such-backup", c2)
	}
}

func TestABackupNeverOverwritesAnotherOnesIndex(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	first, second := imageOn(t, nil), imageOn(t, nil)
	r1, r2 := c.push("app/one", first, c.registry.Host), c.push("app/two", second, c.registry.Host)
	stop := c.startWorker(c.workerOptions())
	orig := newBackup(c.ns, "taken", oadpv1alpha1.ImageStream{Name: "one", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r1)}})
	c.create(orig)
	waitFor(t, orig, 30*time.Second, "backup Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))
	// The resource goes while no worker runs, so its index stays (as when its location was
	// unreachable at deletion), and another one of the same name arrives, as a restore or a
	// person might bring it.
	stop()
	orig.Finalizers = nil
	if err := env.Client.Update(ctx, orig); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctx, orig); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "taken"}}, 30*time.Second, "gone", func(*oadpv1alpha1.ImageStreamsBackup) bool { return false }, allowGone)
	before := must(c.store().ReadIndex(ctx, "taken"))

	c.startWorker(c.workerOptions())
	again := newBackup(c.ns, "taken", oadpv1alpha1.ImageStream{Name: "two", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r2)}})
	c.create(again)
	waitFor(t, again, 30*time.Second, "backup Failed", backupPhase(oadpv1alpha1.BackupPhaseFailed))
	if reason, msg := readyReason(again.Status.Conditions); reason != oadpv1alpha1.ReasonBackupExists || !strings.Contains(msg, "already exists") {
		t.Errorf("Ready %s: %q, want BackupExists", reason, msg)
	}
	if after := must(c.store().ReadIndex(ctx, "taken")); len(after) != 1 || after[0].Descriptor.Digest != before[0].Descriptor.Digest {
		t.Errorf("the stored index changed: %+v", after)
	}

	// Deleting the one that failed, its stored images with it as Velero's deletion would,
	// leaves the other one's index: it never wrote it.
	requestDeletion(t, again)
	waitFor(t, gone(c.ns, "taken"), 30*time.Second, "the failed one gone", func(*oadpv1alpha1.ImageStreamsBackup) bool { return false }, allowGone)
	if _, err := c.store().Verify(ctx, "taken"); err != nil {
		t.Errorf("the other backup's index after the failed one was deleted: %v", err)
	}
}

func TestRestoringABackupRestoresEveryPart(t *testing.T) {
	c := newCluster(t)
	one, two := imageOn(t, nil), imageOn(t, nil)
	r1, r2 := c.push("app/one", one, c.registry.Host), c.push("app/two", two, c.registry.Host)
	c.startWorker(c.workerOptions())
	head := newBackup(c.ns, "parted", oadpv1alpha1.ImageStream{Name: "one", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r1, "latest")}})
	head.Annotations = map[string]string{oadpv1alpha1.AnnotationParts: "2"}
	part := newBackup(c.ns, "parted.1", oadpv1alpha1.ImageStream{Name: "two", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r2, "latest")}})
	c.create(head)
	c.create(part)
	waitFor(t, head, 30*time.Second, "head Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))
	waitFor(t, part, 30*time.Second, "part Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))

	isr := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "all-parts"}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "parted"}, NamespaceMapping: map[string]string{"app": "back"}}}
	c.create(isr)
	waitFor(t, isr, 30*time.Second, "restore Completed", restorePhase(oadpv1alpha1.RestorePhaseCompleted))
	for tag, want := range map[string]string{"back/one:latest": r1, "back/two:latest": r2} {
		got, err := remote.Get(must(name.NewTag(c.registry.Host+"/"+tag)), c.auth())
		if err != nil || got.Digest.String() != digestOf(t, want) {
			t.Errorf("%s = %v, %v; want %s", tag, got, err, digestOf(t, want))
		}
	}
}

// A restore pushes only into the namespaces its backup lists, or those its mapping names: an
// imagestream the backup does not hold fails by name, and a reference naming another
// namespace's repository still lands in the backed-up imagestream's own.
func TestARestorePushesOnlyIntoTheBackupsNamespaces(t *testing.T) {
	c := newCluster(t)
	rw := c.push("app/web", imageOn(t, nil), c.registry.Host)
	c.startWorker(c.workerOptions())
	isb := newBackup(c.ns, "b1", oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(rw, "latest")}})
	c.create(isb)
	waitFor(t, isb, 30*time.Second, "backup Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))

	digest := digestOf(t, rw)
	isr := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "elsewhere"}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b1"},
		ImageStreams: []oadpv1alpha1.ImageStream{
			{Name: "web", Namespace: "kube-system"},
			{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{
				{DockerImageReference: c.registry.Host + "/kube-system/evil@" + digest, Tags: []string{"pwned"}}}},
		},
	}}
	c.create(isr)
	isr = waitFor(t, isr, 30*time.Second, "restore PartiallyFailed", restorePhase(oadpv1alpha1.RestorePhasePartiallyFailed))
	if len(isr.Status.Failures) != 1 || isr.Status.Failures[0].Namespace != "kube-system" || !strings.Contains(isr.Status.Failures[0].Message, "not in the backup") {
		t.Errorf("failures %+v, want kube-system/web not in the backup", isr.Status.Failures)
	}
	for _, repo := range []string{"kube-system/web", "kube-system/evil"} {
		if tags, err := remote.List(must(name.NewRepository(c.registry.Host+"/"+repo)), c.auth()); err == nil && len(tags) > 0 {
			t.Errorf("the restore pushed into %s: %v", repo, tags)
		}
	}
	if got, err := remote.Head(must(name.NewTag(c.registry.Host+"/app/web:pwned")), c.auth()); err != nil || got.Digest.String() != digest {
		t.Errorf("app/web:pwned = %v, %v; want the backed-up image in its own repository", got, err)
	}
}

// Two restores of one backup into one namespace at once both complete with the same images.
func TestTwoRestoresOfTheSameTargetAtOnce(t *testing.T) {
	c := newCluster(t)
	rw := c.push("app/web", imageOn(t, nil), c.registry.Host)
	ra := c.push("app/api", must(random.Index(64<<10, 2, 3)), c.registry.Host)
	c.startWorker(c.workerOptions())
	isb := newBackup(c.ns, "b1",
		oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(rw, "latest")}},
		oadpv1alpha1.ImageStream{Name: "api", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(ra, "latest")}})
	c.create(isb)
	waitFor(t, isb, 30*time.Second, "backup Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))

	var isrs []*oadpv1alpha1.ImageStreamsRestore
	for _, n := range []string{"first", "second"} {
		isr := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: n}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
			ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b1"},
			NamespaceMapping:            map[string]string{"app": "twice"},
		}}
		c.create(isr)
		isrs = append(isrs, isr)
	}
	for _, isr := range isrs {
		isr = waitFor(t, isr, 30*time.Second, "restore Completed", restorePhase(oadpv1alpha1.RestorePhaseCompleted))
		if isr.Status.Progress.ImagesDone != 2 {
			t.Errorf("%s restored %d images, want 2", isr.Name, isr.Status.Progress.ImagesDone)
		}
	}
	for repo, want := range map[string]string{"twice/web:latest": digestOf(t, rw), "twice/api:latest": digestOf(t, ra)} {
		if got, err := remote.Head(must(name.NewTag(c.registry.Host+"/"+repo)), c.auth()); err != nil || got.Digest.String() != want {
			t.Errorf("%s = %v, %v; want %s", repo, got, err, want)
		}
	}
}
