package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// Finalizer lets the worker remove a deleted backup's content from object storage.
const Finalizer = "oadp.openshift.io/imagestreams-backup"

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

	// progressWrites bounds the progress writes of every running copy together (see
	// newProgressLimiter); nil leaves each copy to its ProgressInterval.
	progressWrites *rate.Limiter
}

// newProgressLimiter shares progress writes among running copies: at most one a second, or
// two per ProgressInterval when that is more. A Velero backup of thousands of imagestreams
// runs as twenty or more parts at once, each an object of a few hundred kilobytes that the API
// server decodes, converts and stores again on every write; written every ProgressInterval
// each, they kept the API server busier than the copy itself. Final writes are not limited.
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

	runner *runner
}

// +kubebuilder:rbac:groups=oadp.openshift.io,namespace=openshift-adp,resources=imagestreamsbackups,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=oadp.openshift.io,namespace=openshift-adp,resources=imagestreamsbackups/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=oadp.openshift.io,namespace=openshift-adp,resources=imagestreamsbackups/finalizers,verbs=update
// +kubebuilder:rbac:groups=velero.io,namespace=openshift-adp,resources=backups;backupstoragelocations,verbs=get;list
// +kubebuilder:rbac:groups="",namespace=openshift-adp,resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,namespace=openshift-adp,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=config.openshift.io,resources=images,verbs=get
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=openshift-adp,resources=leases,verbs=get;list;watch;create;update;patch;delete

// SetupWithManager registers the reconciler and its background runner.
func (r *BackupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.runner = newRunner()
	if err := mgr.Add(r.runner); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("imagestreamsbackup").
		Watches(&oadpv1alpha1.ImageStreamsBackup{}, &delayCreates{delay: r.NewBackupDelay}, builder.WithPredicates(inNamespace(r.Namespace))).
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

// Reconcile moves an ImageStreamsBackup through its phases; the copy itself runs in the
// background (see runner) and writes its own progress.
func (r *BackupReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Namespace != r.Namespace {
		return ctrl.Result{}, nil
	}
	isb := &oadpv1alpha1.ImageStreamsBackup{}
	if err := r.Get(ctx, req.NamespacedName, isb); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !isb.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, isb)
	}
	if r.runner.running(req.NamespacedName) {
		if isb.Spec.Cancel {
			r.runner.cancel(req.NamespacedName)
		}
		// The copy's own final status write may come before it leaves the runner; looking
		// again later catches a spec that changed meanwhile.
		return ctrl.Result{RequeueAfter: r.RetryInterval}, nil
	}
	return r.reconcileNormal(ctx, isb)
}

