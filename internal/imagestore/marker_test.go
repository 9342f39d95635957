package imagestore

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"gocloud.dev/blob/memblob"
)

// A marker is read from the bucket: whatever its bytes, deciding whether it is fresh must not
// panic, and a marker can hold off backups or collections only for a bounded time.
func FuzzMarkerFresh(f *testing.F) {
	f.Add([]byte(`{"heartbeat":"2024-01-01T00:00:00Z"}`), int64(0), int64(time.Minute))
	f.Add([]byte(`{"heartbeat":"2999-01-01T00:00:00Z"}`), int64(0), int64(30*time.Minute))
	f.Add([]byte(`{"heartbeat":"0001-01-01T00:00:00Z"}`), int64(-1<<62), int64(1))
	f.Add([]byte(`{"heartbeat":null}`), int64(1), int64(1))
	f.Add([]byte("\x00{"), int64(0), int64(time.Hour))
	f.Add([]byte(`{"heartbeat":"2024-01-01T00:00:00Z","staleAfter":7200000000000}`), time.Date(2024, 1, 1, 1, 0, 0, 0, time.UTC).UnixNano(), int64(30*time.Minute))
	f.Add([]byte(`{"heartbeat":"2024-01-01T00:00:00Z","staleAfter":9000000000000000000}`), time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC).UnixNano(), int64(30*time.Minute))
	f.Fuzz(func(t *testing.T, raw []byte, nowNanos, stale int64) {
		if stale <= 0 {
			return
		}
		staleAfter := time.Duration(stale)
		now := time.Unix(0, nowNanos).UTC()
		fresh := markerFresh(raw, now, staleAfter)
		if !fresh {
			return
		}
		var m marker
		if len(raw) > maxMarkerSize || json.Unmarshal(raw, &m) != nil {
			t.Fatalf("an unreadable marker counts as fresh: %q", raw)
		}
		// A marker's own staleness time counts, up to maxStaleAfter.
		limit := staleAfter
		if m.StaleAfter > 0 {
			limit = min(m.StaleAfter, maxStaleAfter)
		}
		if age := now.Sub(m.Heartbeat); age >= limit || age <= -limit {
			t.Fatalf("a heartbeat %v from now counts as fresh for %v", age, limit)
		}
		// What we write reads back the same.
		out, _ := json.Marshal(marker{Heartbeat: m.Heartbeat, StaleAfter: m.StaleAfter})
		if !markerFresh(out, now, staleAfter) {
			t.Fatalf("the marker %s written from a fresh one is stale", out)
		}
	})
}

// Holders and readers configured with different staleness times agree: the holder's, recorded
// in its marker, counts, so that a reader with a shorter one does not take a live marker for
// stale; and no marker holds anything off for longer than maxStaleAfter.
func TestAMarkerCarriesItsHoldersStalenessTime(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		name      string
		age       time.Duration
		holder    time.Duration // 0: a marker of an earlier version, which records none
		reader    time.Duration
		wantFresh bool
	}{
		{"a holder with 2h read by a reader with 30m, 40m after its heartbeat", 40 * time.Minute, 2 * time.Hour, 30 * time.Minute, true},
		{"the same, 3h after", 3 * time.Hour, 2 * time.Hour, 30 * time.Minute, false},
		{"a holder with 1m read by a reader with 30m, 2m after", 2 * time.Minute, time.Minute, 30 * time.Minute, false},
		{"an earlier version's marker, by the reader's time", 10 * time.Minute, 0, 30 * time.Minute, true},
		{"a marker claiming a year, 25h after", 25 * time.Hour, 365 * 24 * time.Hour, 30 * time.Minute, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw, _ := json.Marshal(marker{Heartbeat: now.Add(-tt.age), StaleAfter: tt.holder})
			if got := markerFresh(raw, now, tt.reader); got != tt.wantFresh {
				t.Errorf("fresh = %v, want %v", got, tt.wantFresh)
			}
		})
	}
}

// Each holder has a marker of its own: one collection ending leaves the marker of another
// that still runs, which a backup starting then must see.
func TestOneCollectionEndingLeavesAnothersMarker(t *testing.T) {
	ctx := context.Background()
	b := memblob.OpenBucket(nil)
	s := New(b, "prefix")
	defer s.Close()
	first, err := s.takeLease(ctx, gcMarkerKey(markerID()), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.takeLease(ctx, gcMarkerKey(markerID()), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.release(ctx); err != nil {
		t.Fatal(err)
	}
	if busy, err := s.collecting(ctx, time.Minute); err != nil || !busy {
		t.Errorf("collecting = %v, %v after one of two collections ended; want the other seen", busy, err)
	}
	if err := second.release(ctx); err != nil {
		t.Fatal(err)
	}
	if busy, err := s.collecting(ctx, time.Minute); err != nil || busy {
		t.Errorf("collecting = %v, %v after both ended", busy, err)
	}
}

// A writer whose process died resumes with the marker it left: its Commit removes that marker,
// and collections run at once instead of waiting for it to go stale. Another writer's marker of
// the same backup stays.
func TestAResumedBackupTakesOverTheMarkerItsDeadRunLeft(t *testing.T) {
	for _, tc := range []struct {
		desc         string
		resumedBy    string
		wantDeferred bool
	}{
		{desc: "the same writer", resumedBy: "uid-1", wantDeferred: false},
		{desc: "another writer", resumedBy: "uid-2", wantDeferred: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ctx := context.Background()
			s := New(memblob.OpenBucket(nil), "prefix")
			defer s.Close()
			runCtx, die := context.WithCancel(ctx)
			if _, err := s.Begin(runCtx, "b", "uid-1", time.Hour); err != nil {
				t.Fatal(err)
			}
			die() // the process dies: its marker stays, fresh for an hour
			resumed, err := s.Begin(ctx, "b", tc.resumedBy, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if err := resumed.Commit(ctx, nil, IndexMeta{}); err != nil {
				t.Fatal(err)
			}
			rep, err := s.GC(ctx, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Deferred != tc.wantDeferred {
				t.Errorf("GC after the resumed run committed: %+v; want deferred = %v", rep, tc.wantDeferred)
			}
		})
	}
}
