package action

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// recording is what the backup and restore actions on imagestreams share: Execute queues each
// imagestream in recorder, to be written into the object that holds its operation.
type recording struct {
	log          logrus.FieldLogger
	client       client.Client
	registryHost func(context.Context) (string, error)
	recorder     *recorder[oadpv1alpha1.ImageStream]
}

// newRecording is a recording whose writes carry field managers that start with manager.
func newRecording(log logrus.FieldLogger, c client.Client, registryHost func(context.Context) (string, error), manager string) recording {
	r := newRecorder[oadpv1alpha1.ImageStream](c, log, manager)
	r.describe = func(is oadpv1alpha1.ImageStream) string { return is.NamespaceOrDefault() + "/" + is.Name }
	return recording{log: log, client: c, registryHost: registryHost, recorder: r}
}

// Flush writes every imagestream Execute has queued and waits until it is written or ctx ends.
// Whoever creates the action calls it before the process exits: what is still queued then is
// lost, and the operations of its imagestreams fail after recordDeadline.
func (a *recording) Flush(ctx context.Context) error { return a.recorder.flush(ctx) }

// recorder writes list entries of type E into shared objects (ImageStreamsBackup and
// ImageStreamsRestore parts) in the background, batching what arrives while a write is in flight
// into the next write: a group commit.
//
// Velero calls an item action once per item, one after the other, and waits for it, and every
// write of one object costs the API server time in proportion to the object's size, which grows
// with the backup: a write per item would make item collection wait on the API server for each
// item. Execute therefore only queues its entry; the operation it returns completes once the entry
// is written and its images are copied, and an entry that is never written (the plugin process
// killed first) fails its operation after recordDeadline.
//
// A recorder that holds writes (holdUntilFlush) writes an object only when its writer releases it
// (release: the backup action's full parts) or at flush, so that each object is written once,
// whole, instead of growing over many writes that compete with Velero's own requests for the
// API server; the backup action flushes when item collection has ended (see
// BackupAction.itemCollectionEnded).
//
// Whoever creates a recorder's action flushes it before the process exits (the plugin's main
// does when Velero stops it): what is still queued then is lost.
type recorder[E any] struct {
	client client.Client
	log    logrus.FieldLogger
	// manager prefixes the field manager of every write; each write has a manager of its own,
	// so that server-side apply never removes an entry an earlier write made.
	manager string
	// id tells this recorder, and so this process, from others that write the same objects.
	id string
	// holdUntilFlush queues entries until flush instead of writing them as they come.
	holdUntilFlush bool
	// spacing, when set, is the least time between the starts of two writes of one object:
	// what arrives meanwhile goes into the next write. Each write costs the API server in
	// proportion to the object, and one a Velero restore builds holds every imagestream of
	// the restore; writing as soon as the last write ended made a write of every one or two.
	spacing time.Duration
	// describe, when set, names an entry in the log of a write that failed: what is lost if
	// no later write succeeds.
	describe func(E) string
	// written, when set, gets each object as the API server returned it from a write.
	written func(*unstructured.Unstructured)
	// writes bounds the writes in flight, so that a flush of a thousand objects does not
	// send them to the API server all at once.
	writes chan struct{}

	mu      sync.Mutex
	objects map[string]*queue[E]
	seq     int
	idle    *sync.Cond
	busy    int
}

// queue is what waits to be written into one object.
type queue[E any] struct {
	build   func(entries []E) *unstructured.Unstructured
	entries []E
	writing bool
	// attempted is set once a write of the object has started, whatever came of it: the
	// API server may have stored a write whose answer was an error.
	attempted bool
	// written is set once a write of the whole object succeeded; later writes carry only
	// the list entries. Every field a write carries is recorded under its field manager, so
	// writes that each carried the labels, owner reference and namespace mapping again would
	// grow the object's managed fields with every write.
	written bool
	// exists says the object is known to exist, so the first write applies rather than
	// creates.
	exists bool
	// touched asks for a write of the whole object even without entries (see touch).
	touched bool
	// released has a recorder that holds writes write this object as entries come (see
	// release).
	released bool
	// lastWrite is when the last write of the object started.
	lastWrite time.Time
}

// recordDeadline is how long after Execute an entry may still be missing from its object
// before its operation fails: a write is retried for about a minute.
const recordDeadline = 3 * time.Minute

// concurrentWrites is how many objects a recorder writes at once.
const concurrentWrites = 4

func newRecorder[E any](c client.Client, log logrus.FieldLogger, manager string) *recorder[E] {
	raw := make([]byte, 8)
	_, _ = rand.Read(raw)
	id := hex.EncodeToString(raw)
	r := &recorder[E]{client: c, log: log, manager: manager + "-" + id, id: id, objects: map[string]*queue[E]{},
		writes: make(chan struct{}, concurrentWrites)}
	r.idle = sync.NewCond(&r.mu)
	return r
}

// exists notes that the object of key exists already, created by someone else.
func (r *recorder[E]) exists(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue(key).exists = true
}

func (r *recorder[E]) queue(key string) *queue[E] {
	q := r.objects[key]
	if q == nil {
		q = &queue[E]{}
		r.objects[key] = q
	}
	return q
}

// add queues entry for the object build makes; build gets every entry of the batch and must
// return the same object (kind, namespace, name) each time. It reports whether the entry goes
// in the recorder's first write of the object: no write of it has started yet. A failed write
// queues its entries again, so every entry queued before the first write started is in every
// write of the whole object, the first that the API server stored among them.
func (r *recorder[E]) add(key string, build func(entries []E) *unstructured.Unstructured, entry E) (firstWrite bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(key)
	firstWrite = !q.attempted
	q.build = build
	q.entries = append(q.entries, entry)
	if !r.holdUntilFlush || q.released {
		r.startLocked(q)
	}
	return firstWrite
}

