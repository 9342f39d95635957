//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	imagev1 "github.com/openshift/api/image/v1"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
	"github.com/openshift/oadp-imagestreams-backup/test/stack"
)

var st = &stack.Stack{}

func TestMain(m *testing.M) {
	code := func() int {
		defer st.Stop()
		stack.Start(st)
		return m.Run()
	}()
	os.Exit(code)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func pushImageStream(t *testing.T, ns, isName string, tags map[string]remote.Taggable, external map[string]string) map[string]string {
	t.Helper()
	digests, err := st.PushImageStream(ns, isName, tags, external)
	if err != nil {
		t.Fatal(err)
	}
	return digests
}

func TestBackupAndRestoreWithVelero(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}); err != nil {
		t.Fatal(err)
	}
	web := pushImageStream(t, "app", "web", map[string]remote.Taggable{"latest": must(random.Image(64<<10, 2)), "v1": must(random.Image(64<<10, 2))}, nil)
	multi := pushImageStream(t, "app", "multi", map[string]remote.Taggable{"latest": must(random.Index(32<<10, 2, 3))},
		map[string]string{"upstream": "quay.io/org/external@sha256:" + strings.Repeat("e", 64)})

	// Scenario: velero backup create; the Backup completes only after the images are stored.
	st.Run("backup", "create", "b1", "--include-namespaces", "app", "--wait")
	vb := &velerov1.Backup{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "b1"}, vb); err != nil {
		t.Fatal(err)
	}
	isb := &oadpv1alpha1.ImageStreamsBackup{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "b1"}, isb); err != nil {
		t.Fatalf("no ImageStreamsBackup for the Velero backup: %v", err)
	}
	if vb.Status.Phase != velerov1.BackupPhaseCompleted || isb.Status.Phase != oadpv1alpha1.BackupPhaseCompleted {
		t.Fatalf("Velero backup %s, ImageStreamsBackup %s; want both Completed", vb.Status.Phase, isb.Status.Phase)
	}
	if !isb.Status.CompletionTimestamp.Time.Before(vb.Status.CompletionTimestamp.Add(time.Second)) {
		t.Errorf("the Velero backup completed at %v, before the images (%v)", vb.Status.CompletionTimestamp, isb.Status.CompletionTimestamp)
	}
	if p := isb.Status.Progress; p.ImagesTotal != 3 || p.ImagesDone != 3 {
		t.Errorf("image backup progress %+v, want the 3 internal images (the external one is not copied)", p)
	}
	if out := st.Run("backup", "describe", "b1", "--details"); !strings.Contains(out, "oadp.openshift.io/imagestreams-backup") {
		t.Errorf("velero backup describe does not show the image operations:\n%s", out)
	}
	store := st.Store()
	defer store.Close()
	entries := must(store.ReadIndex(ctx, "b1"))
	if len(entries) != 3 {
		t.Errorf("stored index has %d images, want 3", len(entries))
	}
	bsl := &velerov1.BackupStorageLocation{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "default"}, bsl); err != nil || bsl.Status.Phase != velerov1.BackupStorageLocationPhaseAvailable {
		t.Errorf("BackupStorageLocation %s (%v), want Available", bsl.Status.Phase, err)
	}

	// Scenario: restore into another namespace with velero restore create alone.
	st.Run("restore", "create", "r1", "--from-backup", "b1", "--namespace-mappings", "app:app2", "--wait")
	vr := &velerov1.Restore{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "r1"}, vr); err != nil || vr.Status.Phase != velerov1.RestorePhaseCompleted {
		t.Fatalf("Velero restore %s (%v), want Completed", vr.Status.Phase, err)
	}
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: st.Registry.Username, Password: st.Registry.Password}))
	for ref, want := range map[string]string{"app2/web:latest": web["latest"], "app2/web:v1": web["v1"], "app2/multi:latest": multi["latest"]} {
		got, err := remote.Get(must(name.NewTag(st.Registry.Host+"/"+ref)), auth)
		if err != nil || got.Digest.String() != want {
			t.Errorf("%s after restore = %v, %v; want %s", ref, got, err, want)
		}
	}
	if t.Failed() {
		isrs := &oadpv1alpha1.ImageStreamsRestoreList{}
		_ = c.List(ctx, isrs, client.InNamespace(stack.VeleroNamespace))
		t.Logf("ImageStreamsRestores: %s", must(yaml.Marshal(isrs.Items)))
		t.Logf("velero restore describe:\n%s", st.Run("restore", "describe", "r1", "--details"))
		t.Logf("velero restore logs:\n%s", st.Run("restore", "logs", "r1"))
		logs, _ := os.ReadFile(filepath.Join(st.Home(), "worker.log"))
		t.Logf("worker log:\n%s", logs)
	}
	restored := &imagev1.ImageStream{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "app2", Name: "web"}, restored); err != nil {
		t.Fatalf("imagestream not restored: %v", err)
	}
	if after := must(store.ReadIndex(ctx, "b1")); len(after) != len(entries) {
		t.Errorf("the restore changed b1's stored index")
	}
	list := &oadpv1alpha1.ImageStreamsBackupList{}
	if err := c.List(ctx, list, client.InNamespace(stack.VeleroNamespace)); err != nil || len(list.Items) != 1 {
		t.Errorf("ImageStreamsBackups after the restore: %d (%v), want only b1: a restore starts no image backup", len(list.Items), err)
	}

	// Scenario: a second backup of unchanged images uploads nothing. multi goes first, so that
	// some blobs belong to b1 alone.
	multiBlobs := must(store.ReadIndex(ctx, "b1"))
	if err := c.Delete(ctx, &imagev1.ImageStream{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "multi"}}); err != nil {
		t.Fatal(err)
	}
	st.Run("backup", "create", "b2", "--include-namespaces", "app", "--wait")
	isb2 := &oadpv1alpha1.ImageStreamsBackup{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "b2"}, isb2); err != nil || isb2.Status.Phase != oadpv1alpha1.BackupPhaseCompleted {
		t.Fatalf("b2's ImageStreamsBackup %s (%v), want Completed", isb2.Status.Phase, err)
	}
	if p := isb2.Status.Progress; p.BytesUploaded != 0 || p.ImagesDone != 2 || p.BytesSkipped == 0 {
		t.Errorf("second backup progress %+v, want 2 images and 0 bytes uploaded", p)
	}

	// Scenario: velero backup delete removes b1's images, keeps what b2 uses.
	st.Run("backup", "delete", "b1", "--confirm")
	st.WaitFor(time.Minute, "b1's stored index removed", func() bool {
		ok, err := store.HasIndex(ctx, "b1")
		return err == nil && !ok
	})
	var multiDigest v1.Hash
	for _, e := range multiBlobs {
		if e.ImageStream == "multi" {
			multiDigest = e.Descriptor.Digest
		}
	}
	st.WaitFor(time.Minute, "the blobs only b1 used collected", func() bool {
		ok, err := store.Has(ctx, multiDigest)
		return err == nil && !ok
	})
	out, err := exec.Command(peers.Binary(t, "IMAGESTREAMS_BACKUP_WORKER", "imagestreams-backup-worker"), "verify", "--provider", "aws",
		"--bucket", "velero", "--prefix", "cluster-a", "--backup", "b2", "--credentials-file", st.CredentialsFile,
		"--config", "region="+st.S3.Region+",s3Url="+st.S3.URL+",s3ForcePathStyle=true").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "every digest matches") {
		t.Errorf("imagestreams-backup-worker verify b2: %v\n%s", err, out)
	}
}

