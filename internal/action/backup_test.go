package action_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	imagev1 "github.com/openshift/api/image/v1"
	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	biav2 "github.com/vmware-tanzu/velero/pkg/plugin/velero/backupitemaction/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/action"
	"github.com/openshift/oadp-imagestreams-backup/test/testenv"
)

var env *testenv.Environment

func TestMain(m *testing.M) { testenv.Main(m, &env) }

var _ biav2.BackupItemAction = (*action.BackupAction)(nil)

const host = "image-registry.openshift-image-registry.svc:5000"

func digest(n int) string { return fmt.Sprintf("sha256:%064x", n) }

// tag is one status.tags[] entry: its history, newest first, as references.
type tag struct {
	name  string
	items []string // "<repository>@<digest>"
}

func imageStream(ns, name string, tags ...tag) *unstructured.Unstructured {
	is := &imagev1.ImageStream{TypeMeta: metav1.TypeMeta{APIVersion: "image.openshift.io/v1", Kind: "ImageStream"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, t := range tags {
		st := imagev1.NamedTagEventList{Tag: t.name}
		for _, ref := range t.items {
			st.Items = append(st.Items, imagev1.TagEvent{DockerImageReference: ref, Image: ref[len(ref)-71:]})
		}
		is.Status.Tags = append(is.Status.Tags, st)
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(is)
	if err != nil {
		panic(err)
	}
	return &unstructured.Unstructured{Object: raw}
}

func newBackupObject(t *testing.T, ns, name string, totalItems int) *velerov1.Backup {
	t.Helper()
	b := &velerov1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: velerov1.BackupSpec{StorageLocation: "default"}}
	if err := env.Client.Create(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Status = velerov1.BackupStatus{Phase: velerov1.BackupPhaseInProgress, Progress: &velerov1.BackupProgress{TotalItems: totalItems}}
	return b
}

func newAction() *action.BackupAction {
	return action.NewBackupAction(logrus.New(), env.Client, func(context.Context) (string, error) { return host, nil })
}

func TestAppliesToImageStreamsOnly(t *testing.T) {
	sel, err := newAction().AppliesTo()
	if err != nil || !reflect.DeepEqual(sel.IncludedResources, []string{"imagestreams.image.openshift.io"}) || len(sel.IncludedNamespaces) != 0 {
		t.Errorf("AppliesTo() = %+v, %v", sel, err)
	}
}

func TestExecuteRecordsInternalImagesUnderTheImageStreamsOwnRepository(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	backup := newBackupObject(t, ns, "b1", 10)
	item := imageStream("app2", "web",
		// latest was promoted from app1: its stored reference names app1's repository.
		tag{"latest", []string{host + "/app1/web@" + digest(1), "quay.io/org/web@" + digest(2)}},
		tag{"v1", []string{host + "/app2/web@" + digest(3), host + "/app1/web@" + digest(1)}},
		tag{"external", []string{"quay.io/org/web@" + digest(4)}},
	)
	before := item.DeepCopy()

	a := newAction()
	got, extra, opID, post, err := a.Execute(item, backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, before) || extra != nil {
		t.Errorf("Execute changed the item or added items: %v", extra)
	}
	// The first imagestream of a part returns the operation of the part's first write.
	if !regexp.MustCompile(`^b1/\*/[0-9a-f]{16}/[0-9]+$`).MatchString(opID) {
		t.Errorf("operation ID %q, want b1/*/<plugin process>/<time>", opID)
	}
	if isb := (&oadpv1alpha1.ImageStreamsBackup{}); env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "b1"}, isb) != nil ||
		isb.Annotations[oadpv1alpha1.AnnotationRecordedByPrefix+strings.Split(opID, "/")[2]] != "1" {
		t.Errorf("the part does not say the plugin process wrote one imagestream into it: annotations %v", isb.Annotations)
	}
	if len(post) != 1 || post[0].Resource != "imagestreamsbackups" || post[0].Group != "oadp.openshift.io" || post[0].Name != "b1" || post[0].Namespace != ns {
		t.Errorf("post-operation items %+v, want the ImageStreamsBackup b1", post)
	}

	isb := &oadpv1alpha1.ImageStreamsBackup{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "b1"}, isb); err != nil {
		t.Fatal(err)
	}
	want := []oadpv1alpha1.ImageStream{{Name: "web", Namespace: "app2", DockerImageReferences: []oadpv1alpha1.DockerImageReference{
		{DockerImageReference: host + "/app2/web@" + digest(1), Tags: []string{"latest"}},
		{DockerImageReference: host + "/app2/web@" + digest(3), Tags: []string{"v1"}},
	}}}
	if !reflect.DeepEqual(isb.Spec.ImageStreams, want) {
		t.Errorf("recorded %+v, want %+v", isb.Spec.ImageStreams, want)
	}
	s := isb.Spec
	if s.StartBackup || s.VeleroBackupReference == nil || *s.VeleroBackupReference != (oadpv1alpha1.VeleroBackupReference{Name: "b1", Namespace: ns, StartOnCompletion: true}) ||
		s.BackupLocation == nil || s.BackupLocation.Name != "default" {
		t.Errorf("spec %+v, want a gated backup of b1 at location default", s)
	}
	// Labels link it to the Velero backup; an owner reference would have the garbage
	// collector delete it with the Backup object, which Velero brings back from object storage.
	if isb.Labels[action.LabelBackupName] != "b1" || isb.Labels[action.LabelBackupUID] != string(backup.UID) || len(isb.OwnerReferences) != 0 {
		t.Errorf("metadata %+v, want labels naming the Velero backup and its uid, and no owner", isb.ObjectMeta)
	}
}

