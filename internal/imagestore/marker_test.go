package imagestore

import (
	"encoding/json"
	"testing"
	"time"
)

// A marker is read from the bucket: whatever its bytes, deciding whether it is fresh must not
// panic, and a marker can hold off backups or collections only for a bounded time.
func FuzzMarkerFresh(f *testing.F) {
	f.Add([]byte(`{"heartbeat":"2024-01-01T00:00:00Z"}`), int64(0), int64(time.Minute))
	f.Add([]byte(`{"heartbeat":"2999-01-01T00:00:00Z"}`), int64(0), int64(30*time.Minute))
	f.Add([]byte(`{"heartbeat":"0001-01-01T00:00:00Z"}`), int64(-1<<62), int64(1))
	f.Add([]byte(`{"heartbeat":null}`), int64(1), int64(1))
	f.Add([]byte("\x00{"), int64(0), int64(time.Hour))
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
		if age := now.Sub(m.Heartbeat); age >= staleAfter || age <= -staleAfter {
			t.Fatalf("a heartbeat %v from now counts as fresh for %v", age, staleAfter)
		}
		// What we write reads back the same.
		out, _ := json.Marshal(marker{Heartbeat: m.Heartbeat})
		if !markerFresh(out, now, staleAfter) {
			t.Fatalf("the marker %s written from a fresh one is stale", out)
		}
	})
}
