//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	imagev1 "github.com/openshift/api/image/v1"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/test/stack"
)

func createNamespace(t *testing.T, s *stack.Stack, ns string) {
	t.Helper()
	if err := s.Env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
}

// smallImageStream pushes one small image as <ns>/<name>:latest with an imagestream for it and
// returns its digest.
func smallImageStream(t *testing.T, s *stack.Stack, ns, is string) string {
	t.Helper()
	d, err := s.PushImageStream(ns, is, map[string]remote.Taggable{"latest": must(random.Image(8<<10, 1))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d["latest"]
}

func waitGone(t *testing.T, s *stack.Stack, obj client.Object, what string) {
	t.Helper()
	s.WaitFor(2*time.Minute, what+" gone", func() bool {
		return apierrors.IsNotFound(s.Env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj))
	})
}

func isbKey(backup string) *oadpv1alpha1.ImageStreamsBackup {
	return &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: stack.VeleroNamespace, Name: backup}}
}

func storedBackups(t *testing.T, store *imagestore.Store) []string {
	t.Helper()
	return must(store.Backups(context.Background()))
}

// verifyAll verifies every stored backup but those skipped, with their parts.
func verifyAll(t *testing.T, store *imagestore.Store, names []string) {
	t.Helper()
	for _, n := range names {
		if _, err := store.Verify(context.Background(), n); err != nil {
			t.Errorf("stored backup %s: %v", n, err)
		}
	}
}

// partsOf lists the ImageStreamsBackups the plugin made for a Velero backup.
func partsOf(t *testing.T, s *stack.Stack, backup string) []string {
	t.Helper()
	list := &oadpv1alpha1.ImageStreamsBackupList{}
	if err := s.Env.Client.List(context.Background(), list, client.InNamespace(stack.VeleroNamespace), client.MatchingLabels{velerov1.BackupNameLabel: backup}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, isb := range list.Items {
		names = append(names, isb.Name)
	}
	return names
}

// A cluster-wide Velero backup holds the Velero namespace, and with it the ImageStreamsBackups
// of every earlier backup. Deleting it, with `velero backup delete` or by its TTL, removes its
// own images and keeps every other backup's index, blobs and ImageStreamsBackup.
func TestDeletingAClusterWideBackupKeepsEveryOtherBackup(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	createNamespace(t, st, "wide")
	smallImageStream(t, st, "wide", "one")
	two := smallImageStream(t, st, "wide", "two")
	st.Run("backup", "create", "wide1", "--include-namespaces", "wide", "--wait")
	manual := &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: stack.VeleroNamespace, Name: "manual1"},
		Spec: oadpv1alpha1.ImageStreamsBackupSpec{StartBackup: true, ImageStreams: []oadpv1alpha1.ImageStream{{Name: "two", Namespace: "wide",
			DockerImageReferences: []oadpv1alpha1.DockerImageReference{{DockerImageReference: st.Registry.Host + "/wide/two@" + two, Tags: []string{"latest"}}}}}}}
	if err := c.Create(ctx, manual); err != nil {
		t.Fatal(err)
	}
	st.WaitFor(time.Minute, "manual1 Completed", func() bool {
		return c.Get(ctx, client.ObjectKeyFromObject(manual), manual) == nil && manual.Status.Phase == oadpv1alpha1.BackupPhaseCompleted
	})
	store := st.Store()
	defer store.Close()

	for _, tt := range []struct {
		backup string
		create []string
		delete func()
	}{
		// Namespace broken holds an image that is gone (see TestMissingImage...).
		{"wide4", []string{"--exclude-namespaces", "broken"}, func() { st.Run("backup", "delete", "wide4", "--confirm") }},
		// Velero's garbage collection deletes the expired backup (every 5 s here).
		{"wide5", []string{"--exclude-namespaces", "broken", "--ttl", "20s"}, func() {}},
	} {
		t.Run(tt.backup, func(t *testing.T) {
			st.Run(append([]string{"backup", "create", tt.backup, "--wait"}, tt.create...)...)
			if vb := veleroBackup(t, tt.backup); vb.Status.Phase != velerov1.BackupPhaseCompleted {
				t.Fatalf("Velero backup %s %s, want Completed", tt.backup, vb.Status.Phase)
			}
			// The premise: the tarball holds other backups' ImageStreamsBackups.
			entries := tarballEntries(t, tt.backup)
			for _, other := range []string{"wide1", "manual1"} {
				if _, ok := entries["backup:resources/imagestreamsbackups.oadp.openshift.io/namespaces/velero/"+other+".json"]; !ok {
					t.Fatalf("the cluster-wide backup does not hold ImageStreamsBackup %s; the test would prove nothing", other)
				}
			}
			own := partsOf(t, st, tt.backup)
			var others []string
			for _, n := range storedBackups(t, store) {
				if !slices.Contains(own, n) {
					others = append(others, n)
				}
			}

			tt.delete()
			st.WaitFor(2*time.Minute, tt.backup+" deleted", func() bool {
				return apierrors.IsNotFound(c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: tt.backup}, &velerov1.Backup{}))
			})
			for _, p := range own {
				waitGone(t, st, isbKey(p), "ImageStreamsBackup "+p)
				if ok := must(store.HasIndex(ctx, p)); ok {
					t.Errorf("%s's index is still stored", p)
				}
			}
			if got := storedBackups(t, store); !slices.Equal(got, others) {
				t.Errorf("stored backups after deleting %s: %v, want %v", tt.backup, got, others)
			}
			verifyAll(t, store, others)
			for _, other := range []string{"wide1", "manual1"} {
				isb := isbKey(other)
				if err := c.Get(ctx, client.ObjectKeyFromObject(isb), isb); err != nil || isb.Spec.DeleteStoredImages {
					t.Errorf("ImageStreamsBackup %s after deleting %s: %v, deletion asked %v", other, tt.backup, err, isb.Spec.DeleteStoredImages)
				}
			}
		})
	}
}