func (r *BackupReconciler) reconcileNormal(ctx context.Context, isb *oadpv1alpha1.ImageStreamsBackup) (ctrl.Result, error) {
	switch isb.Status.Phase {
	case oadpv1alpha1.BackupPhaseFailed, oadpv1alpha1.BackupPhaseCanceled:
		return ctrl.Result{}, nil
	case oadpv1alpha1.BackupPhaseCompleted, oadpv1alpha1.BackupPhasePartiallyFailed:
		// A spec changed after completion (images appended) copies what is missing.
		if isb.Status.ObservedGeneration == isb.Generation || isb.Spec.Cancel {
			return ctrl.Result{}, nil
		}
	}
	if isb.Spec.Cancel {
		return ctrl.Result{}, r.patchStatus(ctx, isb, func(s *oadpv1alpha1.ImageStreamsBackupStatus) {
			s.Phase = oadpv1alpha1.BackupPhaseCanceled
			s.CompletionTimestamp = ptrNow()
			setCondition(&s.CommonStatus, isb.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonCanceled, "canceled before it started")
		})
	}

	var vb *velerov1.Backup
	var getErr error
	if ref := isb.Spec.VeleroBackupReference; !isb.Spec.StartBackup && ref != nil && ref.StartOnCompletion {
		vb = &velerov1.Backup{}
		getErr = r.APIReader.Get(ctx, client.ObjectKey{Namespace: veleroNamespace(isb), Name: ref.Name}, vb)
	}
	if g := gate(isb, vb, getErr); !g.start {
		phase := oadpv1alpha1.BackupPhaseNew
		if g.reason == ReasonWaitingForVeleroBackup {
			phase = oadpv1alpha1.BackupPhaseWaitingForVeleroBackup
		}
		if g.fail {
			phase = oadpv1alpha1.BackupPhaseFailed
			r.Recorder.Eventf(isb, nil, corev1.EventTypeWarning, g.reason, "Gate", g.message)
		}
		err := r.patchStatus(ctx, isb, func(s *oadpv1alpha1.ImageStreamsBackupStatus) {
			s.Phase = phase
			if g.fail {
				s.CompletionTimestamp = ptrNow()
			}
			setCondition(&s.CommonStatus, isb.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, g.reason, g.message)
		})
		if g.fail || g.reason == ReasonNotStarted {
			return ctrl.Result{}, err
		}
		return ctrl.Result{RequeueAfter: min(r.RetryInterval, veleroPollInterval)}, err
	}

	store, opts, host, reason, err := r.preflight(ctx, r.APIReader, isb.Spec.BackupLocation)
	if err != nil {
		log.FromContext(ctx).Info("Backup cannot start yet", "reason", reason, "error", err.Error())
		return ctrl.Result{RequeueAfter: r.RetryInterval}, r.patchStatus(ctx, isb, func(s *oadpv1alpha1.ImageStreamsBackupStatus) {
			if s.Phase == "" || s.Phase == oadpv1alpha1.BackupPhaseWaitingForVeleroBackup {
				s.Phase = oadpv1alpha1.BackupPhaseNew
			}
			setCondition(&s.CommonStatus, isb.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, reason, err.Error())
		})
	}
	// The finalizer goes on as the copy starts: nothing is stored before, and the plugin writes
	// every part of a Velero backup at once just before Velero moves on, when one more write of
	// each part would slow Velero down.
	if controllerutil.AddFinalizer(isb, Finalizer) {
		if err := r.Update(ctx, isb); err != nil {
			return ctrl.Result{}, err
		}
	}
	snapshot := isb.DeepCopy()
	r.runner.start(client.ObjectKeyFromObject(isb), func(jctx context.Context, canceledByUser func() bool) {
		defer store.Close()
		ctx := log.IntoContext(jctx, log.FromContext(ctx))
		r.runBackup(ctx, canceledByUser, snapshot, store, opts, host)
	})
	return ctrl.Result{}, nil
}

// pullReference is where an image is read from: an internal-registry image through its
// imagestream's own repository, which serves every image of the imagestream even when the
// recorded reference names another namespace (after promotion, the source tag may be gone);
// any other image from its recorded reference.
func pullReference(host, namespace string, is *oadpv1alpha1.ImageStream, ref string, opts copier.Options) (name.Digest, error) {
	d, err := name.NewDigest(ref, nameOpts(opts)...)
	if err != nil {
		return d, fmt.Errorf("invalid reference %q: %w", ref, err)
	}
	if d.Context().RegistryStr() == host && namespace != "" {
		return name.NewDigest(fmt.Sprintf("%s/%s/%s@%s", host, namespace, is.Name, d.DigestStr()), nameOpts(opts)...)
	}
	return d, nil
}

