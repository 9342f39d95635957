// Package transfer runs the long work of the worker: backup and restore jobs that move images
// between the internal registry and a store, and garbage collections of stored backups. It
// knows no Kubernetes client: a reconciler decides what to run, starts it here with callbacks,
// and projects what the callbacks report onto its resource's status.
package transfer

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

var (
	// ErrRunning: a job for the key runs already.
	ErrRunning = errors.New("a job for this resource is running")
	// ErrStopping: the runner is stopping, or has stopped, and starts no job.
	ErrStopping = errors.New("the runner is stopping")
	// ErrCanceled is the cause of a job's context when Cancel stopped it, as opposed to the
	// runner stopping with the worker.
	ErrCanceled = errors.New("canceled by spec.cancel")
)

// Job is one backup or restore. Run does the work and returns how it ended; Progress may be
// called at any time, from another goroutine; Close releases what the job holds (its store)
// and is called once, whether or not the job ran.
type Job interface {
	Run(ctx context.Context, started StartedFunc) Result
	Progress() oadpv1alpha1.Progress
	Close()
}

// StartedFunc is called by a job once it holds what it needs and starts moving total images;
// message says what it does.
type StartedFunc func(total int64, message string)

// Callbacks tell the job's owner what the job does. Each is optional. They run on the job's
// goroutine with the job's context, which ends when the job is canceled or the runner stops.
type Callbacks struct {
	OnStarted  func(ctx context.Context, total int64, message string)
	OnProgress func(ctx context.Context, p oadpv1alpha1.Progress)
	// OnDone is called with the job's result before the runner forgets the job, so that a
	// reconcile that sees the job gone also sees its final status.
	OnDone func(ctx context.Context, r Result)
}

// Runner runs jobs in the background, one per resource, so that a reconcile returns at once
// and can still cancel a job that runs for hours, the way Velero's data path manager runs data
// movers. It is a manager.Runnable: jobs get the manager's context and stop with it, leaving
// their resources in progress for the next worker to resume.
type Runner struct {
	// progressInterval is how often a running job's OnProgress is called.
	progressInterval time.Duration

	mu      sync.Mutex
	ctx     context.Context
	jobs    map[types.NamespacedName]context.CancelCauseFunc
	wg      sync.WaitGroup
	started chan struct{}
}

// NewRunner returns a Runner that reports progress every progressInterval.
func NewRunner(progressInterval time.Duration) *Runner {
	return &Runner{progressInterval: progressInterval, jobs: map[types.NamespacedName]context.CancelCauseFunc{}, started: make(chan struct{})}
}

// Start implements manager.Runnable: it runs jobs until ctx ends, then waits for them.
func (r *Runner) Start(ctx context.Context) error {
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()
	close(r.started)
	<-ctx.Done()
	// Every StartJob that found ctx alive has added its job under mu; later ones add none.
	r.mu.Lock()
	r.mu.Unlock() //nolint:staticcheck // an empty critical section orders Wait after those Adds
	r.wg.Wait()
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: jobs run on the leader only.
func (r *Runner) NeedLeaderElection() bool { return true }

// StartJob runs job for key in the background and reports through cb. The job's context has
// the values of ctx (its logger) but not its end: it ends when the job is canceled or the
// runner stops. StartJob fails with ErrRunning or ErrStopping, having closed job, when it
// does not start it. It waits for the runner to start.
func (r *Runner) StartJob(ctx context.Context, key types.NamespacedName, job Job, cb Callbacks) error {
	<-r.started
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.jobs[key]; ok {
		job.Close()
		return ErrRunning
	}
	if r.ctx.Err() != nil {
		job.Close()
		return ErrStopping
	}
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stopWithRunner := context.AfterFunc(r.ctx, func() { cancel(context.Cause(r.ctx)) })
	r.jobs[key] = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer stopWithRunner()
		defer cancel(nil)
		res := r.run(ctx, job, cb)
		if cb.OnDone != nil {
			cb.OnDone(ctx, res)
		}
		r.mu.Lock()
		delete(r.jobs, key)
		r.mu.Unlock()
	}()
	return nil
}

// run runs job, with progress reports from its start to its end.
func (r *Runner) run(ctx context.Context, job Job, cb Callbacks) Result {
	defer job.Close()
	stop := func() {}
	res := job.Run(ctx, func(total int64, message string) {
		if cb.OnStarted != nil {
			cb.OnStarted(ctx, total, message)
		}
		if cb.OnProgress != nil && r.progressInterval > 0 {
			stop = every(ctx, r.progressInterval, func() { cb.OnProgress(ctx, job.Progress()) })
		}
	})
	stop()
	return res
}

// Running reports whether a job for key runs.
func (r *Runner) Running(key types.NamespacedName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.jobs[key]
	return ok
}

// Cancel stops key's job at the user's request: its context ends with cause ErrCanceled.
func (r *Runner) Cancel(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cancel, ok := r.jobs[key]; ok {
		cancel(ErrCanceled)
	}
}

// stopped is how a job whose context ended ends: Canceled when Cancel stopped it, Interrupted
// when the runner is stopping.
func stopped(ctx context.Context) Outcome {
	if errors.Is(context.Cause(ctx), ErrCanceled) {
		return Canceled
	}
	return Interrupted
}

// every calls f every interval until ctx ends or the returned stop is called; stop returns
// once f is no longer running.
func every(ctx context.Context, interval time.Duration, f func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = wait.PollUntilContextCancel(ctx, interval, false, func(context.Context) (bool, error) {
			f()
			return false, nil
		})
	}()
	return func() { cancel(); <-done }
}
