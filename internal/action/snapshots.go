package action

import (
	"context"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// snapshots serves recent reads of ImageStreamsBackups and ImageStreamsRestores to Progress.
// Velero asks for the progress of every operation, one after the other, at the end of a backup
// and then every few seconds: one read per operation made a backup of 2,000 imagestreams read
// its parts, each hundreds of kilobytes, 2,000 times a round and kept the API server busy for
// minutes. Progress is polled, so a view a few seconds old is as good as a fresh one.
type snapshots[T client.Object] struct {
	reader client.Reader
	newT   func() T
	ttl    time.Duration

	mu    sync.Mutex
	items map[client.ObjectKey]snapshot[T]
}

type snapshot[T client.Object] struct {
	obj  T
	read time.Time
}

const snapshotTTL = 3 * time.Second

func newSnapshots[T client.Object](r client.Reader, newT func() T) *snapshots[T] {
	return &snapshots[T]{reader: r, newT: newT, ttl: snapshotTTL, items: map[client.ObjectKey]snapshot[T]{}}
}

// get returns the object, read at most ttl ago. Errors, not found included, are not kept.
func (s *snapshots[T]) get(ctx context.Context, key client.ObjectKey) (T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sn, ok := s.items[key]; ok && time.Since(sn.read) < s.ttl {
		return sn.obj, nil
	}
	obj := s.newT()
	if err := s.reader.Get(ctx, key, obj); err != nil {
		delete(s.items, key)
		return obj, err
	}
	s.items[key] = snapshot[T]{obj: obj, read: time.Now()}
	return obj, nil
}

// put keeps obj, as a writer got it back from the API server, as if just read.
func (s *snapshots[T]) put(obj T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items[client.ObjectKeyFromObject(obj)] = snapshot[T]{obj: obj, read: time.Now()}
}
