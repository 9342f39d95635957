package controller

import (
	"context"
	"errors"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/source"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/transfer"
)

// jobs is what both reconcilers share: it starts their transfer jobs and projects what the
// jobs report onto the resources' status, with events, logs and metrics.
type jobs struct {
	client client.Client
	// reader reads uncached: what a reconcile decides from the cache is acted on only while
	// the cached status is the API server's (see stale).
	reader   client.Reader
	recorder events.EventRecorder
	cfg      *Config
	runner   *transfer.Runner
	// kind is "Backup" or "Restore", in events, logs and metrics.
	kind string
	// newObject returns an empty object of the kind, to wake by name.
	newObject func() client.Object
	// wake reconciles a resource again when a job or the collector asks for it.
	wake chan event.GenericEvent
}

func newJobs(c client.Client, reader client.Reader, rec events.EventRecorder, cfg *Config, kind string, newObject func() client.Object) *jobs {
	return &jobs{client: c, reader: reader, recorder: rec, cfg: cfg, runner: transfer.NewRunner(cfg.ProgressInterval), kind: kind, newObject: newObject,
		wake: make(chan event.GenericEvent, 64)}
}

// source is the wake-ups, for the controller to watch.
func (j *jobs) source() source.Source {
	return source.Channel(j.wake, &handler.EnqueueRequestForObject{})
}

// wakeUp has key reconciled again. A full channel drops the request; those who ask again
// later (a deletion's periodic requeue) make up for it.
func (j *jobs) wakeUp(key types.NamespacedName) {
	select {
	case j.wake <- j.event(key):
	default:
	}
}

// event is the wake-up of the resource named key.
func (j *jobs) event(key types.NamespacedName) event.GenericEvent {
	obj := j.newObject()
	obj.SetNamespace(key.Namespace)
	obj.SetName(key.Name)
	return event.GenericEvent{Object: obj}
}

// wakeUpAfter has key reconciled again after d. Unlike wakeUp it waits for room in the
// channel, for up to a minute: nothing else asks again for a resource a job stopped.
func (j *jobs) wakeUpAfter(key types.NamespacedName, d time.Duration) {
	time.AfterFunc(d, func() {
		select {
		case j.wake <- j.event(key):
		case <-time.After(time.Minute):
		}
	})
}

// whileRunning handles a resource whose job runs: a cancel or a deletion stops the job.
// The job's own final status write may come before it leaves the runner; looking again later
// catches a spec that changed meanwhile.
func (j *jobs) whileRunning(obj statusObject) (ctrl.Result, bool) {
	key := client.ObjectKeyFromObject(obj)
	if !j.runner.Running(key) {
		return ctrl.Result{}, false
	}
	if obj.CancelRequested() || !obj.GetDeletionTimestamp().IsZero() {
		j.runner.Cancel(key)
	}
	return ctrl.Result{RequeueAfter: j.cfg.RetryInterval}, true
}

// cancelBeforeStart ends obj, which asks to be canceled and has no job.
func (j *jobs) cancelBeforeStart(ctx context.Context, obj statusObject) (ctrl.Result, error) {
	return j.patchDecided(ctx, obj, func() { setCanceledBeforeStart(obj, obj.GetGeneration()) })
}

// notYet says why obj cannot start, and looks again after RetryInterval.
func (j *jobs) notYet(ctx context.Context, obj statusObject, reason string, cause error) (ctrl.Result, error) {
	log.FromContext(ctx).Info(j.kind+" cannot start yet", "reason", reason, "error", cause.Error())
	res, err := j.patchDecided(ctx, obj, func() { setWaiting(obj, obj.GetGeneration(), reason, cause.Error()) })
	return lookAgainAfter(res, err, j.cfg.RetryInterval)
}

// lookAgainAfter passes on what patchDecided returned when its write failed or was held back
// (a stale copy), and otherwise looks again after d.
func lookAgainAfter(res ctrl.Result, err error, d time.Duration) (ctrl.Result, error) {
	if err != nil || res.RequeueAfter > 0 {
		return res, err
	}
	return ctrl.Result{RequeueAfter: d}, nil
}

// fail ends obj, which cannot run at all, with res.
func (j *jobs) fail(ctx context.Context, obj statusObject, res transfer.Result) (ctrl.Result, error) {
	if stale, again, err := j.stale(ctx, obj); stale {
		return again, err
	}
	return ctrl.Result{}, j.end(ctx, obj, obj.GetGeneration(), res, time.Now())
}

// start runs job for obj. Its status writes go to a copy of obj that each write refreshes,
// and answer obj's generation, the spec the job runs.
// A cached obj whose status is behind the API server's (see stale) closes job unstarted and
// is looked at again.
func (j *jobs) start(ctx context.Context, obj statusObject, job transfer.Job) (ctrl.Result, error) {
	if stale, res, err := j.stale(ctx, obj); stale {
		job.Close()
		return res, err
	}
	gen, live := obj.GetGeneration(), obj.DeepCopyObject().(statusObject)
	logger := log.FromContext(ctx)
	begun := time.Now()
	err := j.runner.StartJob(ctx, client.ObjectKeyFromObject(obj), job, transfer.Callbacks{
		OnStarted: func(ctx context.Context, total int64, message string) {
			if err := j.patch(ctx, live, func() { setStarted(live, gen, total, message) }); err != nil {
				logger.Error(err, "Failed to update status")
			}
			j.recorder.Eventf(live, nil, corev1.EventTypeNormal, "Started", j.kind, "Started %s", message)
			logger.Info(j.kind+" started", "images", total)
		},
		OnProgress: func(ctx context.Context, p oadpv1alpha1.Progress) {
			if !j.cfg.progressDue() {
				return
			}
			if err := j.patch(ctx, live, func() { setProgress(live, p) }); err != nil && ctx.Err() == nil {
				logger.Error(err, "Failed to update progress")
			}
		},
		OnDone: func(ctx context.Context, res transfer.Result) {
			if err := j.end(ctx, live, gen, res, begun); err != nil {
				logger.Error(err, "Failed to write final status")
			}
		},
	})
	if errors.Is(err, transfer.ErrRunning) || errors.Is(err, transfer.ErrStopping) {
		return ctrl.Result{}, nil // the running job answers; a stopping worker's successor starts it
	}
	return ctrl.Result{}, err
}

