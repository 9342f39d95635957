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
	t.Helper()
	restore := &velerov1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: restoreName, UID: types.UID("uid-" + restoreName)},
		Spec: velerov1.RestoreSpec{BackupName: "b1", NamespaceMapping: map[string]string{"ns1": "ns2"}}}
	// Velero maps the item's namespace after the actions ran (restore.go in Velero 1.18).
	return &velero.RestoreItemActionExecuteInput{Item: toUnstructured(is.DeepCopy()), ItemFromBackup: toUnstructured(is), Restore: restore}
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
		if mf.FieldsV1 != nil && strings.Contains(mf.FieldsV1.GetRawString(), `"f:namespaceMapping"`) {
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
		ImageStreams:                []oadpv1alpha1.ImageStream{{Name: "is", Namespace: "ns1"}},
		NamespaceMapping:            map[string]string{"ns1": "ns2"}}}
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

// A person's ImageStreamsRestore for the backup is joined only while it is still to run and
// pushes where this restore does: one that completed last week, or that restored into other
// namespaces, leaves this restore to push its own images.
func TestAPersonsRestoreIsJoinedOnlyWhenItPushesWhatThisRestoreNeeds(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	person := func(name string, mapping map[string]string) *oadpv1alpha1.ImageStreamsRestore {
		r := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
			ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b1"}, NamespaceMapping: mapping}}
		if err := env.Client.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	lastWeek := person("last-week", map[string]string{"ns1": "ns2"})
	lastWeek.Status.Phase = oadpv1alpha1.RestorePhaseCompleted
	lastWeek.Status.ObservedGeneration = lastWeek.Generation
	if err := env.Client.Status().Update(ctx, lastWeek); err != nil {
		t.Fatal(err)
	}
	person("into-ns1", nil) // still to run, but into the backed-up namespace
	out, err := newRestoreAction().Execute(restoreInput(t, ns, "r6", backedUpImageStream("is")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.OperationID, "r6/ns1/is/") {
		t.Errorf("operation ID %q, want the Velero restore's own ImageStreamsRestore r6", out.OperationID)
	}
}

// An imagestream already in the target namespace is left as it is by Velero's default policy,
// and its images too: pushing its backed-up tags would move them back to older images. With
// --existing-resource-policy update both are brought back.
func TestAnExistingImageStreamKeepsItsTags(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns2"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	existing := &imagev1.ImageStream{ObjectMeta: metav1.ObjectMeta{Namespace: "ns2", Name: "moved-on"}}
	if err := env.Client.Create(ctx, existing); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		restore string
		policy  velerov1.PolicyType
		pushes  bool
	}{
		{"r7", "", false},
		{"r8", velerov1.PolicyTypeNone, false},
		{"r9", velerov1.PolicyTypeUpdate, true},
	} {
		in := restoreInput(t, ns, tt.restore, backedUpImageStream("moved-on"))
		in.Restore.Spec.ExistingResourcePolicy = tt.policy
		out, err := newRestoreAction().Execute(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := out.OperationID != ""; got != tt.pushes || out.SkipRestore {
			t.Errorf("policy %q: operation %q, skip %v; want images restored: %v, and the imagestream left to Velero", tt.policy, out.OperationID, out.SkipRestore, tt.pushes)
		}
	}
}

// The Velero restore's ImageStreamsRestore reads the backup from the Velero backup's own
// location, which need not be the default one.
func TestTheImagesAreReadFromTheBackupsLocation(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	if err := env.Client.Create(ctx, &velerov1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b1"}, Spec: velerov1.BackupSpec{StorageLocation: "secondary"}}); err != nil {
		t.Fatal(err)
	}
	a := newRestoreAction()
	if _, err := a.Execute(restoreInput(t, ns, "r10", backedUpImageStream("is"))); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	isr := &oadpv1alpha1.ImageStreamsRestore{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "r10"}, isr); err != nil {
		t.Fatal(err)
	}
	if isr.Spec.BackupLocation == nil || isr.Spec.BackupLocation.Name != "secondary" {
		t.Errorf("backupLocation %+v, want the Velero backup's location secondary", isr.Spec.BackupLocation)
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

// A cluster-wide Velero backup holds the ImageStreamsBackups of every earlier backup: deleting
// it asks for the deletion of its own parts' stored images only.
func TestDeleteActionDeletesOnlyTheBackupsOwnParts(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	// Velero's sync names this cluster's location for the backup, which the old cluster (and so
	// the stored ImageStreamsBackups) may have called otherwise.
	backup := &velerov1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b4"}, Spec: velerov1.BackupSpec{StorageLocation: "this-cluster"}}
	part := func(name, veleroBackup, uid string) *oadpv1alpha1.ImageStreamsBackup {
		isb := &oadpv1alpha1.ImageStreamsBackup{TypeMeta: metav1.TypeMeta{APIVersion: oadpv1alpha1.GroupVersion.String(), Kind: "ImageStreamsBackup"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-of-" + name)},
			Spec:       oadpv1alpha1.ImageStreamsBackupSpec{BackupLocation: &oadpv1alpha1.BackupLocation{Name: "default"}}}
		if veleroBackup != "" {
			isb.Labels = map[string]string{action.LabelBackupName: veleroBackup, action.LabelBackupUID: uid}
			isb.Spec.VeleroBackupReference = &oadpv1alpha1.VeleroBackupReference{Name: veleroBackup, Namespace: ns, StartOnCompletion: true}
		}
		return isb
	}
	inTarball := []*oadpv1alpha1.ImageStreamsBackup{
		part("b4", "b4", "uid-b4"),            // the head, in the cluster
		part("b4-part1-aaaa", "b4", "uid-b4"), // a part this cluster lacks
		part("b1", "b1", "uid-b1"),            // an earlier Velero backup's
		part("manual1", "", ""),               // a person's
		part("b4-part2-aaaa", "b4", "uid-b4"), // a part whose name another backup took since
	}
	live := map[string]*oadpv1alpha1.ImageStreamsBackup{
		"b4": part("b4", "b4", "uid-b4"), "b1": part("b1", "b1", "uid-b1"), "manual1": part("manual1", "", ""),
		"b4-part2-aaaa": part("b4-part2-aaaa", "b4", "uid-of-a-later-b4"),
	}
	for _, isb := range live {
		isb = isb.DeepCopy()
		isb.UID = ""
		if err := env.Client.Create(ctx, isb); err != nil {
			t.Fatal(err)
		}
	}
	// The API server is busy at first: Velero asks once, so the action tries again.
	fc := &failingClient{Client: env.Client, err: apierrors.NewTooManyRequests("busy", 1)}
	fc.failures.Store(1)
	a := action.NewDeleteAction(logrus.New(), fc)
	for _, stored := range inTarball {
		if err := a.Execute(&velero.DeleteItemActionExecuteInput{Item: toUnstructured(stored), Backup: backup}); err != nil {
			t.Errorf("Execute(%s): %v", stored.Name, err)
		}
	}
	if fc.failures.Load() >= 0 {
		t.Errorf("the API server refused nothing; the test would not show a retry")
	}
	got := map[string]*oadpv1alpha1.ImageStreamsBackup{}
	list := &oadpv1alpha1.ImageStreamsBackupList{}
	if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		got[list.Items[i].Name] = &list.Items[i]
	}
	for name, want := range map[string]bool{"b4": true, "b4-part1-aaaa": true, "b1": false, "manual1": false, "b4-part2-aaaa": false} {
		isb, ok := got[name]
		switch {
		case !ok:
			t.Errorf("%s is gone: the action deletes no object, the worker does once the images are", name)
		case isb.Spec.DeleteStoredImages != want:
			t.Errorf("%s: deleteStoredImages = %v, want %v", name, isb.Spec.DeleteStoredImages, want)
		}
	}
	// The one this cluster lacked stands in for the original: it is never started, reads this
	// cluster's location of the backup, and names the original's uid, which wrote the index.
	if standIn := got["b4-part1-aaaa"]; standIn != nil && (standIn.Spec.StartBackup || standIn.Spec.VeleroBackupReference != nil ||
		standIn.Spec.BackupLocation.Name != "this-cluster" || standIn.Annotations[oadpv1alpha1.AnnotationOriginalUID] != "uid-of-b4-part1-aaaa" || len(standIn.Finalizers) != 0) {
		t.Errorf("stand-in %+v %+v, want it never started, at location this-cluster, naming the original's uid, without finalizers", standIn.ObjectMeta, standIn.Spec)
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
