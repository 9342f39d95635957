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
	"k8s.io/apimachinery/pkg/types"
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
	"sigs.k8s.io/controller-runtime/pkg/source"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/internal/location"
)

// legacyFinalizer is the finalizer earlier versions put on ImageStreamsBackups to delete their
// stored images with them. Deleting an ImageStreamsBackup keeps its images now (see
// spec.deleteStoredImages), and a finalizer would hold up the deletion of its namespace while no
// worker runs: the worker removes it wherever it finds it.
const legacyFinalizer = "oadp.openshift.io/imagestreams-backup"

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

	runner    *runner
	collector *collector
	// wake reconciles a resource again when a background job asks for it.
	wake chan event.GenericEvent
}

// +kubebuilder:rbac:groups=oadp.openshift.io,namespace=openshift-adp,resources=imagestreamsbackups,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups=oadp.openshift.io,namespace=openshift-adp,resources=imagestreamsbackups/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=velero.io,namespace=openshift-adp,resources=backups;backupstoragelocations,verbs=get;list
// +kubebuilder:rbac:groups="",namespace=openshift-adp,resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,namespace=openshift-adp,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=config.openshift.io,resources=images,verbs=get
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=openshift-adp,resources=leases,verbs=get;list;watch;create;update;patch;delete

// SetupWithManager registers the reconciler, its background runner and its garbage collector.
func (r *BackupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.runner = newRunner()
	r.wake = make(chan event.GenericEvent, 64)
	r.collector = newCollector(openLocation, r.StaleAfter, r.GCDelay, r.RetryInterval, r.wakeUp, mgr.GetLogger().WithName("gc"))
	for _, run := range []manager.Runnable{r.runner, r.collector} {
		if err := mgr.Add(run); err != nil {
			return err
		}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("imagestreamsbackup").
		Watches(&oadpv1alpha1.ImageStreamsBackup{}, &delayCreates{delay: r.NewBackupDelay}, builder.WithPredicates(inNamespace(r.Namespace))).
		WatchesRawSource(source.Channel(r.wake, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// wakeUp has key reconciled again. A full channel drops the request; those who ask again
// later (a deletion's periodic requeue) make up for it.
func (r *BackupReconciler) wakeUp(key types.NamespacedName) {
	obj := &oadpv1alpha1.ImageStreamsBackup{}
	obj.Namespace, obj.Name = key.Namespace, key.Name
	select {
	case r.wake <- event.GenericEvent{Object: obj}:
	default:
	}
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
// background (see runner) and writes its own progress, and garbage collection runs apart too
// (see collector).
func (r *BackupReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Namespace != r.Namespace {
		return ctrl.Result{}, nil
	}
	isb := &oadpv1alpha1.ImageStreamsBackup{}
	if err := r.Get(ctx, req.NamespacedName, isb); err != nil {
		if apierrors.IsNotFound(err) {
			// The resource is gone: its copy stops, and what it stored stays.
			r.runner.cancel(req.NamespacedName)
			r.collector.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if controllerutil.RemoveFinalizer(isb, legacyFinalizer) {
		if err := r.Update(ctx, isb); err != nil {
			return ctrl.Result{}, err
		}
	}
	switch {
	case !isb.DeletionTimestamp.IsZero():
		r.runner.cancel(req.NamespacedName)
		return ctrl.Result{}, nil
	case isb.Spec.DeleteStoredImages:
		return r.reconcileDelete(ctx, isb)
	case r.runner.running(req.NamespacedName):
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
	case oadpv1alpha1.BackupPhaseCompleted, oadpv1alpha1.BackupPhasePartiallyFailed, oadpv1alpha1.BackupPhaseFailed, oadpv1alpha1.BackupPhaseCanceled:
		// A terminal phase answers the spec it observed; a spec changed since (images
		// appended) copies what is missing.
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
				s.ObservedGeneration = isb.Generation
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
	previous, conflict, err := storedBefore(ctx, store, isb)
	if err != nil || conflict != "" {
		store.Close()
		if err != nil {
			// A store that cannot answer now is asked again; only a backup that certainly
			// exists is someone else's.
			log.FromContext(ctx).Info("Backup cannot start yet", "reason", ReasonStoreUnavailable, "error", err.Error())
			return ctrl.Result{RequeueAfter: r.RetryInterval}, r.patchStatus(ctx, isb, func(s *oadpv1alpha1.ImageStreamsBackupStatus) {
				setCondition(&s.CommonStatus, isb.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonStoreUnavailable, err.Error())
			})
		}
		r.finishBackup(ctx, log.FromContext(ctx), isb, isb.DeepCopy(), func() bool { return false }, oadpv1alpha1.BackupPhaseFailed, ReasonBackupExists, conflict, nil, failures{}, time.Now())
		return ctrl.Result{}, nil
	}
	snapshot := isb.DeepCopy()
	if !r.runner.start(client.ObjectKeyFromObject(isb), func(jctx context.Context, canceledByUser func() bool) {
		defer store.Close()
		ctx := log.IntoContext(jctx, log.FromContext(ctx))
		r.runBackup(ctx, canceledByUser, snapshot, store, opts, host, previous)
	}) {
		store.Close() // a copy runs already, or the worker is stopping
	}
	return ctrl.Result{}, nil
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

// imageSource is where the image of it is read from, or why it is not read at all: only images of
// the internal registry are the cluster's to back up, and only that registry gets the
// worker's credentials.
func imageSource(host string, it *work, opts copier.Options) (name.Digest, error) {
	ref, err := pullReference(host, it.ns, it.is, it.ref.DockerImageReference, opts)
	if err == nil && ref.Context().RegistryStr() != host {
		err = fmt.Errorf("%w: %s is not the internal registry %s", errExternalImage, ref.Context().RegistryStr(), host)
	}
	return ref, err
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

// plan lists the images isb copies, each reference once per imagestream.
func plan(isb *oadpv1alpha1.ImageStreamsBackup) []*work {
	var items []*work
	for i := range isb.Spec.ImageStreams {
		is := &isb.Spec.ImageStreams[i]
		for _, ref := range mergeReferences(is.DockerImageReferences) {
			items = append(items, &work{is: is, ns: is.NamespaceOrDefault(), ref: ref})
		}
	}
	return items
}

func (r *BackupReconciler) runBackup(ctx context.Context, canceledByUser func() bool, isb *oadpv1alpha1.ImageStreamsBackup, store *imagestore.Store, opts copier.Options, host string, previous []imagestore.Entry) {
	live := isb.DeepCopy() // status patches refresh it; isb keeps the generation this run copies
	logger := log.FromContext(ctx).WithValues("imagestreamsbackup", client.ObjectKeyFromObject(isb))
	start := time.Now()
	items := plan(isb)
	total := int64(len(items))

	pending, err := store.Begin(ctx, isb.Name, writerID(isb), r.StaleAfter)
	if err != nil {
		r.retryLater(ctx, logger, live, isb, ReasonStoreUnavailable, fmt.Sprintf("marking the backup in progress: %v", err))
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
	stopProgress := every(ctx, r.ProgressInterval, func() {
		if r.progressDue() {
			progress()
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
			ref, err := imageSource(host, it, opts)
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
		r.finishBackup(ctx, logger, isb, live, canceledByUser, oadpv1alpha1.BackupPhaseFailed, failureReason(*errp),
			fmt.Sprintf("the backup location stopped taking writes, so no index was written: %v. Blobs stored so far are removed by the next garbage collection unless another backup uses them", *errp),
			setFinal, fails, start)
		return
	}
	parts := partNames(isb)
	reason, partial, allFailed := outcome(total, failed.Load())
	if allFailed && len(parts) > 0 {
		// A head's index is the way to its parts: it is written even when none of the head's
		// own images could be stored.
		reason, partial, allFailed = ReasonPartiallyFailed, true, false
	}
	if allFailed {
		_ = pending.Abort(ctx)
		msg := fmt.Sprintf("all %d images failed; see status.failures", total)
		if previous != nil {
			msg += "; the backup stored earlier is unchanged"
		}
		r.finishBackup(ctx, logger, isb, live, canceledByUser, oadpv1alpha1.BackupPhaseFailed, reason, msg, setFinal, fails, start)
		return
	}
	entries, kept := indexEntries(items, previous)
	for _, it := range kept {
		fails.note(it.ns, it.is.Name, it.ref.DockerImageReference, "; the copy stored by an earlier run stays in the backup")
	}
	meta := imagestore.IndexMeta{Writer: writerID(isb), Parts: parts}
	if err := pending.Commit(ctx, entries, meta); err != nil {
		_ = pending.Abort(context.WithoutCancel(ctx))
		if errors.Is(err, imagestore.ErrInvalidIndex) {
			r.finishBackup(ctx, logger, isb, live, canceledByUser, oadpv1alpha1.BackupPhaseFailed, ReasonFailed, fmt.Sprintf("writing the backup's index: %v", err), setFinal, fails, start)
			return
		}
		// A store that refused the index, or a collection that removed what the backup counted
		// on while its marker was stale: a new run uploads only what is missing.
		r.retryLater(ctx, logger, live, isb, ReasonStoreUnavailable, fmt.Sprintf("writing the backup's index: %v; copying again", err))
		return
	}
	phase, msg := oadpv1alpha1.BackupPhaseCompleted, fmt.Sprintf("stored %d images: %d bytes uploaded, %d bytes already stored", total, st.BytesUploaded, st.BytesSkipped)
	if partial {
		phase, msg = oadpv1alpha1.BackupPhasePartiallyFailed, fmt.Sprintf("stored %d of %d images; %d failed, see status.failures", done.Load(), total, failed.Load())
		if len(kept) > 0 {
			msg += fmt.Sprintf("; the backup keeps the earlier copy of %d of them", len(kept))
		}
	}
	r.finishBackup(ctx, logger, isb, live, canceledByUser, phase, reason, msg, setFinal, fails, start)
}

// retryLater ends a run that failed in a way that may pass (a store that did not answer, a
// marker that went stale): the backup keeps its phase, Ready says why it stopped, and it
// starts again after RetryInterval, uploading only what is missing.
func (r *BackupReconciler) retryLater(ctx context.Context, logger logr.Logger, live, isb *oadpv1alpha1.ImageStreamsBackup, reason, msg string) {
	if ctx.Err() != nil {
		return // the worker is stopping; the next one resumes
	}
	logger.Info("Backup stopped; it starts again", "reason", reason, "message", msg, "retryIn", r.RetryInterval)
	if err := r.patchStatus(ctx, live, func(s *oadpv1alpha1.ImageStreamsBackupStatus) {
		setCondition(&s.CommonStatus, isb.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
	}); err != nil {
		logger.Error(err, "Failed to update status")
	}
	key := client.ObjectKeyFromObject(isb)
	time.AfterFunc(r.RetryInterval, func() { r.wakeUp(key) })
}

// indexEntries are the images a commit records: each image copied now and, for an image that
// failed now, the copy an earlier run of the backup stored, if there is one. An image once
// stored stays in the backup rather than leave it (and its blobs with the next collection)
// because a later run could not read it again; kept lists those images.
func indexEntries(items []*work, previous []imagestore.Entry) (entries []imagestore.Entry, kept []*work) {
	earlier := make(map[[3]string]imagestore.Entry, len(previous))
	for _, e := range previous {
		earlier[[3]string{e.Namespace, e.ImageStream, e.Reference}] = e
	}
	for _, it := range items {
		if it.failed == nil {
			entries = append(entries, it.entry)
			continue
		}
		if e, ok := earlier[[3]string{it.ns, it.is.Name, it.ref.DockerImageReference}]; ok {
			e.Tags = it.ref.Tags
			entries = append(entries, e)
			kept = append(kept, it)
		}
	}
	return entries, kept
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

// reconcileDelete carries out spec.deleteStoredImages: it stops a running copy, removes the
// backup's index if this ImageStreamsBackup wrote it, waits for a garbage collection of the
// location that started after that, and then deletes the ImageStreamsBackup. Every step can
// be repeated, so a worker that restarts halfway finishes the job.
func (r *BackupReconciler) reconcileDelete(ctx context.Context, isb *oadpv1alpha1.ImageStreamsBackup) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(isb)
	if r.runner.running(key) {
		r.runner.cancel(key)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	deleting := func(reason, msg string) error {
		return r.patchStatus(ctx, isb, func(s *oadpv1alpha1.ImageStreamsBackupStatus) {
			s.Phase = oadpv1alpha1.BackupPhaseDeleting
			setCondition(&s.CommonStatus, isb.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
		})
	}
	loc, reason, err := r.resolveLocation(ctx, r.APIReader, isb.Spec.BackupLocation)
	if err != nil {
		return ctrl.Result{RequeueAfter: r.RetryInterval}, deleting(reason, "cannot delete the stored backup yet: "+err.Error())
	}
	if err := r.deleteIndex(ctx, isb, loc); err != nil {
		return ctrl.Result{RequeueAfter: r.RetryInterval}, deleting(ReasonStoreUnavailable, "cannot delete the stored backup yet: "+err.Error())
	}
	done, rep, waiting := r.collector.collect(loc, waiter{key, isb.UID})
	if !done {
		msg := "removed the backup's index; collecting the blobs no other backup uses"
		if waiting != "" {
			msg += " (" + waiting + ")"
		}
		// The collector wakes this resource when it is done; the requeue is a safety net.
		return ctrl.Result{RequeueAfter: max(r.RetryInterval, time.Minute)}, deleting(ReasonDeleting, msg)
	}
	r.Recorder.Eventf(isb, nil, corev1.EventTypeNormal, "Deleted", "Delete", "Deleted the stored backup; the garbage collection removed %d blobs (%d bytes) that no other backup used", rep.Deleted, rep.DeletedBytes)
	log.FromContext(ctx).Info("Stored backup deleted", "blobsDeleted", rep.Deleted, "bytesFreed", rep.DeletedBytes)
	err = r.Delete(ctx, isb, client.Preconditions{UID: &isb.UID})
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

// deleteIndex removes isb's stored index, unless another ImageStreamsBackup wrote it: that one
// is kept, with an event.
func (r *BackupReconciler) deleteIndex(ctx context.Context, isb *oadpv1alpha1.ImageStreamsBackup, loc *location.Location) error {
	store, err := openLocation(ctx, loc)
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
		r.Recorder.Eventf(isb, nil, corev1.EventTypeWarning, ReasonBackupExists, "Delete",
			"Kept the stored backup %s: another ImageStreamsBackup wrote it", isb.Name)
		return nil
	}
	if err := store.DeleteBackup(ctx, isb.Name); err != nil {
		return err
	}
	log.FromContext(ctx).Info("Stored index deleted", "backup", isb.Name, "location", loc.Describe())
	return nil
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