func TestExecuteWithoutInternalImagesOrWhileFinalizingStartsNothing(t *testing.T) {
	ns := env.Namespace(t)
	external := imageStream("app", "ext", tag{"latest", []string{"quay.io/org/web@" + digest(5)}})
	internal := imageStream("app", "web", tag{"latest", []string{host + "/app/web@" + digest(6)}})
	finalizing := newBackupObject(t, ns, "b-final", 10)
	finalizing.Status.Phase = velerov1.BackupPhaseFinalizing
	tests := []struct {
		name   string
		item   *unstructured.Unstructured
		backup *velerov1.Backup
	}{
		{"an imagestream of external images only", external, newBackupObject(t, ns, "b-ext", 10)},
		{"a backup that is finalizing", internal, finalizing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, opID, post, err := newAction().Execute(tt.item, tt.backup)
			if err != nil || opID != "" || post != nil {
				t.Errorf("Execute = %q, %v, %v; want no operation", opID, post, err)
			}
			err = env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: tt.backup.Name}, &oadpv1alpha1.ImageStreamsBackup{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("an ImageStreamsBackup was created: %v", err)
			}
		})
	}
}

// recorded returns, per ImageStreamsBackup of a Velero backup, the imagestreams it holds.
func recorded(t *testing.T, ns, backup string) map[string][]string {
	t.Helper()
	list := &oadpv1alpha1.ImageStreamsBackupList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns), client.MatchingLabels{action.LabelBackupName: backup}); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, isb := range list.Items {
		for _, is := range isb.Spec.ImageStreams {
			out[isb.Name] = append(out[isb.Name], is.Namespace+"/"+is.Name)
		}
		sort.Strings(out[isb.Name])
	}
	return out
}

