package controller_test

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// staleReads is the worker's client with a cache that lags behind the API server for one
// object: Get serves a copy of it from before its run ended, as an informer that has not yet
// delivered the final status write does.
type staleReads struct {
	client.Client
	stale  atomic.Pointer[client.Object]
	served atomic.Int64
}

func (s *staleReads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if p := s.stale.Load(); p != nil && key == client.ObjectKeyFromObject(*p) && reflect.TypeOf(obj) == reflect.TypeOf(*p) {
		reflect.ValueOf(obj).Elem().Set(reflect.ValueOf((*p).DeepCopyObject()).Elem())
		s.served.Add(1)
		return nil
	}
	return s.Client.Get(ctx, key, obj, opts...)
}

// withStatus is an ImageStreamsBackup or an ImageStreamsRestore.
type withStatus interface {
	client.Object
	GetPhase() string
	GetCommonStatus() *oadpv1alpha1.CommonStatus
}

// A run ends with its final status write, and the runner forgets it right after; the cache
// may not have that write yet. A reconcile of the cached copy, which still says the run is in
// progress, must not start the spec again: the second run copies every image again, and its
// first status write, a patch from the cached copy, takes the counts off a status that still
// says Completed, which is what Velero's progress check and an administrator then read.
func TestARunIsNotStartedAgainFromACachedCopyOlderThanItsEnd(t *testing.T) {
	c := newCluster(t)
	reads := &staleReads{}
	o := c.workerOptions()
	o.NewClient = func(cfg *rest.Config, opts client.Options) (client.Client, error) {
		cl, err := client.New(cfg, opts)
		reads.Client = cl
		return reads, err
	}
	c.startWorker(o)
	web, api := c.push("app/web", imageOn(t, nil), c.registry.Host), c.push("app/api", imageOn(t, nil), c.registry.Host)
	isb := c.completed("b1", "", web, api)
	isr := &oadpv1alpha1.ImageStreamsRestore{ObjectMeta: newBackup(c.ns, "r1").ObjectMeta, Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
		ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b1"}, NamespaceMapping: map[string]string{"app": "app2"}}}
	c.create(isr)
	isr = waitFor(t, isr, time.Minute, "restore Completed", restorePhase(oadpv1alpha1.RestorePhaseCompleted))

	for _, tt := range []struct {
		name string
		kind string
		obj  withStatus
		// inProgress is a copy of obj as it was during its run.
		inProgress func() withStatus
	}{
		{"backup", "Backup", isb, func() withStatus {
			o := isb.DeepCopy()
			o.Status.Phase = oadpv1alpha1.BackupPhaseInProgress
			return o
		}},
		{"restore", "Restore", isr, func() withStatus {
			o := isr.DeepCopy()
			o.Status.Phase = oadpv1alpha1.RestorePhaseInProgress
			return o
		}},
		// Canceled while it ran (Velero's operation timeout cancels): the cached copy asks to
		// be canceled and has no job, but the run completed.
		{"backup canceled in the cached copy", "Backup", isb, func() withStatus {
			o := isb.DeepCopy()
			o.Status.Phase = oadpv1alpha1.BackupPhaseInProgress
			o.Spec.Cancel = true
			return o
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if p := tt.obj.GetCommonStatus().Progress; p.ImagesTotal != 2 || p.ImagesDone != 2 {
				t.Fatalf("progress %+v, want 2 of 2 images", p)
			}
			var stale client.Object = tt.inProgress()
			st := stale.(withStatus).GetCommonStatus()
			st.CompletionTimestamp, st.ObservedGeneration = nil, 0
			st.Progress = oadpv1alpha1.Progress{ImagesTotal: 2, ImagesDone: 1}
			rv, err := strconv.Atoi(tt.obj.GetResourceVersion())
			if err != nil {
				t.Fatal(err)
			}
			stale.SetResourceVersion(strconv.Itoa(rv - 1))
			reads.served.Store(0)
			reads.stale.Store(&stale)
			defer reads.stale.Store(nil)

			// Any change has the worker reconcile the object; it reads the stale copy.
			patch := client.RawPatch("application/merge-patch+json", fmt.Appendf(nil, `{"metadata":{"annotations":{"example.com/touched":%q}}}`, tt.name))
			if err := env.Client.Patch(ctx, tt.obj, patch); err != nil {
				t.Fatal(err)
			}
			waitFor(t, tt.obj, 30*time.Second, "the worker reading the stale copy", func(withStatus) bool { return reads.served.Load() > 0 })
			time.Sleep(time.Second) // what the worker decides from it is written by now: a run has started and ended

			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(tt.obj), tt.obj); err != nil {
				t.Fatal(err)
			}
			if p := tt.obj.GetCommonStatus().Progress; p.ImagesTotal != 2 || p.ImagesDone != 2 {
				t.Errorf("progress %+v after a reconcile of the stale copy, want 2 of 2 images still", p)
			}
			if phase := tt.obj.GetPhase(); phase != "Completed" {
				t.Errorf("phase %s after a reconcile of the stale copy, want Completed still", phase)
			}
			if c := meta.FindStatusCondition(tt.obj.GetCommonStatus().Conditions, oadpv1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
				t.Errorf("Ready %+v after a reconcile of the stale copy, want True still", c)
			}
			started := 0
			for _, line := range strings.Split(c.logs.String(), "\n") {
				if strings.Contains(line, tt.kind+" started") && strings.Contains(line, fmt.Sprintf("%q", tt.obj.GetName())) {
					started++
				}
			}
			if started != 1 {
				t.Errorf("%s %s started %d times, want once", tt.kind, tt.obj.GetName(), started)
			}
		})
	}
}
