package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/internal/location"
	"github.com/openshift/oadp-imagestreams-backup/internal/transfer"
)

// veleroPollInterval is how often a backup waiting for its Velero backup reads it again: the
// copy should start soon after Velero has collected every item.
const veleroPollInterval = 5 * time.Second

// Config is what both reconcilers share.
type Config struct {
	// Namespace is the only namespace whose resources are reconciled; others are ignored.
	Namespace string
	// VeleroNamespace holds Velero's BackupStorageLocations and their Secrets.
	VeleroNamespace string
	Registry        Registry
	// ProgressInterval is how often a running copy writes its counters to status.
	ProgressInterval time.Duration
	// RetryInterval is how soon a resource is looked at again after a problem that may pass,
	// such as a missing Secret or an unreachable registry.
	RetryInterval time.Duration
	// NewBackupDelay is how long after an ImageStreamsBackup appears the worker first looks at
	// it (see delayCreates).
	NewBackupDelay time.Duration
	// StaleAfter is how long an in-progress or garbage collection marker in a store counts
	// without being refreshed; imagestore.DefaultStaleAfter when zero.
	StaleAfter time.Duration
	// GCDelay is how long a garbage collection waits for more requests before it starts, so
	// that the parts of one deleted Velero backup share one collection.
	GCDelay time.Duration

	// progressWrites bounds the progress writes of every running copy together (see
	// newProgressLimiter); nil leaves each copy to its ProgressInterval.
	progressWrites *rate.Limiter
}

// newProgressLimiter shares progress writes among running copies: at most one a second, or
// two per ProgressInterval when that is more. A large Velero backup runs as many parts at
// once, each an object the API server decodes, converts and stores again on every write, so
// their progress writes together must stay cheap beside the copy. Final writes are not
// limited.
func newProgressLimiter(interval time.Duration) *rate.Limiter {
	if interval <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(max(1, 2/interval.Seconds())), 2)
}

// progressDue says whether a copy's periodic progress write may go now.
func (c *Config) progressDue() bool { return c.progressWrites == nil || c.progressWrites.Allow() }

// BackupReconciler reconciles ImageStreamsBackups.
type BackupReconciler struct {
	client.Client
	// APIReader reads Velero objects, Secrets and cluster config uncached: the worker does
	// not keep every Secret of the namespace in memory.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Config

	jobs      *jobs
	collector *transfer.Collector
}

// +kubebuilder:rbac:groups=oadp.openshift.io,namespace=openshift-adp,resources=imagestreamsbackups,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups=oadp.openshift.io,namespace=openshift-adp,resources=imagestreamsbackups/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=velero.io,namespace=openshift-adp,resources=backups;backupstoragelocations,verbs=get;list
// +kubebuilder:rbac:groups="",namespace=openshift-adp,resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,namespace=openshift-adp,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=config.openshift.io,resources=images,verbs=get
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=openshift-adp,resources=leases,verbs=get;list;watch;create;update;patch;delete

// SetupWithManager registers the reconciler, its job runner and its garbage collector.
func (r *BackupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.jobs = newJobs(r.Client, r.APIReader, r.Recorder, &r.Config, "Backup", func() client.Object { return &oadpv1alpha1.ImageStreamsBackup{} })
	r.collector = transfer.NewCollector(transfer.CollectorConfig{
		Open: transfer.OpenStore, StaleAfter: r.StaleAfter, Delay: r.GCDelay, Retry: r.RetryInterval,
		Notify: r.jobs.wakeUp, Observe: observeGC, Log: mgr.GetLogger().WithName("gc"),
	})
	for _, run := range []manager.Runnable{r.jobs.runner, r.collector} {
		if err := mgr.Add(run); err != nil {
			return err
		}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("imagestreamsbackup").
		Watches(&oadpv1alpha1.ImageStreamsBackup{}, &delayCreates{delay: r.NewBackupDelay}, builder.WithPredicates(inNamespace(r.Namespace))).
		WatchesRawSource(r.jobs.source()).
		Complete(r)
}

// delayCreates enqueues a new object after delay and every other change at once. The plugin
// creates the parts of a Velero backup all at once, just before Velero finishes collecting
// items; a status write to each of them right then ("waiting for the Velero backup") would
// compete with Velero's last steps for the API server, and moments later the Velero backup has
// moved on and the copy starts without that write.
type delayCreates struct {
	handler.EnqueueRequestForObject
	delay time.Duration
}

func (h *delayCreates) Create(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if h.delay <= 0 || e.Object == nil {
		h.EnqueueRequestForObject.Create(ctx, e, q)
		return
	}
	q.AddAfter(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)}, h.delay)
}