func TestFiftyConcurrentExecutesLoseNothing(t *testing.T) {
	ns := env.Namespace(t)
	a := newAction()
	b1, b2 := newBackupObject(t, ns, "b1", 50), newBackupObject(t, ns, "b2", 50) // one part each
	var wg sync.WaitGroup
	errs := make(chan error, 70)
	for i := range 50 {
		wg.Go(func() {
			item := imageStream("app", fmt.Sprintf("is-%02d", i), tag{"latest", []string{fmt.Sprintf("%s/app/is-%02d@%s", host, i, digest(100+i))}})
			_, _, _, _, err := a.Execute(item, b1)
			errs <- err
		})
	}
	// A second backup at the same time, of other imagestreams.
	for i := range 20 {
		wg.Go(func() {
			item := imageStream("other", fmt.Sprintf("is-%02d", i), tag{"latest", []string{fmt.Sprintf("%s/other/is-%02d@%s", host, i, digest(200+i))}})
			_, _, _, _, err := a.Execute(item, b2)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var want1, want2 []string
	for i := range 50 {
		want1 = append(want1, fmt.Sprintf("app/is-%02d", i))
	}
	for i := range 20 {
		want2 = append(want2, fmt.Sprintf("other/is-%02d", i))
	}
	if got := recorded(t, ns, "b1"); !reflect.DeepEqual(got, map[string][]string{"b1": want1}) {
		t.Errorf("b1 recorded %v, want all 50 imagestreams in b1", got)
	}
	if got := recorded(t, ns, "b2"); !reflect.DeepEqual(got, map[string][]string{"b2": want2}) {
		t.Errorf("b2 recorded %v, want its 20 imagestreams in b2", got)
	}
}

func TestLargeBackupsAreSplitIntoParts(t *testing.T) {
	ns := env.Namespace(t)
	a := newAction()
	backup := newBackupObject(t, ns, "big", 3000)
	var wg sync.WaitGroup
	ops := make([]string, 100)
	var mu sync.Mutex
	named := map[string]int{} // post-operation items, by part
	for i := range 100 {
		wg.Go(func() {
			item := imageStream("app", fmt.Sprintf("is-%03d", i), tag{"latest", []string{fmt.Sprintf("%s/app/is-%03d@%s", host, i, digest(i))}})
			_, _, op, post, err := a.Execute(item, backup)
			if err != nil {
				t.Error(err)
				return
			}
			if op == "" && len(post) > 0 {
				// Velero keeps post-operation items only with an operation.
				t.Errorf("post-operation items %v without an operation", post)
			}
			mu.Lock()
			for _, p := range post {
				named[p.Name]++
			}
			mu.Unlock()
			ops[i] = op
		})
	}
	wg.Wait()
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	parts := recorded(t, ns, "big")
	head := &oadpv1alpha1.ImageStreamsBackup{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "big"}, head); err != nil {
		t.Fatal(err)
	}
	// Parts are filled in turn, 50 imagestreams each.
	if head.Annotations[oadpv1alpha1.AnnotationParts] != "60" || len(parts) != 2 {
		t.Errorf("a 3,000-item backup of 100 imagestreams has %d parts (annotation %q), want 60 of which 2 filled", len(parts), head.Annotations[oadpv1alpha1.AnnotationParts])
	}
	total := 0
	for name, streams := range parts {
		if len(streams) != 50 {
			t.Errorf("part %s holds %d imagestreams, want 50", name, len(streams))
		}
		total += len(streams)
		// One of the part's imagestreams returns the operation of the whole part; the others
		// return none, or, while that one's Execute had not returned, one of their own.
		var partOps []string
		for _, s := range streams {
			i := 0
			if _, err := fmt.Sscanf(s, "app/is-%03d", &i); err != nil {
				t.Fatal(err)
			}
			switch {
			case strings.HasPrefix(ops[i], name+"/*/"):
				partOps = append(partOps, ops[i])
			case ops[i] != "" && !strings.HasPrefix(ops[i], name+"/"+s+"/"):
				t.Errorf("operation %q of %s, want none, the part's, or %s/%s/<time>", ops[i], s, name, s)
			}
		}
		if len(partOps) != 1 {
			t.Errorf("operations of part %s: %q, want one, %s/*/<plugin process>/<time>", name, partOps, name)
		}
	}
	if total != 100 {
		t.Errorf("parts hold %d imagestreams, want 100", total)
	}
	// The head lists the other parts that hold imagestreams; each is named after the backup and
	// the start of its uid, so that it names no other Velero backup's head.
	var others []string
	for name := range parts {
		if name != "big" {
			others = append(others, name)
			if !regexp.MustCompile(`^big-part[0-9]+-` + strings.ReplaceAll(string(backup.UID), "-", "")[:8] + `$`).MatchString(name) {
				t.Errorf("part name %q, want big-part<k>-<uid>", name)
			}
		}
	}
	sort.Strings(others)
	if !reflect.DeepEqual(head.Spec.Parts, others) {
		t.Errorf("head lists parts %q, want %q", head.Spec.Parts, others)
	}
	// Velero backs up each part again once the operations end: each is named exactly once.
	for name := range parts {
		if named[name] != 1 {
			t.Errorf("part %s named as a post-operation item %d times, want once", name, named[name])
		}
	}
	// The head, which lists them, is named too, though it holds no imagestream of its own.
	if named["big"] != 1 || len(named) != len(parts)+1 {
		t.Errorf("post-operation items %v, want the %d parts and the head", named, len(parts))
	}
}

func TestProgressAndCancel(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	a := newAction()
	backup := newBackupObject(t, ns, "b1", 10)
	var partOp string // web's: the operation of the part's first write, which holds both
	for _, name := range []string{"web", "api"} {
		item := imageStream("app", name, tag{"latest", []string{host + "/app/" + name + "@" + digest(7)}}, tag{"v1", []string{host + "/app/" + name + "@" + digest(8)}})
		_, _, op, _, err := a.Execute(item, backup)
		if err != nil {
			t.Fatal(err)
		}
		partOp += op
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	isb := &oadpv1alpha1.ImageStreamsBackup{}
	key := client.ObjectKey{Namespace: ns, Name: "b1"}
	if err := env.Client.Get(ctx, key, isb); err != nil {
		t.Fatal(err)
	}
	gen := isb.Generation
	start := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	end := metav1.NewTime(time.Now().Truncate(time.Second))
	tests := []struct {
		name          string
		status        oadpv1alpha1.ImageStreamsBackupStatus
		op            string
		wantCompleted bool
		wantDone      int64
		wantErr       string
	}{
		{"waiting for Velero", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhaseWaitingForVeleroBackup}, "b1/app/web", false, 0, ""},
		{"copying", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhaseInProgress,
			CommonStatus: oadpv1alpha1.CommonStatus{StartTimestamp: &start, Progress: oadpv1alpha1.Progress{ImagesTotal: 4, ImagesDone: 1}}}, "b1/app/web", false, 0, ""},
		{"completed", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhaseCompleted,
			CommonStatus: oadpv1alpha1.CommonStatus{ObservedGeneration: gen, StartTimestamp: &start, CompletionTimestamp: &end}}, "b1/app/web", true, 2, ""},
		{"completed before the imagestream was written", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhaseCompleted,
			CommonStatus: oadpv1alpha1.CommonStatus{ObservedGeneration: gen - 1, StartTimestamp: &start, CompletionTimestamp: &end}}, "b1/app/web", false, 0, ""},
		{"one image of another imagestream failed", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhasePartiallyFailed,
			CommonStatus: oadpv1alpha1.CommonStatus{ObservedGeneration: gen, StartTimestamp: &start, CompletionTimestamp: &end, Failures: []oadpv1alpha1.ImageFailure{
				{Namespace: "app", ImageStream: "api", DockerImageReference: host + "/app/api@" + digest(8), Reason: "ImageNotFound"}}}}, "b1/app/web", true, 2, ""},
		{"one image of this imagestream failed", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhasePartiallyFailed,
			CommonStatus: oadpv1alpha1.CommonStatus{ObservedGeneration: gen, StartTimestamp: &start, CompletionTimestamp: &end, Failures: []oadpv1alpha1.ImageFailure{
				{Namespace: "app", ImageStream: "api", DockerImageReference: host + "/app/api@" + digest(8), Reason: "ImageNotFound"}}}}, "b1/app/api", true, 1,
			"1 images failed: " + host + "/app/api@" + digest(8) + ": ImageNotFound"},
		{"the image backup failed", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhaseFailed, CommonStatus: oadpv1alpha1.CommonStatus{
			Conditions: []metav1.Condition{{Type: "Ready", Status: "False", Reason: "VeleroBackupFailed", Message: "Velero backup failed", LastTransitionTime: end}}}},
			"b1/app/web", true, 0, "ImageStreamsBackup b1 Failed: Velero backup failed"},
		// The part's operation counts the images of both imagestreams, and fails with any.
		{"part: copying", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhaseInProgress,
			CommonStatus: oadpv1alpha1.CommonStatus{StartTimestamp: &start, Progress: oadpv1alpha1.Progress{ImagesTotal: 4, ImagesDone: 1}}}, partOp, false, 0, ""},
		{"part: completed", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhaseCompleted,
			CommonStatus: oadpv1alpha1.CommonStatus{ObservedGeneration: gen, StartTimestamp: &start, CompletionTimestamp: &end}}, partOp, true, 4, ""},
		{"part: completed before its imagestreams were written", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhaseCompleted,
			CommonStatus: oadpv1alpha1.CommonStatus{ObservedGeneration: gen - 1, StartTimestamp: &start, CompletionTimestamp: &end}}, partOp, false, 0, ""},
		{"part: one image failed", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhasePartiallyFailed,
			CommonStatus: oadpv1alpha1.CommonStatus{ObservedGeneration: gen, StartTimestamp: &start, CompletionTimestamp: &end,
				Progress: oadpv1alpha1.Progress{ImagesTotal: 4, ImagesDone: 3, ImagesFailed: 1},
				Failures: []oadpv1alpha1.ImageFailure{{Namespace: "app", ImageStream: "api", DockerImageReference: host + "/app/api@" + digest(8), Reason: "ImageNotFound"}},
			}}, partOp, true, 3, "1 images failed: " + host + "/app/api@" + digest(8) + ": ImageNotFound"},
		{"part: two images failed, one listed", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhasePartiallyFailed,
			CommonStatus: oadpv1alpha1.CommonStatus{ObservedGeneration: gen, StartTimestamp: &start, CompletionTimestamp: &end,
				Progress: oadpv1alpha1.Progress{ImagesTotal: 4, ImagesDone: 2, ImagesFailed: 2},
				Failures: []oadpv1alpha1.ImageFailure{{Namespace: "app", ImageStream: "api", DockerImageReference: host + "/app/api@" + digest(8), Reason: "ImageNotFound"}},
			}}, partOp, true, 2, "2 images failed: " + host + "/app/api@" + digest(8) + ": ImageNotFound (1 not listed in status.failures)"},
		{"part: partially failed, no failure counted", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhasePartiallyFailed,
			CommonStatus: oadpv1alpha1.CommonStatus{ObservedGeneration: gen, StartTimestamp: &start, CompletionTimestamp: &end}}, partOp, true, 4, "ImageStreamsBackup b1 PartiallyFailed"},
		{"part: the image backup failed", oadpv1alpha1.ImageStreamsBackupStatus{Phase: oadpv1alpha1.BackupPhaseFailed, CommonStatus: oadpv1alpha1.CommonStatus{
			Conditions: []metav1.Condition{{Type: "Ready", Status: "False", Reason: "VeleroBackupFailed", Message: "Velero backup failed", LastTransitionTime: end}}}},
			partOp, true, 0, "ImageStreamsBackup b1 Failed: Velero backup failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isb.Status = tt.status
			if err := env.Client.Status().Update(ctx, isb); err != nil {
				t.Fatal(err)
			}
			// Velero polls progress from a new plugin process each round.
			p, err := newAction().Progress(tt.op, backup)
			if err != nil {
				t.Fatal(err)
			}
			total := int64(2)
			if tt.op == partOp {
				total = 4
			}
			if p.Completed != tt.wantCompleted || p.NCompleted != tt.wantDone || p.NTotal != total || p.Err != tt.wantErr || p.OperationUnits != "images" {
				t.Errorf("Progress = %+v, want completed %v, %d of %d images, error %q", p, tt.wantCompleted, tt.wantDone, total, tt.wantErr)
			}
			if tt.status.StartTimestamp != nil && !p.Started.Equal(start.Time) {
				t.Errorf("Started = %v, want %v", p.Started, start)
			}
		})
	}

	checkUnwrittenAndCancel(t, a, backup, key)
}

