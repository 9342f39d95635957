package imagestore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// Backups and garbage collection exclude each other through two kinds of marker, so that GC
// never deletes a blob that a running backup found present and decided not to upload:
//
//   - a backup writes backups/<name>/pending-<id>.json, then looks for collection markers; if
//     a collection is running it waits for it to end.
//   - GC writes gc/<id>.json, then looks for backup markers; if any backup is running it sweeps
//     nothing and reports that it deferred.
//
// Whichever writes second sees the other's marker (object stores read their own writes), so a
// sweep and a backup never overlap. Each holder has a marker of its own, so that one holder
// ending never removes the marker another relies on. A marker not refreshed within its
// staleness time belongs to a process that died and is ignored, and removed by the next
// collection; each holder therefore refreshes its own in the background (a lease), records its
// staleness time in it for readers configured otherwise, and acts on it only while it is
// certain the marker stayed fresh throughout: GC stops sweeping, and a backup checks before
// committing that nothing it counts on was collected, once that is no longer certain.
// Earlier versions' markers (gc.json, backups/<name>/pending.json) are still honoured.

// DefaultStaleAfter is how long a marker counts without being refreshed.
const DefaultStaleAfter = 30 * time.Minute

// maxStaleAfter bounds the staleness time a marker may claim: a forged or broken one cannot
// hold off backups or collections for longer.
const maxStaleAfter = 24 * time.Hour

var (
	// ErrLeaseLost is returned by GC when it could not keep its marker fresh: a backup may have
	// started meanwhile, so it stopped sweeping.
	ErrLeaseLost = errors.New("the garbage collection marker could not be kept fresh; sweeping stopped")
	// ErrBlobsCollected is returned by Commit when the backup's marker went stale and a
	// collection removed a blob the backup counted on; the backup must copy again.
	ErrBlobsCollected = errors.New("a garbage collection removed blobs while the backup's in-progress marker was stale")
)

type marker struct {
	Heartbeat time.Time `json:"heartbeat"`
	// StaleAfter is the holder's staleness time; readers honour it, up to maxStaleAfter.
	StaleAfter time.Duration `json:"staleAfter,omitempty"`
}

// maxMarkerSize bounds what is read of a marker, far more than the timestamp and duration that
// make up the ones this package writes.
const maxMarkerSize = 4 << 10

// markerFresh reports whether raw is a marker refreshed within its staleness time (the one it
// records, at most maxStaleAfter, else staleAfter) of now. A marker that is unreadable, too
// large, or that claims a heartbeat further ahead of now than that (a broken clock, or a forged
// marker that would otherwise hold off backups or collections forever) counts as stale.
func markerFresh(raw []byte, now time.Time, staleAfter time.Duration) bool {
	if len(raw) > maxMarkerSize {
		return false
	}
	var m marker
	if err := json.Unmarshal(raw, &m); err != nil {
		return false
	}
	if m.StaleAfter > 0 {
		staleAfter = min(m.StaleAfter, maxStaleAfter)
	}
	age := now.Sub(m.Heartbeat)
	return age < staleAfter && age > -staleAfter
}

// freshMarker reports whether key holds a marker that is fresh (see markerFresh).
func (s *Store) freshMarker(ctx context.Context, key string, staleAfter time.Duration) (bool, error) {
	r, err := s.bucket.NewReader(ctx, key, nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", key, err)
	}
	defer r.Close()
	raw, err := io.ReadAll(io.LimitReader(r, maxMarkerSize+1))
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", key, err)
	}
	// Unreadable markers count as stale rather than block forever.
	return markerFresh(raw, time.Now(), staleAfter), nil
}

// markerScan says which markers freshMarkers reads and what it does with stale ones.
type markerScan struct {
	kind markerKind
	// sweep removes stale markers: their holders died.
	sweep bool
	// mine is the caller's own marker, neither returned nor removed.
	mine string
}

// freshMarkers returns the keys of the markers of scan.kind that are fresh, removing stale ones
// when scan.sweep is set.
func (s *Store) freshMarkers(ctx context.Context, scan markerScan, staleAfter time.Duration) ([]string, error) {
	var fresh []string
	prefix, match := scan.kind.prefix, scan.kind.match
	it := s.bucket.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return fresh, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing markers under %s: %w", prefix, err)
		}
		if obj.Key == scan.mine || !match(obj.Key) {
			continue
		}
		ok, err := s.freshMarker(ctx, obj.Key, staleAfter)
		if err != nil {
			return nil, err
		}
		switch {
		case ok:
			fresh = append(fresh, obj.Key)
		case scan.sweep:
			if err := s.bucket.Delete(ctx, obj.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
				return nil, fmt.Errorf("removing stale marker %s: %w", obj.Key, err)
			}
		}
	}
}

