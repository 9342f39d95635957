package transfer

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/location"
)

// A collection answers the resources that asked for it, not another one of the same name made
// after one of them was deleted: that one has removed no index yet, so a collection that
// started before it did may not count for it.
func TestACollectionDoesNotCountForANewObjectOfTheSameName(t *testing.T) {
	loc := &location.Location{Name: "test", Bucket: bucket.Config{Provider: "file", Bucket: t.TempDir()}}
	notified := make(chan types.NamespacedName, 8)
	c := NewCollector(CollectorConfig{Open: OpenStore, StaleAfter: time.Minute, Delay: 10 * time.Millisecond, Retry: 10 * time.Millisecond,
		Notify: func(k types.NamespacedName) { notified <- k }, Log: logr.Discard()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Start(ctx) }()

	key := types.NamespacedName{Namespace: "velero", Name: "b1"}
	first, second := Waiter{key, "uid-of-the-first"}, Waiter{key, "uid-of-the-second"}
	if done, _, _ := c.Collect(loc, first); done {
		t.Fatal("a collection counted as done before it ran")
	}
	select {
	case <-notified:
	case <-time.After(10 * time.Second):
		t.Fatal("the collection never finished")
	}
	// The first was deleted before it saw its answer; a new one of its name asks.
	if done, _, _ := c.Collect(loc, second); done {
		t.Error("the first one's collection counted for the new one")
	}
	c.Forget(key)
	if done, _, _ := c.Collect(loc, first); done {
		t.Error("a forgotten request was answered")
	}
}