// checkUnwrittenAndCancel checks Progress of operations whose imagestream or object is missing,
// and Cancel, on the part key of backup that a wrote.
func checkUnwrittenAndCancel(t *testing.T, a *action.BackupAction, backup *velerov1.Backup, key client.ObjectKey) {
	t.Helper()
	ctx := context.Background()
	isb := &oadpv1alpha1.ImageStreamsBackup{}
	queued := func(age time.Duration) string { return fmt.Sprint(time.Now().Add(-age).Unix()) }
	if _, err := a.Progress("not-an-operation", backup); err == nil {
		t.Errorf("Progress accepted a malformed operation ID")
	}
	// An imagestream queued a moment ago may still be on its way into the part; one queued
	// long ago was lost (the plugin killed before writing it) and its operation fails.
	if p, err := a.Progress("b1/app/late/"+queued(time.Second), backup); err != nil || p.Completed {
		t.Errorf("Progress of an imagestream queued a second ago = %+v, %v; want not completed", p, err)
	}
	if p, err := a.Progress("b1/app/lost/"+queued(10*time.Minute), backup); err != nil || !p.Completed || !strings.Contains(p.Err, "app/lost was never written") {
		t.Errorf("Progress of an imagestream queued 10 minutes ago and never written = %+v, %v; want completed with an error", p, err)
	}
	if p, err := a.Progress("gone/app/web", backup); err != nil || !p.Completed || p.Err == "" {
		t.Errorf("Progress of a deleted ImageStreamsBackup = %+v, %v; want completed with an error", p, err)
	}

	if err := a.Cancel("b1/app/web", backup); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, key, isb); err != nil || !isb.Spec.Cancel {
		t.Errorf("after Cancel spec.cancel = %v (%v), want true", isb.Spec.Cancel, err)
	}
	if err := a.Cancel("gone/app/web", backup); err != nil {
		t.Errorf("Cancel of a deleted ImageStreamsBackup = %v, want nil", err)
	}
}

func TestRegistryHostComesFromTheClusterImageConfig(t *testing.T) {
	ctx := context.Background()
	lookup := action.RegistryHost(env.Client)
	img := &configClusterImage{}
	img.ensure(t, "registry.example:5000")
	if got, err := lookup(ctx); err != nil || got != "registry.example:5000" {
		t.Errorf("RegistryHost() = %q, %v", got, err)
	}
	t.Setenv(action.RegistryHostEnv, "override:5000")
	if got, _ := lookup(ctx); got != "override:5000" {
		t.Errorf("RegistryHost() with %s = %q", action.RegistryHostEnv, got)
	}
}

// countingClient counts the reads of ImageStreamsBackups and the writes (creates and
// applies) of anything.
type countingClient struct {
	client.Client
	gets, writes atomic.Int64
}

func (c *countingClient) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	c.writes.Add(1)
	return c.Client.Apply(ctx, obj, opts...)
}

func (c *countingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.writes.Add(1)
	return c.Client.Create(ctx, obj, opts...)
}