// collecting reports whether a garbage collection runs.
func (s *Store) collecting(ctx context.Context, staleAfter time.Duration) (bool, error) {
	if ok, err := s.freshMarker(ctx, legacyGCMarker, staleAfter); err != nil || ok {
		return ok, err
	}
	keys, err := s.freshMarkers(ctx, markerScan{kind: gcMarkerKind}, staleAfter)
	return len(keys) > 0, err
}

// holderID names holder's markers: a digest, so that any holder string makes a safe key; a
// random one for an empty holder.
func holderID(holder string) string {
	if holder == "" {
		return markerID()
	}
	sum := sha256.Sum256([]byte(holder))
	return hex.EncodeToString(sum[:8])
}

func markerID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lease is a marker its holder keeps fresh in the background. It renews the marker every
// quarter of staleAfter and counts as held while every renewal came within half of staleAfter
// of the one before, the last one included: the other half is left for clocks that disagree.
// Once a gap was longer, it is lost for good, however well later renewals go, because another
// process may have taken the marker for stale meanwhile.
type lease struct {
	s          *Store
	key        string
	staleAfter time.Duration

	mu      sync.Mutex
	renewed time.Time // the start of the last successful write, on the monotonic clock
	lost    bool

	stop context.CancelFunc
	done chan struct{}
}

// takeLease writes the marker at key and keeps it fresh until release or ctx ends.
func (s *Store) takeLease(ctx context.Context, key string, staleAfter time.Duration) (*lease, error) {
	l := &lease{s: s, key: key, staleAfter: staleAfter, done: make(chan struct{})}
	if err := l.renew(ctx); err != nil {
		return nil, err
	}
	ctx, l.stop = context.WithCancel(ctx)
	go func() {
		defer close(l.done)
		t := time.NewTicker(staleAfter / 4)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = l.renew(ctx) // a failed renewal shows in held
			}
		}
	}()
	return l, nil
}

func (l *lease) renew(ctx context.Context) error {
	start := time.Now()
	raw, _ := json.Marshal(marker{Heartbeat: start.UTC(), StaleAfter: l.staleAfter})
	if err := l.s.bucket.WriteAll(ctx, l.key, raw, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("writing marker %s: %w", l.key, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.renewed.IsZero() && start.Sub(l.renewed) >= l.staleAfter/2 {
		l.lost = true
	}
	l.renewed = start
	return nil
}

// held reports whether the marker certainly stayed fresh for every reader since it was taken.
func (l *lease) held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.renewed) >= l.staleAfter/2 {
		l.lost = true
	}
	return !l.lost
}

// release stops renewing and deletes the marker.
func (l *lease) release(ctx context.Context) error {
	l.stop()
	<-l.done
	err := l.s.bucket.Delete(ctx, l.key)
	if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("removing marker %s: %w", l.key, err)
	}
	return nil
}

// Pending is a backup in progress: while it exists, GC sweeps nothing.
type Pending struct {
	s     *Store
	name  string
	lease *lease
}

// Begin marks backup name as in progress on behalf of holder, waiting while a garbage
// collection runs, and keeps the mark fresh until Commit or Abort, or until ctx ends (the mark
// then stays until it is stale, so that the backup can resume without a collection in
// between). A holder has one marker per backup: a later Begin by the same holder (the same
// writer resuming after its process died) takes that marker over, and its Commit or Abort
// removes it, so a dead run's marker does not hold collections off until it is stale. An
// empty holder is a run of its own. staleAfter zero means DefaultStaleAfter.
func (s *Store) Begin(ctx context.Context, name, holder string, staleAfter time.Duration) (*Pending, error) {
	if err := ValidateBackupName(name); err != nil {
		return nil, err
	}
	if staleAfter <= 0 {
		staleAfter = DefaultStaleAfter
	}
	l, err := s.takeLease(ctx, backupMarkerKey(name, holderID(holder)), staleAfter)
	if err != nil {
		return nil, fmt.Errorf("marking backup %s in progress: %w", name, err)
	}
	p := &Pending{s: s, name: name, lease: l}
	if err := p.waitForGC(ctx); err != nil {
		_ = p.Abort(context.WithoutCancel(ctx))
		return nil, err
	}
	return p, nil
}