// `kubectl delete backup` deletes the object only: Velero keeps the data and syncs the Backup
// back, and its images stay too. A restore from the synced backup brings them back, and
// `velero backup delete` then removes them.
func TestKubectlDeleteBackupKeepsItsImages(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	createNamespace(t, st, "kept")
	digest := smallImageStream(t, st, "kept", "web")
	st.Run("backup", "create", "kept1", "--include-namespaces", "kept", "--wait")
	before := veleroBackup(t, "kept1")
	if err := c.Delete(ctx, before); err != nil {
		t.Fatal(err)
	}
	synced := &velerov1.Backup{}
	st.WaitFor(2*time.Minute, "Velero syncing kept1 back", func() bool {
		return c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "kept1"}, synced) == nil && synced.UID != before.UID
	})
	store := st.Store()
	defer store.Close()
	if _, err := store.Verify(ctx, "kept1"); err != nil {
		t.Fatalf("kept1's images after its Backup object was deleted: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(isbKey("kept1")), isbKey("kept1")); err != nil {
		t.Errorf("kept1's ImageStreamsBackup after its Backup object was deleted: %v", err)
	}

	wipeNamespace(t, "kept")
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: st.Registry.Username, Password: st.Registry.Password}))
	repo := must(name.NewRepository(st.Registry.Host + "/kept/web"))
	if err := remote.Delete(repo.Digest(digest), auth); err != nil {
		t.Fatal(err)
	}
	st.Run("restore", "create", "kept-r", "--from-backup", "kept1", "--wait")
	if got, err := remote.Head(repo.Tag("latest"), auth); err != nil || got.Digest.String() != digest {
		t.Errorf("kept/web:latest after restoring the synced backup = %v, %v; want %s", got, err, digest)
	}

	st.Run("backup", "delete", "kept1", "--confirm")
	waitGone(t, st, isbKey("kept1"), "kept1's ImageStreamsBackup")
	if ok := must(store.HasIndex(ctx, "kept1")); ok {
		t.Errorf("kept1's index is still stored after velero backup delete")
	}
}