func (c *countingClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*oadpv1alpha1.ImageStreamsBackup); ok {
		c.gets.Add(1)
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// Velero asks for the progress of every operation in a row, every few seconds, from a new
// plugin process each time; a round over a part's hundred imagestreams reads the part once, not
// a hundred times.
func TestARoundOfProgressReadsEachPartOnce(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	a := newAction()
	cc := &countingClient{Client: env.Client}
	later := action.NewBackupAction(logrus.New(), cc, func(context.Context) (string, error) { return host, nil })
	backup := newBackupObject(t, ns, "round", 10)
	// 50 imagestreams in the part's first write share an operation; 50 written after it have
	// one each.
	var ops []string
	for i := range 100 {
		_, _, op, _, err := a.Execute(imageStream("app", fmt.Sprintf("is-%03d", i), tag{"latest", []string{fmt.Sprintf("%s/app/is-%03d@%s", host, i, digest(i))}}), backup)
		if err != nil {
			t.Fatal(err)
		}
		if op != "" {
			ops = append(ops, op)
		}
		if i == 49 {
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(ops) != 51 {
		t.Fatalf("%d operations, want 51", len(ops))
	}
	for i, op := range ops {
		want := int64(1)
		if i == 0 {
			want = 100 // the part's, which holds them all
		}
		if p, err := later.Progress(op, backup); err != nil || p.NTotal != want {
			t.Fatalf("Progress(%s) = %+v, %v; want %d images", op, p, err, want)
		}
	}
	if n := cc.gets.Load(); n != 1 {
		t.Errorf("a round of %d Progress calls read the part %d times, want once", len(ops), n)
	}
}

// Velero asks for the progress of every operation as soon as it has collected every item, in the
// process that ran Execute. Until then the action writes nothing into the parts; the first
// Progress writes every part once, whole, and the worker only starts after that.
// Each part is written once, whole: one that is full as soon as it is, while Velero still
// collects items, and the head, which takes the rest, when Velero first asks for progress.
func TestPartsAreWrittenOnceAsTheyFillAndTheHeadAtTheFirstProgress(t *testing.T) {
	ns := env.Namespace(t)
	cc := &countingClient{Client: env.Client}
	a := action.NewBackupAction(logrus.New(), cc, func(context.Context) (string, error) { return host, nil })
	backup := newBackupObject(t, ns, "held", 200) // four parts of 50
	var ops []string
	for i := range 200 {
		_, _, op, _, err := a.Execute(imageStream("app", fmt.Sprintf("is-%03d", i), tag{"latest", []string{fmt.Sprintf("%s/app/is-%03d@%s", host, i, digest(i))}}), backup)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op)
	}
	// The first Execute creates the head, empty, to fix the number of parts; the three parts
	// that filled are written in the background, each once.
	waitForParts(t, ns, "held", 3, "recorded %v while Velero was collecting items, want the three full parts")
	for name, streams := range recorded(t, ns, "held") {
		if name == "held" || len(streams) != 50 {
			t.Errorf("part %s holds %d imagestreams before the first Progress, want a full part other than the head", name, len(streams))
		}
	}
	if n := cc.writes.Load(); n != 4 {
		t.Errorf("%d writes while Velero was collecting items, want the head's creation and one for each full part", n)
	}

	var partOps []string
	for _, op := range ops {
		if op != "" {
			partOps = append(partOps, op)
		}
	}
	if len(partOps) != 4 {
		t.Errorf("operations %q, want one for each of the 4 parts", partOps)
	}
	for _, op := range partOps {
		p, err := a.Progress(op, backup)
		if err != nil || p.Completed || p.NTotal != 50 || p.Err != "" {
			t.Fatalf("Progress(%s) = %+v, %v; want the part's 50 images, not started", op, p, err)
		}
	}
	parts := recorded(t, ns, "held")
	total := 0
	for _, streams := range parts {
		total += len(streams)
	}
	if len(parts) != 4 || total != 200 {
		t.Errorf("recorded %d imagestreams in %d parts, want 200 in 4", total, len(parts))
	}
	if n := cc.writes.Load() - 1; n != int64(len(parts)) {
		t.Errorf("%d writes for %d parts, want one each", n, len(parts))
	}
	// Progress answered from what the writes returned.
	if n := cc.gets.Load(); n != 0 {
		t.Errorf("Progress read parts %d times after writing them, want none", n)
	}
}

// A Velero backup named like another backup's part ("a" is split, then a backup is named
// "a.1") keeps its images apart: parts carry the start of their backup's uid.
func TestABackupNamedLikeAnotherBackupsPartKeepsItsOwn(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	big := newBackupObject(t, ns, "a", 200) // four parts
	a := newAction()
	for i := range 200 {
		if _, _, _, _, err := a.Execute(imageStream("app", fmt.Sprintf("is-%03d", i), tag{"latest", []string{fmt.Sprintf("%s/app/is-%03d@%s", host, i, digest(i))}}), big); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	before := recorded(t, ns, "a")
	for _, name := range []string{"a.1", "a-part1"} {
		small := newBackupObject(t, ns, name, 10)
		b := newAction()
		if _, _, _, _, err := b.Execute(imageStream("other", "web", tag{"latest", []string{host + "/other/web@" + digest(999)}}), small); err != nil {
			t.Fatalf("backup %s: %v", name, err)
		}
		if err := b.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := recorded(t, ns, name); !reflect.DeepEqual(got, map[string][]string{name: {"other/web"}}) {
			t.Errorf("backup %s recorded %v, want other/web in its own head", name, got)
		}
	}
	if after := recorded(t, ns, "a"); !reflect.DeepEqual(after, before) {
		t.Errorf("backup a's parts changed:\n%v\n%v", before, after)
	}
}

// The head lists the parts even when no imagestream of its own lands in it.
func TestAHeadWithoutImageStreamsListsItsParts(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	backup := newBackupObject(t, ns, "nohead", 60) // two parts
	a := newAction()
	var inPart1 []string
	for i := 0; len(inPart1) < 3; i++ {
		name := fmt.Sprintf("is-%d", i)
		h := fnv.New32a()
		fmt.Fprintf(h, "app/%s", name)
		if h.Sum32()%2 == 1 {
			inPart1 = append(inPart1, name)
		}
	}
	var ops []string
	named := map[string]bool{}
	for i, name := range inPart1 {
		_, _, op, post, err := a.Execute(imageStream("app", name, tag{"latest", []string{host + "/app/" + name + "@" + digest(i)}}), backup)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op)
		for _, p := range post {
			named[p.Name] = true
		}
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Velero backs the head up again with the parts: `velero backup delete` finds it there.
	if !named["nohead"] {
		t.Errorf("post-operation items %v, want the head among them", named)
	}
	head := &oadpv1alpha1.ImageStreamsBackup{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "nohead"}, head); err != nil {
		t.Fatal(err)
	}
	parts := recorded(t, ns, "nohead")
	if len(head.Spec.ImageStreams) != 0 || len(parts) != 1 {
		t.Fatalf("head holds %d imagestreams, parts %v; want none in the head and one part", len(head.Spec.ImageStreams), parts)
	}
	for name := range parts {
		if !reflect.DeepEqual(head.Spec.Parts, []string{name}) {
			t.Errorf("head lists parts %q, want %q", head.Spec.Parts, name)
		}
	}

	// A part's images are restored through the head's index: its operations end once the
	// head has stored its current spec too.
	complete := func(name string) {
		t.Helper()
		isb := &oadpv1alpha1.ImageStreamsBackup{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, isb); err != nil {
			t.Fatal(err)
		}
		isb.Status.Phase, isb.Status.ObservedGeneration = oadpv1alpha1.BackupPhaseCompleted, isb.Generation
		if err := env.Client.Status().Update(ctx, isb); err != nil {
			t.Fatal(err)
		}
	}
	for name := range parts {
		complete(name)
	}
	if p, err := newAction().Progress(ops[0], backup); err != nil || p.Completed {
		t.Errorf("Progress with the part stored and the head not = %+v, %v; want not completed", p, err)
	}
	complete("nohead")
	if p, err := newAction().Progress(ops[0], backup); err != nil || !p.Completed || p.Err != "" {
		t.Errorf("Progress with the part and the head stored = %+v, %v; want completed", p, err)
	}
}

// A part the head does not list (its write failed) would be missed by a restore of the
// backup: its operations fail by name once the head's write is certainly not coming.
func TestAPartTheHeadDoesNotListFailsItsOperations(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	backup := newBackupObject(t, ns, "unlisted", 60)
	for _, isb := range []*oadpv1alpha1.ImageStreamsBackup{
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unlisted", Labels: map[string]string{action.LabelBackupUID: string(backup.UID)}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unlisted-part1-x"}, Spec: oadpv1alpha1.ImageStreamsBackupSpec{
			ImageStreams: []oadpv1alpha1.ImageStream{{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{{DockerImageReference: host + "/app/web@" + digest(1)}}}}}},
	} {
		if err := env.Client.Create(ctx, isb); err != nil {
			t.Fatal(err)
		}
		isb.Status.Phase, isb.Status.ObservedGeneration = oadpv1alpha1.BackupPhaseCompleted, isb.Generation
		if err := env.Client.Status().Update(ctx, isb); err != nil {
			t.Fatal(err)
		}
	}
	ago := func(d time.Duration) string { return fmt.Sprint(time.Now().Add(-d).Unix()) }
	if p, err := newAction().Progress("unlisted-part1-x/app/web/"+ago(time.Second), backup); err != nil || p.Completed {
		t.Errorf("Progress while the head may still list the part = %+v, %v; want not completed", p, err)
	}
	if p, err := newAction().Progress("unlisted-part1-x/app/web/"+ago(time.Hour), backup); err != nil || !p.Completed || !strings.Contains(p.Err, "does not list unlisted-part1-x") {
		t.Errorf("Progress once the head certainly does not list the part = %+v, %v; want it failed naming the part", p, err)
	}
}

