package action

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// snapshots serves recent reads of ImageStreamsBackups and ImageStreamsRestores to Progress.
// Velero asks for the progress of every operation, one after the other, at the end of a backup
// and then every few seconds, and an object holds the operations of many imagestreams: a read per
// operation would read each large object once per imagestream in every round. Progress is
// polled, so a view a few seconds old is as good as a fresh one.
type snapshots[T client.Object] struct {
	reader client.Reader
	kind   objectKind
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

func newSnapshots[T client.Object](r client.Reader, kind objectKind, newT func() T) *snapshots[T] {
	return &snapshots[T]{reader: r, kind: kind, newT: newT, ttl: snapshotTTL, items: map[client.ObjectKey]snapshot[T]{}}
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
		return obj, fmt.Errorf("reading %s %s: %w", s.kind.name, key, err)
	}
	s.items[key] = snapshot[T]{obj: obj, read: time.Now()}
	return obj, nil
}

// progress is the progress of op from its object in namespace, as progressOf maps it; an object
// that does not exist (not yet, or no longer) is reported as unwritten.
func (s *snapshots[T]) progress(ctx context.Context, namespace string, op operation,
	progressOf func(T, operation, time.Time) velero.OperationProgress) (velero.OperationProgress, error) {
	now := time.Now()
	obj, err := s.get(ctx, client.ObjectKey{Namespace: namespace, Name: op.object})
	if apierrors.IsNotFound(err) {
		return op.unwritten(now, s.kind, namespace, false), nil
	}
	if err != nil {
		return velero.OperationProgress{}, err
	}
	return progressOf(obj, op, now), nil
}

// put keeps obj, as a writer got it back from the API server, as if just read.
func (s *snapshots[T]) put(obj T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items[client.ObjectKeyFromObject(obj)] = snapshot[T]{obj: obj, read: time.Now()}
}