// Two Velero backups of overlapping namespaces run at once, with four item-block workers each,
// while a third backup is deleted: both complete with every reference and blob, and the
// collection removes only what the deleted one alone used.
func TestTwoBackupsAtOnceWhileAThirdIsDeleted(t *testing.T) {
	ctx := context.Background()
	for _, ns := range []string{"con1", "con2", "con3", "con4"} {
		createNamespace(t, st, ns)
		for i := range 6 {
			smallImageStream(t, st, ns, fmt.Sprintf("is%d", i))
		}
	}
	st.Run("backup", "create", "third", "--include-namespaces", "con3", "--wait")
	store := st.Store()
	defer store.Close()
	thirdOnly := must(store.ReadIndex(ctx, "third"))

	var wg sync.WaitGroup
	for _, args := range [][]string{
		{"backup", "create", "both1", "--include-namespaces", "con1,con2"},
		{"backup", "create", "both2", "--include-namespaces", "con2,con4"},
		{"backup", "delete", "third", "--confirm"},
	} {
		wg.Go(func() { st.Run(args...) })
	}
	wg.Wait()
	for _, b := range []string{"both1", "both2"} {
		st.WaitFor(2*time.Minute, b+" Completed", func() bool {
			vb := &velerov1.Backup{}
			return st.Env.Client.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: b}, vb) == nil && vb.Status.Phase == velerov1.BackupPhaseCompleted
		})
		if entries := must(store.ReadIndex(ctx, b)); len(entries) != 12 {
			t.Errorf("%s stored %d images, want 12", b, len(entries))
		}
	}
	waitGone(t, st, isbKey("third"), "third's ImageStreamsBackup")
	verifyAll(t, store, []string{"both1", "both2"})
	st.WaitFor(time.Minute, "third's images collected", func() bool {
		for _, e := range thirdOnly {
			if must(store.Has(ctx, e.Descriptor.Digest)) {
				return false
			}
		}
		return true
	})
}

// A Velero backup named like another's part keeps its images apart: backup "split" spreads
// its imagestreams over parts, "split.1" is a backup of its own, and deleting "split" removes
// all of its parts and nothing of "split.1". A restore of "split" that misses a part first
// says which.
func TestABackupNamedLikeAnotherBackupsPart(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	namespaceOfImageStreams(t, "many", 55)
	createNamespace(t, st, "few")
	smallImageStream(t, st, "few", "web")
	st.Run("backup", "create", "split", "--include-namespaces", "many", "--wait")
	st.Run("backup", "create", "split.1", "--include-namespaces", "few", "--wait")
	parts := partsOf(t, st, "split")
	if len(parts) < 2 {
		t.Fatalf("split has parts %v, want more than one", parts)
	}
	store := st.Store()
	defer store.Close()
	verifyAll(t, store, []string{"split", "split.1"})
	if entries := must(store.ReadIndex(ctx, "split.1")); len(entries) != 1 || entries[0].Namespace != "few" {
		t.Errorf("split.1 holds %+v, want few/web alone", entries)
	}

	// One part's index disappears from the bucket: the restore of split is not Completed, and
	// its ImageStreamsRestore names the part.
	lost := parts[0]
	if lost == "split" {
		lost = parts[1]
	}
	if err := store.DeleteBackup(ctx, lost); err != nil {
		t.Fatal(err)
	}
	st.Run("restore", "create", "split-r", "--from-backup", "split", "--namespace-mappings", "many:many2", "--wait")
	if vr := (&velerov1.Restore{}); c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "split-r"}, vr) != nil || vr.Status.Phase == velerov1.RestorePhaseCompleted {
		t.Errorf("the restore of a backup missing part %s is %s, want it not Completed", lost, vr.Status.Phase)
	}
	isr := &oadpv1alpha1.ImageStreamsRestore{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "split-r"}, isr); err != nil {
		t.Fatal(err)
	}
	if ready := readyCondition(isr.Status.Conditions); ready == nil || ready.Reason != "BackupPartMissing" || !strings.Contains(ready.Message, lost) {
		t.Errorf("ImageStreamsRestore Ready %+v, want BackupPartMissing naming %s", ready, lost)
	}

	deleteBackup(t, store, "split", parts, []string{"split.1"})
}