func nameOpts(opts copier.Options) []name.Option {
	if opts.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

type work struct {
	is     *oadpv1alpha1.ImageStream
	ns     string
	ref    oadpv1alpha1.DockerImageReference
	entry  imagestore.Entry
	failed error
}

func (r *BackupReconciler) runBackup(ctx context.Context, canceledByUser func() bool, isb *oadpv1alpha1.ImageStreamsBackup, store *imagestore.Store, opts copier.Options, host string) {
	live := isb.DeepCopy() // status patches refresh it; isb keeps the generation this run copies
	logger := log.FromContext(ctx).WithValues("imagestreamsbackup", client.ObjectKeyFromObject(isb))
	start := time.Now()
	var items []*work
	for i := range isb.Spec.ImageStreams {
		is := &isb.Spec.ImageStreams[i]
		for _, ref := range mergeReferences(is.DockerImageReferences) {
			items = append(items, &work{is: is, ns: is.NamespaceOrDefault(), ref: ref})
		}
	}
	total := int64(len(items))

	// A backup of this name that this resource never started is someone else's: a restored or
	// recreated ImageStreamsBackup must not overwrite it.
	if isb.Status.StartTimestamp == nil {
		if exists, err := store.HasIndex(ctx, isb.Name); err != nil || exists {
			msg := fmt.Sprintf("backup %s already exists in the location; an ImageStreamsBackup that did not write it will not overwrite it (use another name)", isb.Name)
			if err != nil {
				msg = fmt.Sprintf("checking the location for backup %s: %v", isb.Name, err)
			}
			r.finishBackup(ctx, logger, isb, live, canceledByUser, oadpv1alpha1.BackupPhaseFailed, ReasonBackupExists, msg, nil, failures{}, start)
			return
		}
	}
	pending, err := store.Begin(ctx, isb.Name, 0)
	if err != nil {
		r.finishBackup(ctx, logger, isb, live, canceledByUser, oadpv1alpha1.BackupPhaseFailed, ReasonStoreUnavailable, fmt.Sprintf("marking the backup in progress: %v", err), nil, failures{}, start)
		return
	}
	if err := r.patchStatus(ctx, live, func(s *oadpv1alpha1.ImageStreamsBackupStatus) {
		s.Phase = oadpv1alpha1.BackupPhaseInProgress
		if s.StartTimestamp == nil {
			s.StartTimestamp = ptrNow()
		}
		s.CompletionTimestamp = nil
		s.Progress = oadpv1alpha1.Progress{ImagesTotal: total}
		s.Failures = nil
		msg := fmt.Sprintf("copying %d images", total)
		setCondition(&s.CommonStatus, isb.Generation, oadpv1alpha1.ConditionProgressing, metav1.ConditionTrue, ReasonCopying, msg)
		setCondition(&s.CommonStatus, isb.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonCopying, msg)
	}); err != nil {
		logger.Error(err, "Failed to update status")
	}
	r.Recorder.Eventf(isb, nil, corev1.EventTypeNormal, "Started", "Backup", "Started copying %d images", total)
	logger.Info("Backup started", "images", total)

	var done, failed atomic.Int64
	var mu sync.Mutex
	var fails failures
	c, err := copier.New(store, opts)
	if err != nil {
		_ = pending.Abort(context.WithoutCancel(ctx))
		r.finishBackup(ctx, logger, isb, live, canceledByUser, oadpv1alpha1.BackupPhaseFailed, ReasonFailed, err.Error(), nil, fails, start)
		return
	}
	progress := func() {
		st := c.Stats()
		if err := r.patchStatus(ctx, live, func(s *oadpv1alpha1.ImageStreamsBackupStatus) {
			s.Progress.ImagesDone, s.Progress.ImagesFailed = done.Load(), failed.Load()
			setBlobProgress(&s.Progress, st.BlobsTotal, st.BlobsUploaded, st.BlobsSkipped, st.BytesTotal, st.BytesUploaded, st.BytesSkipped)
		}); err != nil && ctx.Err() == nil {
			logger.Error(err, "Failed to update progress")
		}
	}
	lastRefresh := time.Now()
	stopProgress := every(ctx, r.ProgressInterval, func() {
		if r.progressDue() {
			progress()
		}
		// The in-progress marker keeps GC away; it is stale after imagestore.DefaultStaleAfter.
		if time.Since(lastRefresh) > imagestore.DefaultStaleAfter/6 {
			if err := pending.Refresh(ctx); err != nil && ctx.Err() == nil {
				logger.Error(err, "Failed to refresh the in-progress marker")
			}
			lastRefresh = time.Now()
		}
	})

	// A location that refuses writes (full, over quota, read-only) fails every image after it:
	// the first such error stops the copy.
	copyCtx, stopCopies := context.WithCancel(ctx)
	defer stopCopies()
	var refused atomic.Pointer[error]
	sem := make(chan struct{}, max(1, opts.Jobs, copier.DefaultJobs))
	var wg sync.WaitGroup
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-copyCtx.Done():
		}
		if copyCtx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			ref, err := pullReference(host, it.ns, it.is, it.ref.DockerImageReference, opts)
			if err == nil {
				it.entry.Descriptor, err = c.Copy(copyCtx, ref)
			}
			if err != nil {
				if errors.Is(err, bucket.ErrNoSpace) || errors.Is(err, bucket.ErrDenied) {
					refused.CompareAndSwap(nil, &err)
					stopCopies()
				}
				if copyCtx.Err() != nil {
					return
				}
				it.failed = err
				failed.Add(1)
				mu.Lock()
				fails.add(it.ns, it.is.Name, it.ref.DockerImageReference, err)
				mu.Unlock()
				logger.Info("Image failed", "reference", it.ref.DockerImageReference, "reason", failureReason(err), "error", err.Error())
				return
			}
			it.entry.Namespace, it.entry.ImageStream, it.entry.Tags, it.entry.Reference = it.ns, it.is.Name, it.ref.Tags, it.ref.DockerImageReference
			done.Add(1)
		})
	}
	wg.Wait()
	stopProgress()
	st := c.Stats()
	bytesCopied.WithLabelValues("backup").Add(float64(st.BytesUploaded))
	bytesSkipped.WithLabelValues("backup").Add(float64(st.BytesSkipped))
	imagesProcessed.WithLabelValues("backup", "done").Add(float64(done.Load()))
	imagesProcessed.WithLabelValues("backup", "failed").Add(float64(failed.Load()))
	setFinal := func(s *oadpv1alpha1.ImageStreamsBackupStatus) {
		s.Progress.ImagesDone, s.Progress.ImagesFailed = done.Load(), failed.Load()
		setBlobProgress(&s.Progress, st.BlobsTotal, st.BlobsUploaded, st.BlobsSkipped, st.BytesTotal, st.BytesUploaded, st.BytesSkipped)
	}

	if ctx.Err() != nil {
		if canceledByUser() {
			_ = pending.Abort(context.WithoutCancel(ctx))
		}
		r.finishBackup(ctx, logger, isb, live, canceledByUser, oadpv1alpha1.BackupPhaseCanceled, ReasonCanceled, "canceled by spec.cancel; no index was written", setFinal, fails, start)
		return
	}
	if errp := refused.Load(); errp != nil {
		_ = pending.Abort(ctx)
		reason := ReasonStoreDenied
		if errors.Is(*errp, bucket.ErrNoSpace) {
			reason = ReasonStoreFull
		}
		r.finishBackup(ctx, logger, isb, live, canceledByUser, oadpv1alpha1.BackupPhaseFailed, reason,
			fmt.Sprintf("the backup location stopped taking writes, so no index was written: %v. Blobs stored so far are removed by the next garbage collection unless another backup uses them", *errp),
			setFinal, fails, start)
		return
	}
	reason, partial, allFailed := outcome(total, failed.Load())
	if allFailed {
		_ = pending.Abort(ctx)
		r.finishBackup(ctx, logger, isb, live, canceledByUser, oadpv1alpha1.BackupPhaseFailed, reason, fmt.Sprintf("all %d images failed; see status.failures", total), setFinal, fails, start)
		return
	}
	var entries []imagestore.Entry
	for _, it := range items {
		if it.failed == nil {
			entries = append(entries, it.entry)
		}
	}
	parts, _ := strconv.Atoi(isb.Annotations[oadpv1alpha1.AnnotationParts])
	if err := pending.Commit(ctx, entries, parts); err != nil {
		r.finishBackup(ctx, logger, isb, live, canceledByUser, oadpv1alpha1.BackupPhaseFailed, ReasonStoreUnavailable, fmt.Sprintf("writing the backup's index: %v", err), setFinal, fails, start)
		return
	}
	phase, msg := oadpv1alpha1.BackupPhaseCompleted, fmt.Sprintf("stored %d images: %d bytes uploaded, %d bytes already stored", total, st.BytesUploaded, st.BytesSkipped)
	if partial {
		phase, msg = oadpv1alpha1.BackupPhasePartiallyFailed, fmt.Sprintf("stored %d of %d images; %d failed, see status.failures", done.Load(), total, failed.Load())
	}
	r.finishBackup(ctx, logger, isb, live, canceledByUser, phase, reason, msg, setFinal, fails, start)
}