// release has the object of key written now, and written as entries come from now on, by a
// recorder that holds writes: its writer expects no more entries for it.
func (r *recorder[E]) release(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(key)
	q.released = true
	r.startLocked(q)
}

// touch has the object build makes written at the next write, even if no entry is queued for
// it: a head lists its parts, whatever it holds itself, and lists a part that appears after it
// was written.
func (r *recorder[E]) touch(key string, build func(entries []E) *unstructured.Unstructured) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(key)
	q.build = build
	q.touched = true
	if !r.holdUntilFlush {
		r.startLocked(q)
	}
}

// startLocked starts writing q's entries unless a write of q is in flight already; that write
// takes them along when it is done.
func (r *recorder[E]) startLocked(q *queue[E]) {
	if q.writing || len(q.entries) == 0 && !q.touched {
		return
	}
	q.writing = true
	r.busy++
	go r.drain(q)
}

// drain writes q's entries until none are left.
func (r *recorder[E]) drain(q *queue[E]) {
	for {
		r.mu.Lock()
		if delay := time.Until(q.lastWrite.Add(r.spacing)); r.spacing > 0 && delay > 0 {
			r.mu.Unlock()
			time.Sleep(delay)
			r.mu.Lock()
		}
		q.lastWrite = time.Now()
		entries, touched := q.entries, q.touched
		q.entries, q.touched = nil, false
		if len(entries) == 0 && !touched {
			q.writing = false
			r.busy--
			r.idle.Broadcast()
			r.mu.Unlock()
			return
		}
		r.seq++
		q.attempted = true
		manager := fmt.Sprintf("%s-%d", r.manager, r.seq)
		written, exists, build := q.written, q.exists, q.build
		r.mu.Unlock()

		obj := build(entries)
		if written {
			obj = entriesOnly(obj)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		create := !written && !exists
		err := retry.OnError(recordBackoff, transientAPIError, func() error {
			r.writes <- struct{}{}
			defer func() { <-r.writes }()
			if create {
				// An object nobody has written yet is created, not applied: the API server
				// parses an apply patch with its YAML parser, which costs it much more CPU
				// than decoding a create. Fields a create sets belong to its field manager
				// just the same.
				err := r.client.Create(ctx, obj, client.FieldOwner(manager))
				if !apierrors.IsAlreadyExists(err) {
					return err
				}
				create = false
			}
			return r.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(manager), client.ForceOwnership)
		})
		cancel()
		log := r.log.WithFields(logrus.Fields{"kind": obj.GetKind(), "name": obj.GetNamespace() + "/" + obj.GetName(), "entries": len(entries)})
		if err != nil {
			// The entries wait for the next write (the plugin writes what is left before it
			// exits); their operations fail if they do not appear by recordDeadline.
			if r.describe != nil {
				log = log.WithField("names", describe(entries, r.describe))
			}
			log.WithError(err).Error("Failed to record entries; the next write takes them again")
			r.mu.Lock()
			q.entries = append(entries, q.entries...)
			q.touched = q.touched || touched
			q.writing = false
			r.busy--
			r.idle.Broadcast()
			r.mu.Unlock()
			return
		}
		log.Info("Recorded entries")
		r.mu.Lock()
		q.written = true
		r.mu.Unlock()
		if r.written != nil {
			r.written(obj) // the write decoded the whole object into obj
		}
	}
}

// describe names entries, at most 100 of them.
func describe[E any](entries []E, name func(E) string) string {
	var names []string
	for _, e := range entries[:min(len(entries), 100)] {
		names = append(names, name(e))
	}
	if len(entries) > 100 {
		names = append(names, fmt.Sprintf("and %d more", len(entries)-100))
	}
	return strings.Join(names, ", ")
}

// entriesOnly is obj reduced to what identifies it and the lists a later write adds to:
// spec.imageStreams and, on a head, spec.parts (sets, so each write's manager owns the items
// it sends and the API server keeps the earlier ones).
func entriesOnly(obj *unstructured.Unstructured) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion(obj.GetAPIVersion())
	u.SetKind(obj.GetKind())
	u.SetNamespace(obj.GetNamespace())
	u.SetName(obj.GetName())
	for _, field := range []string{"imageStreams", "parts"} {
		if list, ok, _ := unstructured.NestedSlice(obj.Object, "spec", field); ok {
			_ = unstructured.SetNestedSlice(u.Object, list, "spec", field)
		}
	}
	return u
}

// flush writes everything queued and waits until it is written or ctx ends.
func (r *recorder[E]) flush(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.idle.Broadcast()
	})
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, q := range r.objects {
		r.startLocked(q)
	}
	for r.busy > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%d objects still being written: %w", r.busy, err)
		}
		r.idle.Wait()
	}
	return nil
}

// flushHeld is flush when entries wait that no write has taken up yet, and nothing otherwise:
// a caller that gave up waiting once does not wait again for the same writes.
func (r *recorder[E]) flushHeld(ctx context.Context) error {
	r.mu.Lock()
	held := false
	for _, q := range r.objects {
		held = held || !q.writing && (len(q.entries) > 0 || q.touched)
	}
	r.mu.Unlock()
	if !held {
		return nil
	}
	return r.flush(ctx)
}

// recordBackoff retries a write for about a minute: the API server refusing for load recovers, an
// object that cannot take the entries does not.
var recordBackoff = wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 9, Cap: 15 * time.Second}
