package imagestore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// A collection keeps its marker fresh however long it runs, so a backup that starts meanwhile
// waits for it instead of counting on blobs the sweep is about to remove.
func TestAGCLongerThanTheStaleTimeKeepsBackupsWaiting(t *testing.T) {
	ctx := context.Background()
	s, hb := newHostileStore(t)
	const stale = 400 * time.Millisecond
	// Twenty blobs no backup references, each delete taking 60 ms: the sweep takes three
	// times the stale time.
	for i := range 20 {
		put(t, s, types.DockerLayer, fmt.Appendf(nil, "unused %d", i))
	}
	hb.mu.Lock()
	hb.deleteDelay = 60 * time.Millisecond
	hb.mu.Unlock()

	gcDone := make(chan struct{})
	var rep imagestore.GCReport
	var gcErr error
	go func() { defer close(gcDone); rep, gcErr = s.GC(ctx, stale) }()
	if err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		hb.mu.Lock()
		defer hb.mu.Unlock()
		return hb.deletes > 0, nil
	}); err != nil {
		t.Fatal("the collection never started sweeping")
	}
	time.Sleep(stale) // past the time a marker written once would have gone stale
	p, err := s.Begin(ctx, "late", "", stale)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Abort(ctx); err != nil {
			t.Error(err)
		}
	})
	select {
	case <-gcDone:
	default:
		t.Fatal("Begin returned while the collection was still sweeping")
	}
	if gcErr != nil || rep.Deleted != 20 {
		t.Errorf("GC = %+v, %v; want the 20 unused blobs deleted", rep, gcErr)
	}
}

// A backup whose marker went stale (the store refused its renewals) checks before committing
// that nothing it counts on was collected meanwhile.
func TestCommitAfterAStaleMarkerChecksWhatItNames(t *testing.T) {
	for name, collect := range map[string]bool{
		"a collection ran meanwhile and removed the image": true,
		"no collection ran meanwhile":                      false,
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s, hb := newHostileStore(t)
			const stale = 300 * time.Millisecond
			// The image is stored but no index names it yet: the backup found it present.
			desc := storeImage(t, s, image(t))
			p, err := s.Begin(ctx, "b", "", stale)
			if err != nil {
				t.Fatal(err)
			}
			hb.mu.Lock()
			hb.refuseWrites = func(k string) bool { return strings.Contains(k, "backups/b/pending") }
			hb.mu.Unlock()
			time.Sleep(stale + 100*time.Millisecond)
			if collect {
				if rep, err := s.GC(ctx, stale); err != nil || rep.Deferred || rep.Deleted == 0 {
					t.Fatalf("GC = %+v, %v; want it to sweep past the stale marker", rep, err)
				}
			}
			hb.mu.Lock()
			hb.refuseWrites = nil
			hb.mu.Unlock()

			err = p.Commit(ctx, []imagestore.Entry{{Namespace: "app", ImageStream: "web", Descriptor: desc}}, imagestore.IndexMeta{})
			committed, _ := s.HasIndex(ctx, "b")
			switch {
			case collect && (!errors.Is(err, imagestore.ErrBlobsCollected) || committed):
				t.Errorf("Commit = %v, index written %v; want ErrBlobsCollected and no index", err, committed)
			case !collect && (err != nil || !committed):
				t.Errorf("Commit = %v, index written %v; want the index written", err, committed)
			}
		})
	}
}
