package controller

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// The parts of a Velero backup appear all at once as Velero finishes collecting items; the
// worker looks at a new one only after a moment, and at every change of one it knows at once.
func TestNewBackupsAreLookedAtAfterTheDelayAndChangesAtOnce(t *testing.T) {
	ctx := context.Background()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	part := func(name string) *oadpv1alpha1.ImageStreamsBackup {
		return &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: name}}
	}
	h := &delayCreates{delay: 300 * time.Millisecond}

	h.Create(ctx, event.CreateEvent{Object: part("b1.1")}, q)
	if n := q.Len(); n != 0 {
		t.Fatalf("%d requests queued right after a creation, want none yet", n)
	}
	h.Update(ctx, event.UpdateEvent{ObjectOld: part("b1"), ObjectNew: part("b1")}, q)
	if n := q.Len(); n != 1 {
		t.Fatalf("%d requests queued right after an update, want it at once", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for q.Len() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := q.Len(); n != 2 {
		t.Fatalf("%d requests queued after the delay, want the new part's too", n)
	}

	immediate := &delayCreates{}
	immediate.Create(ctx, event.CreateEvent{Object: part("b2")}, q)
	if n := q.Len(); n != 3 {
		t.Errorf("%d requests queued after a creation without a delay, want it at once", n)
	}
}