// A head of the Velero backup's name that belongs to someone else is not written into: the
// imagestream fails loudly instead of landing in another backup.
func TestAHeadThatIsNotTheBackupsIsRefused(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	for name, labels := range map[string]map[string]string{
		"persons":      nil,
		"earlier-same": {action.LabelBackupName: "earlier-same", action.LabelBackupUID: "uid-of-an-earlier-backup"},
	} {
		if err := env.Client.Create(ctx, &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}); err != nil {
			t.Fatal(err)
		}
		backup := newBackupObject(t, ns, name, 10)
		_, _, _, _, err := newAction().Execute(imageStream("app", "web", tag{"latest", []string{host + "/app/web@" + digest(1)}}), backup)
		if err == nil || !strings.Contains(err.Error(), "another name") {
			t.Errorf("Execute into %s's head = %v, want a refusal", name, err)
		}
	}
}

// failingClient refuses its first writes (creates of unstructured objects, applies and
// patches) with err.
type failingClient struct {
	client.Client
	failures atomic.Int64
	err      error
}

func (c *failingClient) fail() error {
	if c.failures.Add(-1) >= 0 {
		return c.err
	}
	return nil
}

func (c *failingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if _, ok := obj.(*unstructured.Unstructured); ok {
		if err := c.fail(); err != nil {
			return err
		}
	}
	return c.Client.Create(ctx, obj, opts...)
}

func (c *failingClient) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	if err := c.fail(); err != nil {
		return err
	}
	return c.Client.Apply(ctx, obj, opts...)
}