// A Velero backup of more items than imagestreams fills its parts in turn and leaves the head
// without an imagestream of its own: the head only lists the parts. `velero backup delete`
// finds the head and every part in the backup, as post-operation items of the operations that
// share a part, and removes all of them and nothing of another backup.
func TestDeletingABackupWhoseHeadHoldsNoImageStream(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	namespaceOfImageStreams(t, "headless", 50)
	for i := range 60 {
		if err := c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "headless", Name: fmt.Sprintf("cm%02d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	createNamespace(t, st, "beside")
	smallImageStream(t, st, "beside", "web")
	head := backupNamespace(t, "headless", "headless", velerov1.BackupPhaseCompleted)
	backupNamespace(t, "beside", "beside", velerov1.BackupPhaseCompleted)
	parts := partsOf(t, st, "headless")
	if len(head.Spec.ImageStreams) != 0 || len(head.Spec.Parts) == 0 || len(parts) != len(head.Spec.Parts)+1 {
		t.Fatalf("head holds %d imagestreams and lists parts %v of %v; want none of its own, listing every other part", len(head.Spec.ImageStreams), head.Spec.Parts, parts)
	}
	store := st.Store()
	defer store.Close()
	verifyAll(t, store, []string{"headless", "beside"})
	stored := 0
	for _, p := range head.Spec.Parts {
		stored += len(must(store.ReadIndex(ctx, p)))
	}
	if stored != 50 {
		t.Errorf("the parts store %d images, want the 50", stored)
	}

	deleteBackup(t, store, "headless", parts, []string{"beside"})
}

// namespaceOfImageStreams creates namespace ns with n imagestreams is00, is01, ... of a small
// image each.
func namespaceOfImageStreams(t *testing.T, ns string, n int) {
	t.Helper()
	createNamespace(t, st, ns)
	for i := range n {
		smallImageStream(t, st, ns, fmt.Sprintf("is%02d", i))
	}
}

// backupNamespace runs Velero backup backup of namespace ns, which should end in phase want,
// and returns its ImageStreamsBackup, the head.
func backupNamespace(t *testing.T, backup, ns string, want velerov1.BackupPhase) *oadpv1alpha1.ImageStreamsBackup {
	t.Helper()
	st.Run("backup", "create", backup, "--include-namespaces", ns, "--wait")
	if vb := veleroBackup(t, backup); vb.Status.Phase != want {
		t.Errorf("Velero backup %s %s, want %s", backup, vb.Status.Phase, want)
	}
	isb := isbKey(backup)
	if err := st.Env.Client.Get(context.Background(), client.ObjectKeyFromObject(isb), isb); err != nil {
		t.Fatal(err)
	}
	return isb
}

// deleteBackup runs `velero backup delete` on backup and waits until its ImageStreamsBackups,
// parts, are gone with their stored indexes; the stored backups kept still verify.
func deleteBackup(t *testing.T, store *imagestore.Store, backup string, parts, kept []string) {
	t.Helper()
	st.Run("backup", "delete", backup, "--confirm")
	for _, p := range parts {
		waitGone(t, st, isbKey(p), "ImageStreamsBackup "+p)
		if ok := must(store.HasIndex(context.Background(), p)); ok {
			t.Errorf("%s's index is still stored", p)
		}
	}
	verifyAll(t, store, kept)
}

// A Velero backup whose name a person's stored backup already has fails its images loudly
// (BackupExists); deleting that Velero backup keeps the person's stored backup.
func TestDeletingABackupThatFoundItsNameTakenKeepsTheOtherOne(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	createNamespace(t, st, "taken")
	digest := smallImageStream(t, st, "taken", "web")
	person := &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: stack.VeleroNamespace, Name: "taken1"},
		Spec: oadpv1alpha1.ImageStreamsBackupSpec{StartBackup: true, ImageStreams: []oadpv1alpha1.ImageStream{{Name: "web", Namespace: "taken",
			DockerImageReferences: []oadpv1alpha1.DockerImageReference{{DockerImageReference: st.Registry.Host + "/taken/web@" + digest}}}}}}
	if err := c.Create(ctx, person); err != nil {
		t.Fatal(err)
	}
	st.WaitFor(time.Minute, "the person's backup Completed", func() bool {
		return c.Get(ctx, client.ObjectKeyFromObject(person), person) == nil && person.Status.Phase == oadpv1alpha1.BackupPhaseCompleted
	})
	// Deleting the person's ImageStreamsBackup keeps what it stored.
	if err := c.Delete(ctx, person); err != nil {
		t.Fatal(err)
	}
	waitGone(t, st, isbKey("taken1"), "the person's ImageStreamsBackup")

	isb := backupNamespace(t, "taken1", "taken", velerov1.BackupPhasePartiallyFailed)
	if ready := readyCondition(isb.Status.Conditions); ready == nil || ready.Reason != "BackupExists" {
		t.Errorf("ImageStreamsBackup taken1 Ready %+v, want BackupExists", ready)
	}
	st.Run("backup", "delete", "taken1", "--confirm")
	waitGone(t, st, isbKey("taken1"), "the failed ImageStreamsBackup")
	store := st.Store()
	defer store.Close()
	if _, err := store.Verify(ctx, "taken1"); err != nil {
		t.Errorf("the person's stored backup after the Velero backup of its name was deleted: %v", err)
	}
}