// stale reports whether obj, a copy from the cache, is behind the object the API server has in
// what the reconcilers decide from: its status, which only the worker writes (writes of the
// spec or metadata meanwhile leave it current; a changed spec is run again once answered). A
// gone object is stale too. again is how to look at obj again.
//
// The runner forgets a job as soon as its final status is written, and the cache may not have
// that write yet: a reconcile of the cached copy sees the resource unanswered. Whatever it
// decides from that copy must not be written: a run started from it copies the spec again,
// and a status patch from it takes back what the final write said.
func (j *jobs) stale(ctx context.Context, obj statusObject) (stale bool, again ctrl.Result, err error) {
	live := j.newObject().(statusObject)
	if err := j.reader.Get(ctx, client.ObjectKeyFromObject(obj), live); err != nil {
		return true, ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if live.GetUID() == obj.GetUID() && live.GetPhase() == obj.GetPhase() && equality.Semantic.DeepEqual(live.GetCommonStatus(), obj.GetCommonStatus()) {
		return false, ctrl.Result{}, nil
	}
	log.FromContext(ctx).Info("The cached copy's status is behind the object's; looking again", "phase", obj.GetPhase(), "currentPhase", live.GetPhase())
	return true, ctrl.Result{RequeueAfter: j.cfg.RetryInterval}, nil
}

// patchDecided is patch for a status a reconcile decided from obj, a copy from the cache: a
// write that changes anything goes only while obj's status is current (see stale), and
// otherwise obj is looked at again after the returned result.
func (j *jobs) patchDecided(ctx context.Context, obj statusObject, mutate func()) (ctrl.Result, error) {
	return j.patchStatus(ctx, obj, mutate, true)
}

// end projects res onto obj's status. An interrupted job writes nothing when the worker is
// stopping (the resource stays in progress for the next worker to resume); otherwise Ready
// says why it stopped and the resource runs again after RetryInterval.
func (j *jobs) end(ctx context.Context, obj statusObject, gen int64, res transfer.Result, begun time.Time) error {
	logger := log.FromContext(ctx)
	j.count(res)
	if res.Outcome == transfer.Interrupted {
		if ctx.Err() != nil || res.Reason == "" {
			logger.Info(j.kind + " interrupted by shutdown; it resumes when the worker restarts")
			return nil
		}
		logger.Info(j.kind+" stopped; it starts again", "reason", res.Reason, "message", res.Message, "retryIn", j.cfg.RetryInterval)
		j.wakeUpAfter(client.ObjectKeyFromObject(obj), j.cfg.RetryInterval)
		return j.patch(ctx, obj, func() { setNotReady(obj, gen, res.Reason, res.Message) })
	}
	err := j.patch(context.WithoutCancel(ctx), obj, func() { setEnded(obj, gen, res) })
	phase := phaseOf(res.Outcome)
	eventType := corev1.EventTypeNormal
	if res.Outcome != transfer.Completed {
		eventType = corev1.EventTypeWarning
	}
	j.recorder.Eventf(obj, nil, eventType, phase, j.kind, res.Message)
	runDuration.WithLabelValues(strings.ToLower(j.kind), phase).Observe(time.Since(begun).Seconds())
	logger.Info(j.kind+" finished", "phase", phase, "message", res.Message)
	return err
}

// count adds what a job moved to the metrics.
func (j *jobs) count(res transfer.Result) {
	if res.Progress == nil {
		return
	}
	kind := strings.ToLower(j.kind)
	bytesCopied.WithLabelValues(kind).Add(float64(res.Progress.BytesUploaded))
	bytesSkipped.WithLabelValues(kind).Add(float64(res.Progress.BytesSkipped))
	imagesProcessed.WithLabelValues(kind, "done").Add(float64(res.Progress.ImagesDone))
	imagesProcessed.WithLabelValues(kind, "failed").Add(float64(res.Progress.ImagesFailed))
}

func (j *jobs) patch(ctx context.Context, obj statusObject, mutate func()) error {
	_, err := j.patchStatus(ctx, obj, mutate, false)
	return err
}

// patchStatus applies mutate to obj's status and patches it, only when something changed (most
// progress ticks change nothing while a copy waits on one large blob); guarded, only while the
// status before mutate is the API server's (see stale).
func (j *jobs) patchStatus(ctx context.Context, obj statusObject, mutate func(), guarded bool) (ctrl.Result, error) {
	before := obj.DeepCopyObject().(statusObject)
	mutate()
	if equality.Semantic.DeepEqual(before, obj) {
		return ctrl.Result{}, nil
	}
	if guarded {
		if stale, again, err := j.stale(ctx, before); stale {
			return again, err
		}
	}
	err := j.client.Status().Patch(ctx, obj, client.MergeFrom(before))
	return ctrl.Result{}, client.IgnoreNotFound(err)
}