func (c *failingClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if err := c.fail(); err != nil {
		return err
	}
	return c.Client.Patch(ctx, obj, patch, opts...)
}

// A part the API server refused to take is written by the next write: the plugin writes what
// is left before it exits.
func TestAPartTheAPIServerRefusedIsWrittenByTheNextFlush(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	fc := &failingClient{Client: env.Client, err: apierrors.NewBadRequest("refused once")}
	fc.failures.Store(1)
	a := action.NewBackupAction(logrus.New(), fc, func(context.Context) (string, error) { return host, nil })
	backup := newBackupObject(t, ns, "refused", 10)
	if _, _, _, _, err := a.Execute(imageStream("app", "web", tag{"latest", []string{host + "/app/web@" + digest(1)}}), backup); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := recorded(t, ns, "refused"); len(got) != 0 {
		t.Fatalf("recorded %v although the API server refused the write", got)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := recorded(t, ns, "refused"); !reflect.DeepEqual(got, map[string][]string{"refused": {"app/web"}}) {
		t.Errorf("recorded %v after the next flush, want app/web", got)
	}
}

// A part that first appears after the head was written (a flush came between, as when Velero
// asks for progress while another backup of the same plugin process still collects items) is
// added to the head's list, not lost from it.
func TestAPartThatAppearsAfterTheHeadWasWrittenIsListed(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	backup := newBackupObject(t, ns, "late", 150) // three parts of 50: two filled in turn, then the head
	a := newAction()
	// Part 1's first imagestream, flushed; part 1 filled and part 2's first, flushed; part 2
	// filled and the head's own, flushed.
	next := 0
	for _, n := range []int{1, 50, 50} {
		for range n {
			name := fmt.Sprintf("is-%03d", next)
			if _, _, _, _, err := a.Execute(imageStream("app", name, tag{"latest", []string{host + "/app/" + name + "@" + digest(next)}}), backup); err != nil {
				t.Fatal(err)
			}
			next++
		}
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	head := &oadpv1alpha1.ImageStreamsBackup{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "late"}, head); err != nil {
		t.Fatal(err)
	}
	parts := recorded(t, ns, "late")
	delete(parts, "late")
	var want []string
	for name := range parts {
		want = append(want, name)
	}
	sort.Strings(want)
	got := slices.Sorted(slices.Values(head.Spec.Parts))
	if len(want) != 2 || !reflect.DeepEqual(got, want) {
		t.Errorf("head lists parts %q, want the two parts that hold imagestreams %q", got, want)
	}
	if len(head.Spec.ImageStreams) != 1 {
		t.Errorf("head holds %d imagestreams, want its own one", len(head.Spec.ImageStreams))
	}
}

// waitForParts waits until n parts of backup hold imagestreams, or fails with msg.
func waitForParts(t *testing.T, ns, backup string, n int, msg string) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return len(recorded(t, ns, backup)) == n, nil
	}); err != nil {
		t.Fatalf(msg, recorded(t, ns, backup))
	}
}

// executeRange has a back up imagestreams app/is-<from> ... app/is-<to-1>, of one image each,
// and returns the operations and the names of the post-operation items it returned.
func executeRange(t *testing.T, a *action.BackupAction, backup *velerov1.Backup, from, to int) (ops, post []string) {
	t.Helper()
	for i := from; i < to; i++ {
		name := fmt.Sprintf("is-%03d", i)
		_, _, op, items, err := a.Execute(imageStream("app", name, tag{"latest", []string{host + "/app/" + name + "@" + digest(i)}}), backup)
		if err != nil {
			t.Fatal(err)
		}
		if op != "" {
			ops = append(ops, op)
		}
		for _, item := range items {
			post = append(post, item.Name)
		}
	}
	return ops, post
}

// A plugin process that Velero starts again in the middle of a backup (the first one died)
// finds the parts its predecessor wrote: the head lists them, and it fills the next ones
// instead of writing into them again.
func TestARestartedPluginListsThePartsItsPredecessorWrote(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	backup := newBackupObject(t, ns, "restarted", 150) // parts 1 and 2, then the head
	executeRange(t, newAction(), backup, 0, 100)       // fills parts 1 and 2, which are written; then the process dies
	waitForParts(t, ns, "restarted", 2, "recorded %v, want the two full parts")
	next := newAction()
	_, post := executeRange(t, next, backup, 100, 110)
	if err := next.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	parts := recorded(t, ns, "restarted")
	want := map[string]int{"restarted": 10}
	head := &oadpv1alpha1.ImageStreamsBackup{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "restarted"}, head); err != nil {
		t.Fatal(err)
	}
	for _, p := range head.Spec.Parts {
		want[p] = 50
	}
	got := map[string]int{}
	for name, streams := range parts {
		got[name] = len(streams)
	}
	// The parts its predecessor wrote go with its first operation as post-operation items too:
	// the predecessor's answer to Velero may have been lost with it.
	if wantPost := append(slices.Clone(head.Spec.Parts), "restarted"); !reflect.DeepEqual(post, wantPost) {
		t.Errorf("post-operation items %q, want %q", post, wantPost)
	}
	if len(head.Spec.Parts) != 2 || !reflect.DeepEqual(got, want) {
		t.Errorf("imagestreams by part %v with the head listing %q, want 50 in each of the two parts it lists and the 10 new ones in the head", got, head.Spec.Parts)
	}
}