// A restore follows what is there: an imagestream that exists keeps its tags unless the
// restore asks to update existing resources; a person's ImageStreamsRestore that completed
// last week into other namespaces does not stand in for this restore's own pushes.
func TestRestoresRespectWhatIsThere(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	createNamespace(t, st, "exist")
	old := smallImageStream(t, st, "exist", "web")
	st.Run("backup", "create", "ex1", "--include-namespaces", "exist", "--wait")

	// Last week, a person restored ex1 into another namespace.
	lastWeek := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: stack.VeleroNamespace, Name: "last-week"}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "ex1"}, NamespaceMapping: map[string]string{"exist": "elsewhere"}}}
	if err := c.Create(ctx, lastWeek); err != nil {
		t.Fatal(err)
	}
	st.WaitFor(time.Minute, "last week's restore Completed", func() bool {
		return c.Get(ctx, client.ObjectKeyFromObject(lastWeek), lastWeek) == nil && lastWeek.Status.Phase == oadpv1alpha1.RestorePhaseCompleted
	})

	// Since the backup, web:latest moved on to a newer image.
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: st.Registry.Username, Password: st.Registry.Password}))
	repo := must(name.NewRepository(st.Registry.Host + "/exist/web"))
	newer := must(random.Image(8<<10, 1))
	if err := remote.Write(repo.Tag("latest"), newer, auth); err != nil {
		t.Fatal(err)
	}
	newerDigest := must(newer.Digest()).String()
	is := &imagev1.ImageStream{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "exist", Name: "web"}, is); err != nil {
		t.Fatal(err)
	}
	is.Status.Tags[0].Items = append([]imagev1.TagEvent{{DockerImageReference: repo.String() + "@" + newerDigest, Image: newerDigest, Created: metav1.Now()}}, is.Status.Tags[0].Items...)
	if err := c.Status().Update(ctx, is); err != nil {
		t.Fatal(err)
	}
	latest := func() string {
		d, err := remote.Head(repo.Tag("latest"), auth)
		if err != nil {
			t.Fatal(err)
		}
		return d.Digest.String()
	}

	st.Run("restore", "create", "ex-default", "--from-backup", "ex1", "--wait")
	if got := latest(); got != newerDigest {
		t.Errorf("exist/web:latest after a restore onto the existing imagestream = %s, want the newer %s left in place", got, newerDigest)
	}
	st.Run("restore", "create", "ex-update", "--from-backup", "ex1", "--existing-resource-policy", "update", "--wait")
	if got := latest(); got != old {
		t.Errorf("exist/web:latest after a restore with --existing-resource-policy update = %s, want the backed-up %s", got, old)
	}

	st.Run("restore", "create", "ex-mapped", "--from-backup", "ex1", "--namespace-mappings", "exist:exist3", "--wait")
	got, err := remote.Head(must(name.NewTag(st.Registry.Host+"/exist3/web:latest")), auth)
	if err != nil || got.Digest.String() != old {
		t.Errorf("exist3/web:latest = %v, %v; want %s pushed by this restore", got, err, old)
	}
}

func readyCondition(conds []metav1.Condition) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == oadpv1alpha1.ConditionReady {
			return &conds[i]
		}
	}
	return nil
}

// otherCluster stops this cluster's Velero and worker, starts a second cluster (its own control
// plane, registry, Velero and worker) on the same S3 server under prefix, and returns it; the
// first cluster comes back when the test ends. Velero's manager always listens on port 8080,
// so two cannot run at once here.
func otherCluster(t *testing.T, prefix string) *stack.Stack {
	t.Helper()
	st.StopVelero()
	st.KillWorker()
	t.Cleanup(func() {
		st.StartVelero(true)
		st.StartWorker()
		st.WaitForLocation()
	})
	other := &stack.Stack{S3: st.S3, Prefix: prefix}
	t.Cleanup(other.Stop)
	stack.Start(other)
	return other
}

