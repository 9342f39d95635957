package action_test

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	imagev1 "github.com/openshift/api/image/v1"
	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	biav2 "github.com/vmware-tanzu/velero/pkg/plugin/velero/backupitemaction/v2"
	riav2 "github.com/vmware-tanzu/velero/pkg/plugin/velero/restoreitemaction/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/action"
)

var (
	_ riav2.RestoreItemAction = (*action.RestoreAction)(nil)
	_ riav2.RestoreItemAction = (*action.TagRestoreAction)(nil)
	_ riav2.RestoreItemAction = (*action.SkipAction)(nil)
	_ biav2.BackupItemAction  = (*action.TagBackupAction)(nil)
	_ velero.DeleteItemAction = (*action.DeleteAction)(nil)
)

const (
	oldHost = "old-registry:5000"
	newHost = "new-registry:5000"
)

func toUnstructured(obj any) *unstructured.Unstructured {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		panic(err)
	}
	return &unstructured.Unstructured{Object: raw}
}

// backedUpImageStream is an imagestream of ns1 as the old cluster had it.
func backedUpImageStream(name string) *imagev1.ImageStream {
	return &imagev1.ImageStream{
		TypeMeta:   metav1.TypeMeta{APIVersion: "image.openshift.io/v1", Kind: "ImageStream"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: name},
		Spec: imagev1.ImageStreamSpec{Tags: []imagev1.TagReference{
			{Name: "pinned", From: &corev1.ObjectReference{Kind: "DockerImage", Name: oldHost + "/ns1/" + name + "@" + digest(1)}},
			{Name: "upstream", From: &corev1.ObjectReference{Kind: "DockerImage", Name: "quay.io/org/app:1"}},
			{Name: "alias", From: &corev1.ObjectReference{Kind: "ImageStreamTag", Namespace: "ns1", Name: "other:latest"}},
		}},
		Status: imagev1.ImageStreamStatus{
			DockerImageRepository: oldHost + "/ns1/" + name,
			Tags: []imagev1.NamedTagEventList{{Tag: "latest", Items: []imagev1.TagEvent{
				{DockerImageReference: oldHost + "/ns1/" + name + "@" + digest(1), Image: digest(1)},
			}}},
		},
	}
}

func restoreInput(t *testing.T, ns, restoreName string, is *imagev1.ImageStream) *velero.RestoreItemActionExecuteInput {
	restore := &velerov1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: restoreName, UID: types.UID("uid-" + restoreName)},
		Spec: velerov1.RestoreSpec{BackupName: "b1", NamespaceMapping: map[string]string{"ns1": "ns2"}}}
	mutated := is.DeepCopy()
	mutated.Namespace = "ns2" // Velero applies the namespace mapping before the action runs
	return &velero.RestoreItemActionExecuteInput{Item: toUnstructured(mutated), ItemFromBackup: toUnstructured(is), Restore: restore}
}

func newRestoreAction() *action.RestoreAction {
	return action.NewRestoreAction(logrus.New(), env.Client, func(context.Context) (string, error) { return newHost, nil })
}

func TestRestoreRewritesReferencesAndRestoresImagesThroughAnImageStreamsRestore(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	a := newRestoreAction()
	out, err := a.Execute(restoreInput(t, ns, "r1", backedUpImageStream("is")))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := &imagev1.ImageStream{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(out.UpdatedItem.UnstructuredContent(), got); err != nil {
		t.Fatal(err)
	}
	if f := got.Spec.Tags[0].From.Name; f != newHost+"/ns2/is@"+digest(1) {
		t.Errorf("pinned tag from %s, want %s", f, newHost+"/ns2/is@"+digest(1))
	}
	if f := got.Spec.Tags[1].From.Name; f != "quay.io/org/app:1" {
		t.Errorf("an external tag was rewritten to %s", f)
	}
	if f := got.Spec.Tags[2].From; f.Namespace != "ns2" || f.Name != "other:latest" {
		t.Errorf("alias tag from %s/%s, want ns2/other:latest", f.Namespace, f.Name)
	}
	if r := got.Status.Tags[0].Items[0].DockerImageReference; r != newHost+"/ns2/is@"+digest(1) {
		t.Errorf("status item %s, want %s", r, newHost+"/ns2/is@"+digest(1))
	}
	if got.Status.DockerImageRepository != newHost+"/ns2/is" || out.SkipRestore {
		t.Errorf("repository %s, skip %v", got.Status.DockerImageRepository, out.SkipRestore)
	}
	if !strings.HasPrefix(out.OperationID, "r1/ns1/is/") {
		t.Errorf("operation ID %q, want r1/ns1/is/<time>", out.OperationID)
	}
	isr := &oadpv1alpha1.ImageStreamsRestore{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "r1"}, isr); err != nil {
		t.Fatal(err)
	}
	if isr.Spec.BackupName() != "b1" || !reflect.DeepEqual(isr.Spec.NamespaceMapping, map[string]string{"ns1": "ns2"}) ||
		len(isr.Spec.ImageStreams) != 1 || isr.Spec.ImageStreams[0].Name != "is" || isr.Spec.ImageStreams[0].Namespace != "ns1" ||
		isr.Labels[action.LabelRestoreName] != "r1" {
		t.Errorf("ImageStreamsRestore %+v %+v, want backup b1, ns1/is, the mapping and a label", isr.ObjectMeta, isr.Spec)
	}
}