// finishBackup writes a terminal phase, unless the worker is shutting down: then the backup
// stays InProgress for the next worker to resume.
func (r *BackupReconciler) finishBackup(ctx context.Context, logger logr.Logger, isb, live *oadpv1alpha1.ImageStreamsBackup, canceledByUser func() bool, phase oadpv1alpha1.BackupPhase, reason, msg string,
	mutate func(*oadpv1alpha1.ImageStreamsBackupStatus), fails failures, start time.Time) {
	if ctx.Err() != nil && !canceledByUser() {
		logger.Info("Backup interrupted by shutdown; it resumes when the worker restarts")
		return
	}
	ctx = context.WithoutCancel(ctx)
	completed := phase == oadpv1alpha1.BackupPhaseCompleted
	if err := r.patchStatus(ctx, live, func(s *oadpv1alpha1.ImageStreamsBackupStatus) {
		if mutate != nil {
			mutate(s)
		}
		s.Phase = phase
		setEnded(&s.CommonStatus, isb.Generation, completed, reason, msg, fails)
	}); err != nil {
		logger.Error(err, "Failed to write final status")
	}
	recordEnd(r.Recorder, logger, live, "Backup", string(phase), completed, msg, start)
}

func (r *BackupReconciler) reconcileDelete(ctx context.Context, isb *oadpv1alpha1.ImageStreamsBackup) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(isb)
	if r.runner.running(key) {
		r.runner.cancel(key)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	if !controllerutil.ContainsFinalizer(isb, Finalizer) {
		return ctrl.Result{}, nil
	}
	logger := log.FromContext(ctx)
	store, reason, err := r.openStore(ctx, r.APIReader, isb.Spec.BackupLocation)
	if err != nil {
		// The location is gone: nothing can be removed, and keeping the finalizer would only
		// block the deletion. What is stored stays for GC from another backup's deletion.
		r.Recorder.Eventf(isb, nil, corev1.EventTypeWarning, reason, "Delete", "Could not remove the stored backup: %v", err)
	} else {
		defer store.Close()
		if err := store.DeleteBackup(ctx, isb.Name); err != nil {
			return ctrl.Result{}, err
		}
		rep, err := store.GC(ctx, 0)
		switch {
		case err != nil:
			r.Recorder.Eventf(isb, nil, corev1.EventTypeWarning, "GCFailed", "Delete", "Removed the backup's index; collecting unused blobs failed: %v", err)
		case rep.Deferred:
			r.Recorder.Eventf(isb, nil, corev1.EventTypeNormal, "Deleted", "Delete", "Removed the backup's index; unused blobs are collected after the running backups %v", rep.Running)
		default:
			r.Recorder.Eventf(isb, nil, corev1.EventTypeNormal, "Deleted", "Delete", "Removed the backup's index and %d unused blobs (%d bytes)", rep.Deleted, rep.DeletedBytes)
			logger.Info("Backup deleted", "blobsDeleted", rep.Deleted, "bytesFreed", rep.DeletedBytes)
		}
	}
	controllerutil.RemoveFinalizer(isb, Finalizer)
	return ctrl.Result{}, r.Update(ctx, isb)
}