func TestMissingImageMakesTheVeleroBackupPartiallyFailed(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "broken"}}); err != nil {
		t.Fatal(err)
	}
	pushImageStream(t, "broken", "good", map[string]remote.Taggable{"latest": must(random.Image(16<<10, 1))}, nil)
	gone := st.Registry.Host + "/broken/gone@sha256:" + strings.Repeat("0", 64)
	is := &imagev1.ImageStream{ObjectMeta: metav1.ObjectMeta{Namespace: "broken", Name: "gone"}}
	if err := c.Create(ctx, is); err != nil {
		t.Fatal(err)
	}
	is.Status.DockerImageRepository = st.Registry.Host + "/broken/gone"
	is.Status.Tags = []imagev1.NamedTagEventList{{Tag: "latest", Items: []imagev1.TagEvent{{DockerImageReference: gone, Image: gone[strings.Index(gone, "@")+1:], Created: metav1.Now()}}}}
	if err := c.Status().Update(ctx, is); err != nil {
		t.Fatal(err)
	}
	st.Run("backup", "create", "b3", "--include-namespaces", "broken", "--wait")
	vb := &velerov1.Backup{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "b3"}, vb); err != nil || vb.Status.Phase != velerov1.BackupPhasePartiallyFailed {
		t.Fatalf("Velero backup %s (%v), want PartiallyFailed", vb.Status.Phase, err)
	}
	if out := st.Run("backup", "describe", "b3", "--details"); !strings.Contains(out, gone) {
		t.Errorf("velero backup describe does not name the missing image %s:\n%s", gone, out)
	}
	store := st.Store()
	defer store.Close()
	if entries := must(store.ReadIndex(ctx, "b3")); len(entries) != 1 || entries[0].ImageStream != "good" {
		t.Errorf("b3 stored %+v, want the good image", entries)
	}
}

// wipeNamespace deletes a namespace, which the namespace controller empties and removes.
func wipeNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	c := st.Env.Client
	if err := c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	st.WaitFor(time.Minute, "namespace "+ns+" gone", func() bool {
		return apierrors.IsNotFound(c.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{}))
	})
}