func TestRestoreActionsOfManyImageStreamsShareOneImageStreamsRestore(t *testing.T) {
	ns := env.Namespace(t)
	a := newRestoreAction()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := a.Execute(restoreInput(t, ns, "r2", backedUpImageStream(fmt.Sprintf("is-%02d", i)))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	isr := &oadpv1alpha1.ImageStreamsRestore{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "r2"}, isr); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, is := range isr.Spec.ImageStreams {
		names = append(names, is.Name)
	}
	sort.Strings(names)
	if len(names) != 20 || names[0] != "is-00" || names[19] != "is-19" {
		t.Errorf("ImageStreamsRestore lists %v, want all 20 imagestreams", names)
	}
	// Only the write that created it owns the labels, owner and mapping; later writes own
	// their entries alone, so the object does not grow by those with every write.
	owners := 0
	for _, mf := range isr.ManagedFields {
		if mf.FieldsV1 != nil && strings.Contains(string(mf.FieldsV1.Raw), `"f:namespaceMapping"`) {
			owners++
		}
	}
	if owners != 1 {
		t.Errorf("%d field managers own the namespace mapping, want 1", owners)
	}
}

func TestRestoreWaitsForAPersonsImageStreamsRestore(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	mine := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "by-hand"}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b1"},
		ImageStreams:                []oadpv1alpha1.ImageStream{{Name: "is", Namespace: "ns1"}}}}
	if err := env.Client.Create(ctx, mine); err != nil {
		t.Fatal(err)
	}
	a := newRestoreAction()
	out, err := a.Execute(restoreInput(t, ns, "r3", backedUpImageStream("is")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.OperationID, "by-hand/ns1/is/") {
		t.Errorf("operation ID %q, want the person's ImageStreamsRestore by-hand", out.OperationID)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "r3"}, &oadpv1alpha1.ImageStreamsRestore{}); !apierrors.IsNotFound(err) {
		t.Errorf("an ImageStreamsRestore was created beside the person's: %v", err)
	}
	// An imagestream the person's restore does not list gets the Velero restore's own.
	out, err = a.Execute(restoreInput(t, ns, "r3", backedUpImageStream("not-listed")))
	if err != nil || !strings.HasPrefix(out.OperationID, "r3/ns1/not-listed/") {
		t.Errorf("operation %q, %v; want r3/ns1/not-listed/<time>", out.OperationID, err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// Progress follows the person's restore; Cancel leaves it to them.
	restore := &velerov1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r3"}}
	if p, err := newRestoreAction().Progress("by-hand/ns1/is", restore); err != nil || p.Completed {
		t.Errorf("Progress of an unfinished restore = %+v, %v", p, err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(mine), mine); err != nil {
		t.Fatal(err)
	}
	mine.Status.Phase = oadpv1alpha1.RestorePhasePartiallyFailed
	mine.Status.ObservedGeneration = mine.Generation
	mine.Status.Failures = []oadpv1alpha1.ImageFailure{{Namespace: "ns1", ImageStream: "is", DockerImageReference: "x/ns1/is@" + digest(1), Reason: "ImageNotFound"}}
	if err := env.Client.Status().Update(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if p, err := newRestoreAction().Progress("by-hand/ns1/is", restore); err != nil || !p.Completed || p.Err != "1 images failed: x/ns1/is@"+digest(1)+": ImageNotFound" {
		t.Errorf("Progress = %+v, %v; want completed with the failure", p, err)
	}
	if err := a.Cancel("by-hand/ns1/is", restore); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(mine), mine); err != nil || mine.Spec.Cancel {
		t.Errorf("Cancel touched the person's restore: cancel=%v %v", mine.Spec.Cancel, err)
	}
	if err := a.Cancel("r3/ns1/not-listed", restore); err != nil {
		t.Fatal(err)
	}
	own := &oadpv1alpha1.ImageStreamsRestore{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "r3"}, own); err != nil || !own.Spec.Cancel {
		t.Errorf("Cancel of the restore's own ImageStreamsRestore: cancel=%v %v", own.Spec.Cancel, err)
	}
}

func TestImageStreamWithoutInternalImagesNeedsNoImageRestore(t *testing.T) {
	ns := env.Namespace(t)
	is := backedUpImageStream("ext")
	is.Status.Tags = []imagev1.NamedTagEventList{{Tag: "latest", Items: []imagev1.TagEvent{{DockerImageReference: "quay.io/org/app@" + digest(2), Image: digest(2)}}}}
	out, err := newRestoreAction().Execute(restoreInput(t, ns, "r4", is))
	if err != nil || out.OperationID != "" || out.SkipRestore {
		t.Errorf("Execute = %+v, %v; want the imagestream restored with no operation", out, err)
	}
}

func imageStreamTag(name string, from *corev1.ObjectReference, imageRef string) *imagev1.ImageStreamTag {
	tag := &imagev1.ImageStreamTag{TypeMeta: metav1.TypeMeta{APIVersion: "image.openshift.io/v1", Kind: "ImageStreamTag"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: name}, Image: imagev1.Image{DockerImageReference: imageRef}}
	if from != nil {
		tag.Tag = &imagev1.TagReference{Name: name[len("is:"):], From: from}
	}
	return tag
}

func TestImageStreamTagActions(t *testing.T) {
	restore := &velerov1.Restore{Spec: velerov1.RestoreSpec{NamespaceMapping: map[string]string{"ns1": "ns2"}}}
	ra := action.NewTagRestoreAction(logrus.New(), func(context.Context) (string, error) { return newHost, nil })
	internal := oldHost + "/ns1/is@" + digest(1)
	tests := []struct {
		name      string
		tag       *imagev1.ImageStreamTag
		wantSkip  bool
		wantFrom  string // namespace/name of the restored tag's from
		wantAfter string // the tag restored first
	}{
		{"a local tag is recreated by the image restore", imageStreamTag("is:latest", nil, internal), true, "", ""},
		{"a tag of an internal image is recreated by the image restore", imageStreamTag("is:pinned", &corev1.ObjectReference{Kind: "DockerImage", Name: internal}, internal), true, "", ""},
		{"a tag of an external image is restored", imageStreamTag("is:upstream", &corev1.ObjectReference{Kind: "DockerImage", Name: "quay.io/org/app:1"}, "quay.io/org/app@"+digest(3)), false, "/quay.io/org/app:1", ""},
		{"a reference to another tag is restored with its namespace mapped", imageStreamTag("is:alias", &corev1.ObjectReference{Kind: "ImageStreamTag", Namespace: "ns1", Name: "other:latest"}, internal), false, "ns2/other:latest", "ns2/other:latest"},
	}
	ba := action.NewTagBackupAction(logrus.New(), func(context.Context) (string, error) { return oldHost, nil })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Back it up first, as Velero would, so that the restore sees the annotations.
			backedUp, extra, _, _, err := ba.Execute(toUnstructured(tt.tag), &velerov1.Backup{})
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantAfter != "" && (len(extra) != 1 || extra[0].Namespace != "ns1" || extra[0].Name != "other:latest") {
				t.Errorf("backup additional items %+v, want ns1/other:latest", extra)
			}
			out, err := ra.Execute(&velero.RestoreItemActionExecuteInput{Item: backedUp, ItemFromBackup: backedUp, Restore: restore})
			if err != nil {
				t.Fatal(err)
			}
			if out.SkipRestore != tt.wantSkip {
				t.Fatalf("skip %v, want %v", out.SkipRestore, tt.wantSkip)
			}
			if tt.wantSkip {
				return
			}
			got := &imagev1.ImageStreamTag{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(out.UpdatedItem.UnstructuredContent(), got); err != nil {
				t.Fatal(err)
			}
			if from := got.Tag.From.Namespace + "/" + got.Tag.From.Name; from != tt.wantFrom {
				t.Errorf("from %s, want %s", from, tt.wantFrom)
			}
			var after string
			if len(out.AdditionalItems) == 1 {
				after = out.AdditionalItems[0].Namespace + "/" + out.AdditionalItems[0].Name
			}
			if after != tt.wantAfter {
				t.Errorf("restored after %q, want %q", after, tt.wantAfter)
			}
		})
	}
}

