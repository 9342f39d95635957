package imagestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// Backups and garbage collection exclude each other through two kinds of marker, so that GC
// never deletes a blob that a running backup found present and decided not to upload:
//
//   - a backup writes backups/<name>/pending.json, then looks for gc.json; if a collection is
//     running it waits for it to end. It refreshes its marker while it runs.
//   - GC writes gc.json, then looks for pending markers; if any backup is running it sweeps
//     nothing and reports that it deferred.
//
// Whichever writes second sees the other's marker (object stores read their own writes), so a
// sweep and a backup never overlap. A marker not refreshed within StaleAfter belongs to a
// process that died and is ignored.

// DefaultStaleAfter is how long a marker counts without being refreshed.
const DefaultStaleAfter = 30 * time.Minute

const gcKey = "gc.json"

type marker struct {
	Heartbeat time.Time `json:"heartbeat"`
}

// maxMarkerSize bounds what is read of a marker; ours are some 50 bytes.
const maxMarkerSize = 4 << 10

// markerFresh reports whether raw is a marker refreshed within staleAfter of now. A marker
// that is unreadable, too large, or that claims a heartbeat more than staleAfter ahead of now
// (a broken clock, or a forged marker that would otherwise hold off backups or collections
// forever) counts as stale.
func markerFresh(raw []byte, now time.Time, staleAfter time.Duration) bool {
	if len(raw) > maxMarkerSize {
		return false
	}
	var m marker
	if err := json.Unmarshal(raw, &m); err != nil {
		return false
	}
	age := now.Sub(m.Heartbeat)
	return age < staleAfter && age > -staleAfter
}

func (s *Store) writeMarker(ctx context.Context, key string) error {
	raw, _ := json.Marshal(marker{Heartbeat: time.Now().UTC()})
	return s.bucket.WriteAll(ctx, key, raw, &blob.WriterOptions{ContentType: "application/json"})
}

// freshMarker reports whether key holds a marker refreshed within staleAfter.
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

// Pending is a backup in progress: while it exists, GC sweeps nothing.
type Pending struct {
	s          *Store
	name       string
	staleAfter time.Duration
}

// Begin marks backup name as in progress, waiting while a garbage collection runs. Call
// Refresh more often than staleAfter, and Commit or Abort at the end.
func (s *Store) Begin(ctx context.Context, name string, staleAfter time.Duration) (*Pending, error) {
	if err := ValidateBackupName(name); err != nil {
		return nil, err
	}
	if staleAfter <= 0 {
		staleAfter = DefaultStaleAfter
	}
	p := &Pending{s: s, name: name, staleAfter: staleAfter}
	for {
		if err := p.Refresh(ctx); err != nil {
			return nil, err
		}
		busy, err := s.freshMarker(ctx, gcKey, staleAfter)
		if err != nil {
			return nil, err
		}
		if !busy {
			return p, nil
		}
		select {
		case <-ctx.Done():
			_ = p.Abort(context.WithoutCancel(ctx))
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// Refresh renews the marker.
func (p *Pending) Refresh(ctx context.Context) error {
	if err := p.s.writeMarker(ctx, backupKey(p.name, "pending.json")); err != nil {
		return fmt.Errorf("marking backup %s in progress: %w", p.name, err)
	}
	return nil
}

// Commit writes the backup's index (see WriteIndex) and removes the marker.
func (p *Pending) Commit(ctx context.Context, entries []Entry, parts int) error {
	if err := p.s.WriteIndex(ctx, p.name, entries, parts); err != nil {
		return err
	}
	return p.Abort(ctx)
}

// Abort removes the marker without writing an index; blobs already stored stay for a later
// attempt or for GC.
func (p *Pending) Abort(ctx context.Context) error {
	err := p.s.bucket.Delete(ctx, backupKey(p.name, "pending.json"))
	if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
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
	if busy, err := s.freshMarker(ctx, gcKey, staleAfter); err != nil {
		return rep, err
	} else if busy {
		return rep, ErrGCRunning
	}
	if err := s.writeMarker(ctx, gcKey); err != nil {
		return rep, fmt.Errorf("marking garbage collection: %w", err)
	}
	defer func() { _ = s.bucket.Delete(context.WithoutCancel(ctx), gcKey) }()

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

	it := s.bucket.List(&blob.ListOptions{Prefix: "blobs/sha256/"})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rep, fmt.Errorf("listing blobs: %w", err)
		}
		if live[strings.TrimPrefix(obj.Key, "blobs/sha256/")] {
			rep.Kept++
			continue
		}
		if err := s.bucket.Delete(ctx, obj.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			return rep, fmt.Errorf("deleting %s: %w", obj.Key, err)
		}
		rep.Deleted++
		rep.DeletedBytes += obj.Size
	}
	return rep, nil
}

func (s *Store) runningBackups(ctx context.Context, staleAfter time.Duration) ([]string, error) {
	var running []string
	it := s.bucket.List(&blob.ListOptions{Prefix: "backups/"})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return running, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing backups in progress: %w", err)
		}
		if !strings.HasSuffix(obj.Key, "/pending.json") {
			continue
		}
		fresh, err := s.freshMarker(ctx, obj.Key, staleAfter)
		if err != nil {
			return nil, err
		}
		if fresh {
			running = append(running, strings.TrimSuffix(strings.TrimPrefix(obj.Key, "backups/"), "/pending.json"))
		}
	}
}