func TestRestoreAfterTheNamespaceAndImagesAreGone(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "wipe"}}); err != nil {
		t.Fatal(err)
	}
	img := must(random.Image(32<<10, 2))
	digests := pushImageStream(t, "wipe", "web", map[string]remote.Taggable{"latest": img}, nil)
	st.Run("backup", "create", "b4", "--include-namespaces", "wipe", "--wait")
	store := st.Store()
	defer store.Close()
	before := must(store.ReadIndex(ctx, "b4"))

	wipeNamespace(t, "wipe")
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: st.Registry.Username, Password: st.Registry.Password}))
	repo := must(name.NewRepository(st.Registry.Host + "/wipe/web"))
	if err := remote.Delete(repo.Digest(digests["latest"]), auth); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Head(repo.Tag("latest"), auth); err == nil {
		t.Fatal("the registry still has wipe/web:latest")
	}

	backups := &oadpv1alpha1.ImageStreamsBackupList{}
	if err := c.List(ctx, backups, client.InNamespace(stack.VeleroNamespace)); err != nil {
		t.Fatal(err)
	}
	st.Run("restore", "create", "r4", "--from-backup", "b4", "--status-include-resources", "imagestreams.image.openshift.io", "--wait")
	got, err := remote.Get(repo.Tag("latest"), auth)
	if err != nil || got.Digest.String() != digests["latest"] {
		t.Fatalf("wipe/web:latest after restore = %v, %v; want %s", got, err, digests["latest"])
	}
	is := &imagev1.ImageStream{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "wipe", Name: "web"}, is); err != nil {
		t.Fatal(err)
	}
	if is.Status.DockerImageRepository != st.Registry.Host+"/wipe/web" || len(is.Status.Tags) != 1 ||
		is.Status.Tags[0].Items[0].DockerImageReference != st.Registry.Host+"/wipe/web@"+digests["latest"] {
		t.Errorf("restored imagestream status %+v, want references to this registry", is.Status)
	}
	if after := must(store.ReadIndex(ctx, "b4")); len(after) != len(before) || after[0].Descriptor.Digest != before[0].Descriptor.Digest {
		t.Errorf("b4's stored index changed")
	}
	after := &oadpv1alpha1.ImageStreamsBackupList{}
	if err := c.List(ctx, after, client.InNamespace(stack.VeleroNamespace)); err != nil || len(after.Items) != len(backups.Items) {
		t.Errorf("ImageStreamsBackups went from %d to %d (%v): the restore started an image backup", len(backups.Items), len(after.Items), err)
	}
}

func TestAPersonsImageStreamsRestoreIsWaitedFor(t *testing.T) {
	ctx := context.Background()
	c := st.Env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pick"}}); err != nil {
		t.Fatal(err)
	}
	a := pushImageStream(t, "pick", "a", map[string]remote.Taggable{"latest": must(random.Image(16<<10, 1))}, nil)
	b := pushImageStream(t, "pick", "b", map[string]remote.Taggable{"latest": must(random.Image(16<<10, 1))}, nil)
	st.Run("backup", "create", "b5", "--include-namespaces", "pick", "--wait")

	// The person's restore is still to run when the Velero restore reaches the imagestreams
	// (the worker is down meanwhile): the Velero restore joins it rather than push a itself.
	st.KillWorker()
	mine := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: stack.VeleroNamespace, Name: "by-hand"}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b5"},
		ImageStreams:                []oadpv1alpha1.ImageStream{{Name: "a", Namespace: "pick"}},
		NamespaceMapping:            map[string]string{"pick": "pick2"}}}
	if err := c.Create(ctx, mine); err != nil {
		t.Fatal(err)
	}
	st.Run("restore", "create", "r5", "--from-backup", "b5", "--namespace-mappings", "pick:pick2")
	vr := &velerov1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: stack.VeleroNamespace, Name: "r5"}}
	st.WaitFor(time.Minute, "the Velero restore waiting for the images", func() bool {
		return c.Get(ctx, client.ObjectKeyFromObject(vr), vr) == nil && vr.Status.Phase == velerov1.RestorePhaseWaitingForPluginOperations
	})
	st.StartWorker()
	st.WaitFor(time.Minute, "the Velero restore Completed", func() bool {
		return c.Get(ctx, client.ObjectKeyFromObject(vr), vr) == nil && vr.Status.Phase == velerov1.RestorePhaseCompleted
	})
	if err := c.Get(ctx, client.ObjectKeyFromObject(mine), mine); err != nil || mine.Status.Phase != oadpv1alpha1.RestorePhaseCompleted || mine.Status.Progress.ImagesDone != 1 {
		t.Errorf("the person's restore %s with %d images (%v), want Completed with 1", mine.Status.Phase, mine.Status.Progress.ImagesDone, err)
	}
	own := &oadpv1alpha1.ImageStreamsRestore{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "r5"}, own); err != nil || len(own.Spec.ImageStreams) != 1 || own.Spec.ImageStreams[0].Name != "b" {
		t.Errorf("the Velero restore's own ImageStreamsRestore lists %+v (%v), want only b", own.Spec.ImageStreams, err)
	}
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: st.Registry.Username, Password: st.Registry.Password}))
	for ref, want := range map[string]string{"pick2/a:latest": a["latest"], "pick2/b:latest": b["latest"]} {
		got, err := remote.Get(must(name.NewTag(st.Registry.Host+"/"+ref)), auth)
		if err != nil || got.Digest.String() != want {
			t.Errorf("%s = %v, %v; want %s", ref, got, err, want)
		}
	}
}