func TestSkipActions(t *testing.T) {
	for _, a := range []*action.SkipAction{action.NewImageTagSkipAction(), action.NewBackupSkipAction()} {
		item := &unstructured.Unstructured{Object: map[string]any{"kind": "x"}}
		out, err := a.Execute(&velero.RestoreItemActionExecuteInput{Item: item, ItemFromBackup: item, Restore: &velerov1.Restore{}})
		if err != nil || !out.SkipRestore {
			t.Errorf("%s: Execute = %+v, %v; want the item skipped", a.Name(), out, err)
		}
	}
	sel, _ := action.NewBackupSkipAction().AppliesTo()
	if !reflect.DeepEqual(sel.IncludedResources, []string{"imagestreamsbackups.oadp.openshift.io"}) {
		t.Errorf("AppliesTo = %v", sel.IncludedResources)
	}
}

func TestDeleteActionHandsTheImagesToTheWorker(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	a := action.NewDeleteAction(logrus.New(), env.Client)
	backup := &velerov1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b1"}}
	stored := func(name string) *unstructured.Unstructured {
		return toUnstructured(&oadpv1alpha1.ImageStreamsBackup{TypeMeta: metav1.TypeMeta{APIVersion: oadpv1alpha1.GroupVersion.String(), Kind: "ImageStreamsBackup"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "elsewhere", Name: name},
			Spec:       oadpv1alpha1.ImageStreamsBackupSpec{BackupLocation: &oadpv1alpha1.BackupLocation{Name: "default"}}})
	}

	live := &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b1"}}
	if err := env.Client.Create(ctx, live); err != nil {
		t.Fatal(err)
	}
	if err := a.Execute(&velero.DeleteItemActionExecuteInput{Item: stored("b1"), Backup: backup}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(live), live); !apierrors.IsNotFound(err) {
		t.Errorf("the ImageStreamsBackup in the cluster was not deleted: %v", err)
	}

	// On a cluster that only has the Velero backup, an inert copy is made for the worker to
	// delete: it is never started and carries the worker's finalizer.
	if err := a.Execute(&velero.DeleteItemActionExecuteInput{Item: stored("b1.3"), Backup: backup}); err != nil {
		t.Fatal(err)
	}
	inert := &oadpv1alpha1.ImageStreamsBackup{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "b1.3"}, inert); err != nil {
		t.Fatal(err)
	}
	if inert.DeletionTimestamp.IsZero() || inert.Spec.StartBackup || inert.Spec.VeleroBackupReference != nil ||
		inert.Spec.BackupLocation.Name != "default" || len(inert.Finalizers) != 1 {
		t.Errorf("inert copy %+v %+v, want it deleting, never started, at location default, with the worker's finalizer", inert.ObjectMeta, inert.Spec)
	}
}

// An imagestream's operation waits while its entry may still be on its way into the Velero
// restore's ImageStreamsRestore, and fails once it certainly is not coming.
func TestRestoreProgressOfAnImageStreamNeverWritten(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	a := newRestoreAction()
	in := restoreInput(t, ns, "r4", backedUpImageStream("is"))
	if _, err := a.Execute(in); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ago := func(d time.Duration) string { return fmt.Sprint(time.Now().Add(-d).Unix()) }
	if p, err := a.Progress("r4/ns1/ghost/"+ago(time.Second), in.Restore); err != nil || p.Completed {
		t.Errorf("Progress of an imagestream queued a second ago = %+v, %v; want not completed", p, err)
	}
	if p, err := a.Progress("r4/ns1/ghost/"+ago(time.Hour), in.Restore); err != nil || !p.Completed || !strings.Contains(p.Err, "ns1/ghost was never written") {
		t.Errorf("Progress of an imagestream queued an hour ago and never written = %+v, %v; want completed with an error", p, err)
	}
	if p, err := a.Progress("gone/ns1/is/"+ago(time.Second), in.Restore); err != nil || p.Completed {
		t.Errorf("Progress while the ImageStreamsRestore is not yet created = %+v, %v; want not completed", p, err)
	}
}