func inNamespace(ns string) predicate.Predicate {
	return predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetNamespace() == ns })
}

// Reconcile moves an ImageStreamsBackup through its phases; the copy runs as a transfer job and
// writes its own progress, and garbage collection runs apart too (see transfer.Collector).
func (r *BackupReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Namespace != r.Namespace {
		return ctrl.Result{}, nil
	}
	isb := &oadpv1alpha1.ImageStreamsBackup{}
	if err := r.Get(ctx, req.NamespacedName, isb); err != nil {
		if apierrors.IsNotFound(err) {
			// The resource is gone: its copy stops, and what it stored stays.
			r.jobs.runner.Cancel(req.NamespacedName)
			r.collector.Forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if controllerutil.RemoveFinalizer(isb, oadpv1alpha1.LegacyFinalizer) {
		if err := r.Update(ctx, isb); err != nil {
			return ctrl.Result{}, err
		}
	}
	switch {
	case !isb.DeletionTimestamp.IsZero():
		r.jobs.runner.Cancel(req.NamespacedName)
		return ctrl.Result{}, nil
	case isb.Spec.DeleteStoredImages:
		return r.reconcileDelete(ctx, isb)
	}
	if res, running := r.jobs.whileRunning(isb); running {
		return res, nil
	}
	return r.reconcileNormal(ctx, isb)
}

func (r *BackupReconciler) reconcileNormal(ctx context.Context, isb *oadpv1alpha1.ImageStreamsBackup) (ctrl.Result, error) {
	switch {
	case answered(isb):
		return ctrl.Result{}, nil
	case isb.Spec.Cancel:
		return r.jobs.cancelBeforeStart(ctx, isb)
	}
	if g := r.gate(ctx, isb); !g.start {
		return r.wait(ctx, isb, g)
	}
	p, reason, err := r.preflight(ctx, r.APIReader, isb.Spec.BackupLocation)
	if err != nil {
		return r.jobs.notYet(ctx, isb, reason, err)
	}
	previous, conflict, err := storedBefore(ctx, p.store, isb)
	if err != nil || conflict != "" {
		p.store.Close()
		if err != nil {
			// A store that cannot answer now is asked again; only a backup that certainly
			// exists is someone else's.
			return r.jobs.notYet(ctx, isb, oadpv1alpha1.ReasonStoreUnavailable, err)
		}
		return r.jobs.fail(ctx, isb, transfer.Result{Outcome: transfer.Failed, Reason: oadpv1alpha1.ReasonBackupExists, Message: conflict})
	}
	job, err := transfer.NewBackup(p.store, transfer.BackupSpec{
		Name: isb.Name, Writer: writerID(isb), Parts: partNames(isb), ImageStreams: isb.Spec.ImageStreams, Previous: previous,
		Host: p.host, Options: p.opts, StaleAfter: r.StaleAfter,
	})
	if err != nil {
		return r.jobs.fail(ctx, isb, transfer.Result{Outcome: transfer.Failed, Reason: oadpv1alpha1.ReasonFailed, Message: err.Error()})
	}
	return r.jobs.start(ctx, isb, job)
}

// gate reads the Velero backup isb waits for, if any, and applies the start rules.
func (r *BackupReconciler) gate(ctx context.Context, isb *oadpv1alpha1.ImageStreamsBackup) gateDecision {
	var vb *velerov1.Backup
	var getErr error
	if ref := isb.Spec.VeleroBackupReference; !isb.Spec.StartBackup && ref != nil && ref.StartOnCompletion {
		vb = &velerov1.Backup{}
		getErr = r.APIReader.Get(ctx, client.ObjectKey{Namespace: veleroNamespace(isb), Name: ref.Name}, vb)
	}
	return gate(isb, vb, getErr)
}

// wait records a gate that does not start isb: it fails it, or says what it waits for and
// looks again.
func (r *BackupReconciler) wait(ctx context.Context, isb *oadpv1alpha1.ImageStreamsBackup, g gateDecision) (ctrl.Result, error) {
	if g.fail {
		res, err := r.jobs.patchDecided(ctx, isb, func() {
			isb.Status.Phase = oadpv1alpha1.BackupPhaseFailed
			isb.Status.ObservedGeneration = isb.Generation
			isb.Status.CompletionTimestamp = ptrNow()
			setNotReady(isb, isb.Generation, g.reason, g.message)
		})
		if err == nil && res.RequeueAfter == 0 {
			r.Recorder.Eventf(isb, nil, corev1.EventTypeWarning, g.reason, "Gate", g.message)
		}
		return res, err
	}
	res, err := r.jobs.patchDecided(ctx, isb, func() {
		isb.Status.Phase = oadpv1alpha1.BackupPhaseNew
		if g.reason == oadpv1alpha1.ReasonWaitingForVeleroBackup {
			isb.Status.Phase = oadpv1alpha1.BackupPhaseWaitingForVeleroBackup
		}
		setNotReady(isb, isb.Generation, g.reason, g.message)
	})
	if g.reason == oadpv1alpha1.ReasonNotStarted {
		return res, err
	}
	return lookAgainAfter(res, err, min(r.RetryInterval, veleroPollInterval))
}

// observeGC counts the collections and what they removed.
func observeGC(result string, rep imagestore.GCReport) {
	gcRuns.WithLabelValues(result).Inc()
	if result == "completed" {
		gcBlobsDeleted.Add(float64(rep.Deleted))
	}
}

// storedBefore returns what an earlier run of isb stored: the entries of its index, which a
// later run keeps for images that then fail. A stored backup of isb's name that isb did not
// write is another one's, and conflict says so: isb must not overwrite it. err is a store
// that could not tell, to ask again later.
func storedBefore(ctx context.Context, store *imagestore.Store, isb *oadpv1alpha1.ImageStreamsBackup) (previous []imagestore.Entry, conflict string, err error) {
	exists, err := store.HasIndex(ctx, isb.Name)
	if err != nil {
		return nil, "", fmt.Errorf("checking the location for backup %s: %w", isb.Name, err)
	}
	if !exists {
		return nil, "", nil
	}
	entries, meta, err := store.ReadIndexWithMeta(ctx, isb.Name)
	if err != nil {
		return nil, "", fmt.Errorf("reading the stored backup %s: %w", isb.Name, err)
	}
	if !wroteIndex(isb, meta) {
		return nil, fmt.Sprintf("backup %s already exists in the location; an ImageStreamsBackup that did not write it will not overwrite it (use another name)", isb.Name), nil
	}
	return entries, "", nil
}

// writerID identifies the ImageStreamsBackup whose stored index records it: its uid, or, for
// one made only to delete a stored backup, the uid of the original.
func writerID(isb *oadpv1alpha1.ImageStreamsBackup) string {
	if uid := isb.Annotations[oadpv1alpha1.AnnotationOriginalUID]; uid != "" {
		return uid
	}
	return string(isb.UID)
}

// wroteIndex reports whether isb wrote the stored index that records meta. An index from
// before writers were recorded counts as isb's when isb has copied before, or stands in for
// the original.
func wroteIndex(isb *oadpv1alpha1.ImageStreamsBackup, meta imagestore.IndexMeta) bool {
	if meta.Writer != "" {
		return meta.Writer == writerID(isb)
	}
	return isb.Status.StartTimestamp != nil || isb.Annotations[oadpv1alpha1.AnnotationOriginalUID] != ""
}

// partNames are the ImageStreamsBackups that hold the rest of isb's backup: spec.parts, or on
// a head that the plugin did not make, the <name>.<k> of earlier versions that
// AnnotationParts counts.
func partNames(isb *oadpv1alpha1.ImageStreamsBackup) []string {
	if len(isb.Spec.Parts) > 0 || isb.Labels[velerov1.BackupUIDLabel] != "" {
		return isb.Spec.Parts
	}
	n, _ := strconv.Atoi(isb.Annotations[oadpv1alpha1.AnnotationParts])
	var out []string
	for k := 1; k < n; k++ {
		out = append(out, isb.Name+"."+strconv.Itoa(k))
	}
	return out
}

// reconcileDelete carries out spec.deleteStoredImages: it stops a running copy, removes the
// backup's index if this ImageStreamsBackup wrote it, waits for a garbage collection of the
// location that started after that, and then deletes the ImageStreamsBackup. Every step can
// be repeated, so a worker that restarts halfway finishes the job.
func (r *BackupReconciler) reconcileDelete(ctx context.Context, isb *oadpv1alpha1.ImageStreamsBackup) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(isb)
	if r.jobs.runner.Running(key) {
		r.jobs.runner.Cancel(key)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	deleting := func(reason, msg string) error {
		return r.jobs.patch(ctx, isb, func() {
			isb.Status.Phase = oadpv1alpha1.BackupPhaseDeleting
			setNotReady(isb, isb.Generation, reason, msg)
		})
	}
	loc, reason, err := r.resolveLocation(ctx, r.APIReader, isb.Spec.BackupLocation)
	if err != nil {
		return ctrl.Result{RequeueAfter: r.RetryInterval}, deleting(reason, "cannot delete the stored backup yet: "+err.Error())
	}
	if err := r.deleteIndex(ctx, isb, loc); err != nil {
		return ctrl.Result{RequeueAfter: r.RetryInterval}, deleting(oadpv1alpha1.ReasonStoreUnavailable, "cannot delete the stored backup yet: "+err.Error())
	}
	done, rep, waiting := r.collector.Collect(loc, transfer.Waiter{NamespacedName: key, UID: isb.UID})
	if !done {
		msg := "removed the backup's index; collecting the blobs no other backup uses"
		if waiting != "" {
			msg += " (" + waiting + ")"
		}
		// The collector wakes this resource when it is done; the requeue is a safety net.
		return ctrl.Result{RequeueAfter: max(r.RetryInterval, time.Minute)}, deleting(oadpv1alpha1.ReasonDeleting, msg)
	}
	r.Recorder.Eventf(isb, nil, corev1.EventTypeNormal, "Deleted", "Delete", "Deleted the stored backup; the garbage collection removed %d blobs (%d bytes) that no other backup used", rep.Deleted, rep.DeletedBytes)
	log.FromContext(ctx).Info("Stored backup deleted", "blobsDeleted", rep.Deleted, "bytesFreed", rep.DeletedBytes)
	err = r.Delete(ctx, isb, client.Preconditions{UID: &isb.UID})
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

// deleteIndex removes isb's stored index, unless another ImageStreamsBackup wrote it: that one
// is kept, with an event.
func (r *BackupReconciler) deleteIndex(ctx context.Context, isb *oadpv1alpha1.ImageStreamsBackup, loc *location.Location) error {
	store, err := transfer.OpenStore(ctx, loc)
	if err != nil {
		return err
	}
	defer store.Close()
	_, meta, err := store.ReadIndexWithMeta(ctx, isb.Name)
	switch {
	case errors.Is(err, imagestore.ErrNotFound):
		return nil
	case err != nil:
		return err
	case !wroteIndex(isb, meta):
		r.Recorder.Eventf(isb, nil, corev1.EventTypeWarning, oadpv1alpha1.ReasonBackupExists, "Delete",
			"Kept the stored backup %s: another ImageStreamsBackup wrote it", isb.Name)
		return nil
	}
	if err := store.DeleteBackup(ctx, isb.Name); err != nil {
		return err
	}
	log.FromContext(ctx).Info("Stored index deleted", "backup", isb.Name, "location", loc.Describe())
	return nil
}
