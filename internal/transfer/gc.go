package transfer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/internal/location"
)

// Collector runs garbage collections outside the reconcile loop: at most one at a time per
// location, each covering every request made before it started, so that the parts of one
// Velero backup deleted together cost one collection. A collection deferred because a backup
// is in progress, or one that failed, is tried again by itself every retry interval. Waiting
// resources are reconciled again when the collection that covers them has finished; they are
// the durable record of the request, so a worker that restarts meanwhile collects again.
type Collector struct {
	cfg CollectorConfig

	mu   sync.Mutex
	ctx  context.Context
	locs map[string]*gcQueue
}

// CollectorConfig configures a Collector.
type CollectorConfig struct {
	// Open opens a location's store.
	Open func(context.Context, *location.Location) (*imagestore.Store, error)
	// StaleAfter is how long an in-progress marker counts without being refreshed.
	StaleAfter time.Duration
	// Delay gathers the requests of a burst into one collection; Retry paces deferred ones.
	Delay, Retry time.Duration
	// Notify is called for each waiting resource whose collection finished, or whose reason
	// to wait changed.
	Notify func(types.NamespacedName)
	// Observe, when set, is told how each collection ended: "completed", "deferred" or "failed".
	Observe func(result string, rep imagestore.GCReport)
	Log     logr.Logger
}

// Waiter is a resource that asked for a collection. Its uid tells it apart from one of the same
// name made after it was deleted, which has asked for nothing yet.
type Waiter struct {
	types.NamespacedName
	UID types.UID
}

// gcQueue is the collection state of one location.
type gcQueue struct {
	loc *location.Location
	// waiting asked for a collection that has not started; covered are covered by the one
	// running; finished have been covered by one that completed, with what it did.
	waiting, covered map[Waiter]bool
	finished         map[Waiter]imagestore.GCReport
	running          bool
	// deferredBy names the backups in progress that held off the last attempt, or why it failed.
	deferredBy string
}

// NewCollector returns a Collector; it runs collections once started as a manager.Runnable.
func NewCollector(cfg CollectorConfig) *Collector {
	if cfg.Observe == nil {
		cfg.Observe = func(string, imagestore.GCReport) {}
	}
	return &Collector{cfg: cfg, locs: map[string]*gcQueue{}}
}

// Start implements manager.Runnable: collections run under the manager's context.
func (c *Collector) Start(ctx context.Context) error {
	c.mu.Lock()
	c.ctx = ctx
	for _, q := range c.locs {
		if len(q.waiting) > 0 && !q.running {
			q.running = true
			go c.run(q)
		}
	}
	c.mu.Unlock()
	<-ctx.Done()
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: collections run on the leader.
func (c *Collector) NeedLeaderElection() bool { return true }

// Collect asks for a collection of loc on behalf of who. It returns true, with the report,
// once a collection that started after the first request of who has completed; until then it
// returns false and a short description of what the collection waits for, if anything.
func (c *Collector) Collect(loc *location.Location, who Waiter) (bool, imagestore.GCReport, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := loc.Key()
	q := c.locs[key]
	if q == nil {
		q = &gcQueue{waiting: map[Waiter]bool{}, covered: map[Waiter]bool{}, finished: map[Waiter]imagestore.GCReport{}}
		c.locs[key] = q
	}
	q.loc = loc // the latest credentials
	if rep, ok := q.finished[who]; ok {
		delete(q.finished, who)
		return true, rep, ""
	}
	if !q.covered[who] {
		q.waiting[who] = true
	}
	if !q.running && c.ctx != nil {
		q.running = true
		go c.run(q)
	}
	return false, imagestore.GCReport{}, q.deferredBy
}

// Forget drops the requests of resources named key, which went away.
func (c *Collector) Forget(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range c.locs {
		for _, m := range []map[Waiter]bool{q.waiting, q.covered} {
			maps.DeleteFunc(m, func(w Waiter, _ bool) bool { return w.NamespacedName == key })
		}
		maps.DeleteFunc(q.finished, func(w Waiter, _ imagestore.GCReport) bool { return w.NamespacedName == key })
	}
}

// run collects q's location until no request waits.
func (c *Collector) run(q *gcQueue) {
	wait := c.cfg.Delay
	for {
		select {
		case <-c.ctx.Done():
			c.mu.Lock()
			q.running = false
			c.mu.Unlock()
			return
		case <-time.After(wait):
		}
		c.mu.Lock()
		for who := range q.waiting {
			q.covered[who] = true
		}
		clear(q.waiting)
		loc := q.loc
		if len(q.covered) == 0 {
			q.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		rep, err := c.once(loc)
		if c.ctx.Err() != nil {
			continue // the worker is stopping; the resources waiting ask again when it is back
		}
		log := c.cfg.Log.WithValues("location", loc.Describe())
		c.mu.Lock()
		before := q.deferredBy
		switch {
		case err != nil:
			q.deferredBy = "the last attempt failed: " + err.Error()
			c.cfg.Observe("failed", rep)
			log.Error(err, "Garbage collection failed; trying again", "retryIn", c.cfg.Retry)
		case rep.Deferred:
			q.deferredBy = "waiting for backups in progress: " + strings.Join(rep.Running, ", ")
			c.cfg.Observe("deferred", rep)
			log.Info("Garbage collection deferred while backups are in progress", "running", rep.Running, "retryIn", c.cfg.Retry)
		default:
			q.deferredBy = ""
			c.cfg.Observe("completed", rep)
			log.Info("Garbage collection finished", "backups", rep.Backups, "blobsKept", rep.Kept, "blobsDeleted", rep.Deleted, "bytesFreed", rep.DeletedBytes)
			for who := range q.covered {
				q.finished[who] = rep
				c.cfg.Notify(who.NamespacedName)
			}
			clear(q.covered)
		}
		if q.deferredBy != before {
			// The waiting resources say why they still wait.
			for who := range q.covered {
				c.cfg.Notify(who.NamespacedName)
			}
		}
		c.mu.Unlock()
		wait = c.cfg.Delay
		if err != nil || rep.Deferred {
			wait = c.cfg.Retry
		}
	}
}

// once runs one collection of loc.
func (c *Collector) once(loc *location.Location) (imagestore.GCReport, error) {
	store, err := c.cfg.Open(c.ctx, loc)
	if err != nil {
		return imagestore.GCReport{}, err
	}
	defer store.Close()
	rep, err := store.GC(c.ctx, c.cfg.StaleAfter)
	if errors.Is(err, imagestore.ErrGCRunning) {
		// Another process collects this location now; ours runs after it.
		return imagestore.GCReport{Deferred: true, Running: []string{"another garbage collection"}}, nil
	}
	return rep, err
}

// OpenStore opens a resolved location's store.
func OpenStore(ctx context.Context, l *location.Location) (*imagestore.Store, error) {
	b, err := bucket.Open(ctx, l.Bucket)
	if err != nil {
		return nil, fmt.Errorf("opening backup location %s: %w", l.Describe(), err)
	}
	return imagestore.New(b, l.Prefix), nil
}