// The operation of a part covers the imagestreams of the process that returned it. A plugin
// process that dies before writing a part loses what it held for it; a process started again
// may fill a part of the same name with other imagestreams, and the first process's operation
// must fail all the same, by name, once its write is certainly not coming.
func TestAPartsOperationIsDoneOnlyByTheWriteOfItsOwnProcess(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	backup := newBackupObject(t, ns, "lost", 150) // parts 1 and 2, then the head
	// The first process fills part 1, which is written, and holds 25 imagestreams for part 2
	// when it dies.
	first, _ := executeRange(t, newAction(), backup, 0, 75)
	waitForParts(t, ns, "lost", 1, "recorded %v, want part 1")
	// The next one fills part 2 with 35 others and writes it.
	next := newAction()
	second, _ := executeRange(t, next, backup, 75, 110)
	if err := next.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(first) != 2 || len(second) != 1 || strings.Split(first[1], "/")[0] != strings.Split(second[0], "/")[0] {
		t.Fatalf("operations %q and %q, want one for each part each process filled, part 2 in both", first, second)
	}
	// op is operationID as Execute would have returned it age ago.
	aged := func(op string, age time.Duration) string {
		f := strings.Split(op, "/")
		f[3] = fmt.Sprint(time.Now().Add(-age).Unix())
		return strings.Join(f, "/")
	}
	later := newAction() // Velero asks from a new process
	for _, tt := range []struct {
		name, op      string
		wantTotal     int64
		wantCompleted bool
		wantErr       string
	}{
		{"part 1, written by the first process", first[0], 50, false, ""},
		{"part 2, written by the next process", second[0], 35, false, ""},
		{"part 2 as the first process held it, a moment ago", aged(first[1], time.Second), 0, false, ""},
		{"part 2 as the first process held it, long ago", aged(first[1], 10*time.Minute), 0, true,
			"imagestreams recorded by plugin process " + strings.Split(first[1], "/")[2] + " were never written into ImageStreamsBackup " + strings.Split(first[1], "/")[0]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := later.Progress(tt.op, backup)
			if err != nil || p.Completed != tt.wantCompleted || p.NTotal != tt.wantTotal || !strings.HasPrefix(p.Err, tt.wantErr) || (tt.wantErr == "") != (p.Err == "") {
				t.Errorf("Progress(%s) = %+v, %v; want completed %v, %d images, error %q", tt.op, p, err, tt.wantCompleted, tt.wantTotal, tt.wantErr)
			}
		})
	}
}

// lostAnswers is a client whose first write of each object reaches the API server but whose
// answer is lost: the write is stored, and the caller gets an error.
type lostAnswers struct {
	client.Client
	mu   sync.Mutex
	seen map[string]bool
}

func (c *lostAnswers) lost(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	first := !c.seen[name]
	c.seen[name] = true
	return first
}

func (c *lostAnswers) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	err := c.Client.Apply(ctx, obj, opts...)
	u, ok := obj.(interface{ GetName() string })
	if !ok {
		return fmt.Errorf("apply of %T, want an unstructured object", obj)
	}
	if err == nil && c.lost(u.GetName()) {
		return errors.New("connection reset by peer")
	}
	return err
}

// An imagestream queued after a write of its part was sent is not covered by the operation of
// that write, even when the write failed as far as the plugin can tell: the API server may
// have stored it, annotation and all, without the imagestream. It gets an operation of its
// own, which fails by name if it is never written (the plugin dies first).
func TestAnImageStreamQueuedAfterAWriteWhoseAnswerWasLostHasItsOwnOperation(t *testing.T) {
	ns := env.Namespace(t)
	a := action.NewBackupAction(logrus.New(), &lostAnswers{Client: env.Client, seen: map[string]bool{}}, func(context.Context) (string, error) { return host, nil })
	backup := newBackupObject(t, ns, "b1", 10) // one part, the head
	execute := func(name string, i int) string {
		_, _, op, _, err := a.Execute(imageStream("app", name, tag{"latest", []string{host + "/app/" + name + "@" + digest(i)}}), backup)
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	partOp := execute("web", 1)
	if op := execute("api", 2); op != "" || !strings.Contains(partOp, "/*/") {
		t.Fatalf("operations %q and %q, want the part's, then none", partOp, op)
	}
	// The first Progress writes the part: stored, but the answer is lost.
	if _, err := a.Progress(partOp, backup); err != nil {
		t.Fatal(err)
	}
	late := execute("late", 3)
	if !strings.HasPrefix(late, "b1/app/late/") {
		t.Fatalf("operation %q of an imagestream queued after the write, want b1/app/late/<time>", late)
	}
	// The plugin dies before writing again.
	f := strings.Split(late, "/")
	f[3] = fmt.Sprint(time.Now().Add(-10 * time.Minute).Unix())
	later := newAction()
	if p, err := later.Progress(strings.Join(f, "/"), backup); err != nil || !p.Completed || !strings.Contains(p.Err, "imagestream app/late was never written") {
		t.Errorf("Progress of the late imagestream's operation = %+v, %v; want it failed by name", p, err)
	}
	if p, err := later.Progress(partOp, backup); err != nil || p.Completed || p.Err != "" || p.NTotal != 2 {
		t.Errorf("Progress of the part's operation = %+v, %v; want its two images, waiting for the worker", p, err)
	}
}

// Velero drops an item that carries velero.io/skip-from-backup after its actions ran, and the
// operation they returned with it: the action records nothing for it.
func TestAnImageStreamVeleroSkipsIsNotRecorded(t *testing.T) {
	ns := env.Namespace(t)
	a := newAction()
	backup := newBackupObject(t, ns, "b1", 10)
	item := imageStream("app", "web", tag{"latest", []string{host + "/app/web@" + digest(1)}})
	item.SetAnnotations(map[string]string{velerov1.SkipFromBackupAnnotation: "true"})
	if _, _, op, post, err := a.Execute(item, backup); err != nil || op != "" || post != nil {
		t.Errorf("Execute = %q, %v, %v; want no operation", op, post, err)
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := recorded(t, ns, "b1"); len(got["b1"]) != 0 {
		t.Errorf("recorded %v, want nothing", got)
	}
}