// waitForGC returns once no collection holds the store, renewing the backup's own marker
// first so that a collection starting later defers.
func (p *Pending) waitForGC(ctx context.Context) error {
	for {
		if err := p.lease.renew(ctx); err != nil {
			return fmt.Errorf("marking backup %s in progress: %w", p.name, err)
		}
		busy, err := p.s.collecting(ctx, p.lease.staleAfter)
		if err != nil {
			return err
		}
		if !busy {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// Commit writes the backup's index (see WriteIndex) and removes the marker. When the marker
// may have gone stale meanwhile, it first makes sure again that no collection runs and that
// every blob the entries reach is stored; if one was collected it returns ErrBlobsCollected
// and writes nothing.
func (p *Pending) Commit(ctx context.Context, entries []Entry, meta IndexMeta) error {
	if !p.lease.held() {
		if err := p.waitForGC(ctx); err != nil {
			return err
		}
		if err := p.s.checkStored(ctx, entries); err != nil {
			return err
		}
	}
	if err := p.s.WriteIndex(ctx, p.name, entries, meta); err != nil {
		return err
	}
	// The index is written: the backup is committed. A marker that cannot be removed now only
	// holds collections off until it goes stale.
	_ = p.Abort(ctx)
	return nil
}

// checkStored returns ErrBlobsCollected unless every blob the entries reach is stored.
func (s *Store) checkStored(ctx context.Context, entries []Entry) error {
	err := s.Walk(ctx, Descriptors(entries), func(d v1.Descriptor) error {
		if isManifest(d.MediaType) {
			return nil // Walk reads it next
		}
		ok, err := s.Has(ctx, d.Digest)
		if err == nil && !ok {
			err = fmt.Errorf("blob %s: %w", d.Digest, ErrNotFound)
		}
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: %v", ErrBlobsCollected, err)
	}
	return err
}

// Abort removes the marker without writing an index; blobs already stored stay for a later
// attempt or for GC.
func (p *Pending) Abort(ctx context.Context) error {
	if err := p.lease.release(ctx); err != nil {
		return fmt.Errorf("removing in-progress marker of backup %s: %w", p.name, err)
	}
	return nil
}

// GCReport says what a collection did.
type GCReport struct {
	// Deferred is true when a backup was in progress and nothing was swept.
	Deferred bool
	// Running names the backups in progress when Deferred.
	Running []string
	// Backups is the number of complete backups whose blobs were kept.
	Backups int
	// Kept and Deleted count blobs; DeletedBytes sums the deleted ones' sizes.
	Kept, Deleted int
	DeletedBytes  int64
}

// ErrGCRunning is returned when another garbage collection holds the store.
var ErrGCRunning = errors.New("another garbage collection is running")

// GC deletes every blob that no complete backup references. It sweeps nothing while a backup is
// in progress (see Begin), and nothing at all if any backup's content cannot be read: a blob is
// deleted only when it is certainly unreferenced.
func (s *Store) GC(ctx context.Context, staleAfter time.Duration) (GCReport, error) {
	if staleAfter <= 0 {
		staleAfter = DefaultStaleAfter
	}
	var rep GCReport
	if busy, err := s.collecting(ctx, staleAfter); err != nil {
		return rep, err
	} else if busy {
		return rep, ErrGCRunning
	}
	mine := gcMarkerKey(markerID())
	l, err := s.takeLease(ctx, mine, staleAfter)
	if err != nil {
		return rep, fmt.Errorf("marking garbage collection: %w", err)
	}
	defer func() { _ = l.release(context.WithoutCancel(ctx)) }()
	// Markers of collections that died are removed, so that they are not read again.
	if _, err := s.freshMarkers(ctx, markerScan{kind: gcMarkerKind, sweep: true, mine: mine}, staleAfter); err != nil {
		return rep, err
	}

	running, err := s.runningBackups(ctx, staleAfter)
	if err != nil {
		return rep, err
	}
	if len(running) > 0 {
		rep.Deferred, rep.Running = true, running
		return rep, nil
	}

	live := map[string]bool{}
	names, err := s.Backups(ctx)
	if err != nil {
		return rep, err
	}
	for _, name := range names {
		entries, err := s.ReadIndex(ctx, name)
		if err != nil {
			return rep, fmt.Errorf("keeping every blob: %w", err)
		}
		if err := s.Walk(ctx, Descriptors(entries), func(d v1.Descriptor) error {
			live[d.Digest.Hex] = true
			return nil
		}); err != nil {
			return rep, fmt.Errorf("keeping every blob: backup %s: %w", name, err)
		}
	}
	rep.Backups = len(names)

	it := s.bucket.List(&blob.ListOptions{Prefix: blobsPrefix})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rep, fmt.Errorf("listing blobs: %w", err)
		}
		if live[blobHex(obj.Key)] {
			rep.Kept++
			continue
		}
		if !l.held() {
			return rep, ErrLeaseLost
		}
		if err := s.bucket.Delete(ctx, obj.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			return rep, fmt.Errorf("deleting %s: %w", obj.Key, err)
		}
		rep.Deleted++
		rep.DeletedBytes += obj.Size
	}
	return rep, nil
}

// runningBackups names the backups with a fresh in-progress marker, and removes the stale
// markers of backups whose worker died.
func (s *Store) runningBackups(ctx context.Context, staleAfter time.Duration) ([]string, error) {
	keys, err := s.freshMarkers(ctx, markerScan{kind: backupMarkerKind, sweep: true}, staleAfter)
	if err != nil {
		return nil, fmt.Errorf("looking for backups in progress: %w", err)
	}
	var running []string
	for _, k := range keys {
		if name := backupOfMarker(k); !slices.Contains(running, name) {
			running = append(running, name)
		}
	}
	return running, nil
}
