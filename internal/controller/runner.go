package controller

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// runner runs the long copies of backups and restores in the background, one per resource,
// so that a reconcile returns at once and can still cancel a copy that runs for hours. It is
// a manager.Runnable: copies get the manager's context and stop with it, leaving their
// resources in progress for the next worker to resume.
type runner struct {
	mu      sync.Mutex
	ctx     context.Context
	jobs    map[types.NamespacedName]*job
	wg      sync.WaitGroup
	started chan struct{}
}

type job struct {
	cancel context.CancelFunc
	// byUser is set when spec.cancel stopped the job, as opposed to the worker shutting down.
	byUser bool
}

func newRunner() *runner {
	return &runner{jobs: map[types.NamespacedName]*job{}, started: make(chan struct{})}
}

// Start implements manager.Runnable.
func (r *runner) Start(ctx context.Context) error {
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()
	close(r.started)
	<-ctx.Done()
	r.wg.Wait()
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: copies run on the leader only.
func (r *runner) NeedLeaderElection() bool { return true }

// start runs f for key unless a job for key is running. f's context ends when the job is
// canceled or the manager stops; canceledByUser tells the two apart.
func (r *runner) start(key types.NamespacedName, f func(ctx context.Context, canceledByUser func() bool)) bool {
	<-r.started
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.jobs[key]; ok || r.ctx.Err() != nil {
		return false
	}
	ctx, cancel := context.WithCancel(r.ctx)
	j := &job{cancel: cancel}
	r.jobs[key] = j
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer cancel()
		f(ctx, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return j.byUser })
		r.mu.Lock()
		delete(r.jobs, key)
		r.mu.Unlock()
	}()
	return true
}

func (r *runner) running(key types.NamespacedName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.jobs[key]
	return ok
}

// cancel stops key's job at the user's request.
func (r *runner) cancel(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if j, ok := r.jobs[key]; ok {
		j.byUser = true
		j.cancel()
	}
}