// The cluster is lost; a fresh one with a Velero on the same location restores from the
// bucket alone, and deleting a backup there removes that backup's images and only its. The
// backups go to a location of their own (named otherwise in the fresh cluster, as Velero's sync
// allows), so that the fresh cluster syncs only them.
func TestAFreshClusterRestoresFromTheBucketAlone(t *testing.T) {
	ctx := context.Background()
	const prefix = "lost-cluster"
	st.AddLocation("dr", prefix)
	createNamespace(t, st, "lost")
	digests := map[string]string{"web": smallImageStream(t, st, "lost", "web"), "api": smallImageStream(t, st, "lost", "api")}
	st.Run("backup", "create", "lost1", "--include-namespaces", "lost", "--storage-location", "dr", "--wait")
	createNamespace(t, st, "lost2")
	smallImageStream(t, st, "lost2", "web")
	st.Run("backup", "create", "lost2", "--include-namespaces", "lost2", "--storage-location", "dr", "--wait")
	store := st.StoreAt(prefix)
	defer store.Close()
	before := storedBackups(t, store)
	if !slices.Equal(before, []string{"lost1", "lost2"}) {
		t.Fatalf("stored backups under %s: %v, want lost1 and lost2", prefix, before)
	}

	fresh := otherCluster(t, prefix)
	fc := fresh.Env.Client
	fresh.WaitFor(2*time.Minute, "Velero syncing lost1 into the fresh cluster", func() bool {
		vb := &velerov1.Backup{}
		return fc.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "lost1"}, vb) == nil && vb.Status.Phase == velerov1.BackupPhaseCompleted
	})
	if list := (&oadpv1alpha1.ImageStreamsBackupList{}); fc.List(ctx, list) != nil || len(list.Items) != 0 {
		t.Fatalf("the fresh cluster has ImageStreamsBackups: %+v", list.Items)
	}
	fresh.Run("restore", "create", "lost-r", "--from-backup", "lost1", "--wait")
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: fresh.Registry.Username, Password: fresh.Registry.Password}))
	for is, want := range digests {
		got, err := remote.Head(must(name.NewTag(fresh.Registry.Host+"/lost/"+is+":latest")), auth)
		if err != nil || got.Digest.String() != want {
			t.Errorf("lost/%s:latest in the fresh cluster's registry = %v, %v; want %s", is, got, err, want)
		}
	}

	fresh.Run("backup", "delete", "lost1", "--confirm")
	fresh.WaitFor(2*time.Minute, "lost1's stored images deleted", func() bool {
		ok, err := store.HasIndex(ctx, "lost1")
		return err == nil && !ok
	})
	waitGone(t, fresh, isbKey("lost1"), "the stand-in ImageStreamsBackup")
	var rest []string
	for _, n := range before {
		if n != "lost1" {
			rest = append(rest, n)
		}
	}
	if got := storedBackups(t, store); !slices.Equal(got, rest) {
		t.Errorf("stored backups after deleting lost1 in the fresh cluster: %v, want %v", got, rest)
	}
	verifyAll(t, store, rest)
}

// Uninstalling the operator deletes the Velero namespace: it finishes deleting, with the worker
// running or gone, and every stored backup stays in the bucket.
func TestUninstallingKeepsEveryStoredBackup(t *testing.T) {
	for _, tt := range []struct {
		name          string
		workerRunning bool
	}{{"with the worker running", true}, {"with the worker gone", false}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			prefix := "uninstall-" + strings.ReplaceAll(tt.name, " ", "-")
			other := otherCluster(t, prefix)
			oc := other.Env.Client
			createNamespace(t, other, "app")
			smallImageStream(t, other, "app", "web")
			digest := smallImageStream(t, other, "app", "api")
			other.Run("backup", "create", "u1", "--include-namespaces", "app", "--wait")
			person := &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: stack.VeleroNamespace, Name: "u-manual"},
				Spec: oadpv1alpha1.ImageStreamsBackupSpec{StartBackup: true, ImageStreams: []oadpv1alpha1.ImageStream{{Name: "api", Namespace: "app",
					DockerImageReferences: []oadpv1alpha1.DockerImageReference{{DockerImageReference: other.Registry.Host + "/app/api@" + digest}}}}}}
			if err := oc.Create(ctx, person); err != nil {
				t.Fatal(err)
			}
			other.WaitFor(time.Minute, "the person's backup Completed", func() bool {
				return oc.Get(ctx, client.ObjectKeyFromObject(person), person) == nil && person.Status.Phase == oadpv1alpha1.BackupPhaseCompleted
			})
			if !tt.workerRunning {
				other.KillWorker()
			}
			if err := oc.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: stack.VeleroNamespace}}); err != nil {
				t.Fatal(err)
			}
			waitGone(t, other, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: stack.VeleroNamespace}}, "the Velero namespace")
			store := other.Store()
			defer store.Close()
			if got := storedBackups(t, store); !slices.Equal(got, []string{"u-manual", "u1"}) {
				t.Errorf("stored backups after uninstalling: %v, want u-manual and u1", got)
			}
			verifyAll(t, store, []string{"u-manual", "u1"})
		})
	}
}