func (r *BackupReconciler) patchStatus(ctx context.Context, isb *oadpv1alpha1.ImageStreamsBackup, mutate func(*oadpv1alpha1.ImageStreamsBackupStatus)) error {
	return patchStatus(ctx, r.Client, isb, func() { mutate(&isb.Status) })
}

// patchStatus applies mutate to obj's status and patches it, only when something changed
// (most progress ticks change nothing once a copy waits on one large blob).
func patchStatus[O client.Object](ctx context.Context, c client.Client, obj O, mutate func()) error {
	before := obj.DeepCopyObject().(O)
	mutate()
	if equality.Semantic.DeepEqual(before, obj) {
		return nil
	}
	err := c.Status().Patch(ctx, obj, client.MergeFrom(before))
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func ptrNow() *metav1.Time { t := metav1.Now(); return &t }

// mergeReferences lists each reference once, with the tags of all its entries in order.
func mergeReferences(refs []oadpv1alpha1.DockerImageReference) []oadpv1alpha1.DockerImageReference {
	out := make([]oadpv1alpha1.DockerImageReference, 0, len(refs))
	at := make(map[string]int, len(refs))
	for _, r := range refs {
		i, ok := at[r.DockerImageReference]
		if !ok {
			at[r.DockerImageReference] = len(out)
			out = append(out, oadpv1alpha1.DockerImageReference{DockerImageReference: r.DockerImageReference, Tags: slices.Clone(r.Tags)})
			continue
		}
		for _, t := range r.Tags {
			if !slices.Contains(out[i].Tags, t) {
				out[i].Tags = append(out[i].Tags, t)
			}
		}
	}
	return out
}

// every calls f every interval until ctx ends or the returned stop is called.
func every(ctx context.Context, interval time.Duration, f func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f()
			}
		}
	}()
	return func() { cancel(); <-done }
}
