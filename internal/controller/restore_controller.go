package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// RestoreReconciler reconciles ImageStreamsRestores.
type RestoreReconciler struct {
	client.Client
	APIReader client.Reader
	Recorder  events.EventRecorder
	Config

	runner *runner
}

// +kubebuilder:rbac:groups=oadp.openshift.io,namespace=openshift-adp,resources=imagestreamsrestores,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=oadp.openshift.io,namespace=openshift-adp,resources=imagestreamsrestores/status,verbs=get;update;patch

// SetupWithManager registers the reconciler and its background runner.
func (r *RestoreReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.runner = newRunner()
	if err := mgr.Add(r.runner); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&oadpv1alpha1.ImageStreamsRestore{}, builder.WithPredicates(inNamespace(r.Namespace))).
		Complete(r)
}

// Reconcile starts a restore at once; the pushes run in the background.
func (r *RestoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Namespace != r.Namespace {
		return ctrl.Result{}, nil
	}
	isr := &oadpv1alpha1.ImageStreamsRestore{}
	if err := r.Get(ctx, req.NamespacedName, isr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.runner.running(req.NamespacedName) {
		if isr.Spec.Cancel || !isr.DeletionTimestamp.IsZero() {
			r.runner.cancel(req.NamespacedName)
		}
		// The copy's own final status write may come before it leaves the runner; looking
		// again later catches a spec that changed meanwhile.
		return ctrl.Result{RequeueAfter: r.RetryInterval}, nil
	}
	if !isr.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	switch isr.Status.Phase {
	case oadpv1alpha1.RestorePhaseCompleted, oadpv1alpha1.RestorePhasePartiallyFailed, oadpv1alpha1.RestorePhaseFailed, oadpv1alpha1.RestorePhaseCanceled:
		// A terminal phase answers the spec it observed. A Velero restore adds imagestreams
		// as it goes; those added after a run ended, even one whose images all failed, are
		// restored by another run.
		if isr.Status.ObservedGeneration == isr.Generation || isr.Spec.Cancel {
			return ctrl.Result{}, nil
		}
	}
	if isr.Spec.Cancel {
		return ctrl.Result{}, r.patchStatus(ctx, isr, func(s *oadpv1alpha1.ImageStreamsRestoreStatus) {
			s.Phase = oadpv1alpha1.RestorePhaseCanceled
			s.CompletionTimestamp = ptrNow()
			setCondition(&s.CommonStatus, isr.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonCanceled, "canceled before it started")
		})
	}

	store, opts, host, reason, err := r.preflight(ctx, r.APIReader, isr.Spec.BackupLocation)
	if err != nil {
		log.FromContext(ctx).Info("Restore cannot start yet", "reason", reason, "error", err.Error())
		return ctrl.Result{RequeueAfter: r.RetryInterval}, r.patchStatus(ctx, isr, func(s *oadpv1alpha1.ImageStreamsRestoreStatus) {
			if s.Phase == "" {
				s.Phase = oadpv1alpha1.RestorePhaseNew
			}
			setCondition(&s.CommonStatus, isr.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, reason, err.Error())
		})
	}
	backup, err := store.ReadBackup(ctx, isr.Spec.BackupName())
	if err != nil {
		store.Close()
		if !errors.Is(err, imagestore.ErrNotFound) && !errors.Is(err, imagestore.ErrInvalidIndex) {
			// A store that did not answer is asked again.
			log.FromContext(ctx).Info("Restore cannot start yet", "reason", ReasonStoreUnavailable, "error", err.Error())
			return ctrl.Result{RequeueAfter: r.RetryInterval}, r.patchStatus(ctx, isr, func(s *oadpv1alpha1.ImageStreamsRestoreStatus) {
				if s.Phase == "" {
					s.Phase = oadpv1alpha1.RestorePhaseNew
				}
				setCondition(&s.CommonStatus, isr.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonStoreUnavailable, err.Error())
			})
		}
		reason := ReasonInvalidBackup
		if errors.Is(err, imagestore.ErrNotFound) {
			reason = ReasonBackupNotFound
			err = fmt.Errorf("backup %q is not in the backup location (no backups/%s/index.json)", isr.Spec.BackupName(), isr.Spec.BackupName())
		}
		r.Recorder.Eventf(isr, nil, corev1.EventTypeWarning, reason, "Restore", err.Error())
		return ctrl.Result{}, r.patchStatus(ctx, isr, func(s *oadpv1alpha1.ImageStreamsRestoreStatus) {
			s.Phase = oadpv1alpha1.RestorePhaseFailed
			s.ObservedGeneration = isr.Generation
			s.CompletionTimestamp = ptrNow()
			setCondition(&s.CommonStatus, isr.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, reason, err.Error())
		})
	}
	snapshot := isr.DeepCopy()
	if !r.runner.start(req.NamespacedName, func(jctx context.Context, canceledByUser func() bool) {
		defer store.Close()
		ctx := log.IntoContext(jctx, log.FromContext(ctx))
		r.runRestore(ctx, canceledByUser, snapshot, store, backup, opts, host)
	}) {
		store.Close() // a restore runs already, or the worker is stopping
	}
	return ctrl.Result{}, nil
}

// restoreItem is one image to push and where.
type restoreItem struct {
	entry imagestore.Entry
	tags  []string
	// missing is set for an image the restore lists but the backup lacks.
	missing error
}

// selectImages picks the backup's images that the restore lists (all when it lists none),
// grouped by imagestream, oldest first: entries are recorded newest first, as imagestream
// history lists them, so pushing oldest first leaves a tag that moved on its newest image.
func selectImages(spec *oadpv1alpha1.ImageStreamsRestoreSpec, entries []imagestore.Entry) map[[2]string][]restoreItem {
	groups := map[[2]string][]restoreItem{}
	if len(spec.ImageStreams) == 0 {
		for _, e := range entries {
			k := [2]string{e.Namespace, e.ImageStream}
			groups[k] = append(groups[k], restoreItem{entry: e, tags: e.Tags})
		}
	}
	for i := range spec.ImageStreams {
		is := &spec.ImageStreams[i]
		k := [2]string{is.NamespaceOrDefault(), is.Name}
		var have []imagestore.Entry
		for _, e := range entries {
			if e.Namespace == k[0] && e.ImageStream == k[1] {
				have = append(have, e)
			}
		}
		if len(is.DockerImageReferences) == 0 {
			if len(have) == 0 {
				groups[k] = append(groups[k], restoreItem{missing: fmt.Errorf("imagestream %s/%s is not in the backup", k[0], k[1]), entry: imagestore.Entry{Namespace: k[0], ImageStream: k[1]}})
			}
			for _, e := range have {
				groups[k] = append(groups[k], restoreItem{entry: e, tags: e.Tags})
			}
			continue
		}
		for _, ref := range is.DockerImageReferences {
			digest := ref.DockerImageReference[len(ref.DockerImageReference)-71:] // the schema guarantees @sha256:<64 hex>
			item := restoreItem{entry: imagestore.Entry{Namespace: k[0], ImageStream: k[1], Reference: ref.DockerImageReference}, tags: ref.Tags,
				missing: fmt.Errorf("image %s is not in the backup", digest)}
			for _, e := range have {
				if e.Descriptor.Digest.String() == digest {
					item.entry, item.missing = e, nil
					if len(item.tags) == 0 {
						item.tags = e.Tags
					}
				}
			}
			groups[k] = append(groups[k], item)
		}
	}
	for k := range groups {
		slices.Reverse(groups[k])
	}
	return groups
}

func (r *RestoreReconciler) runRestore(ctx context.Context, canceledByUser func() bool, isr *oadpv1alpha1.ImageStreamsRestore, store *imagestore.Store, backup *imagestore.Backup, opts copier.Options, host string) {
	live := isr.DeepCopy() // status patches refresh it; isr keeps the generation this run copies
	logger := log.FromContext(ctx).WithValues("imagestreamsrestore", client.ObjectKeyFromObject(isr))
	start := time.Now()
	groups := selectImages(&isr.Spec, backup.Entries)
	var total int64
	for _, g := range groups {
		total += int64(len(g))
	}
	if err := r.patchStatus(ctx, live, func(s *oadpv1alpha1.ImageStreamsRestoreStatus) {
		s.Phase = oadpv1alpha1.RestorePhaseInProgress
		if s.StartTimestamp == nil {
			s.StartTimestamp = ptrNow()
		}
		s.CompletionTimestamp = nil
		s.Progress = oadpv1alpha1.Progress{ImagesTotal: total}
		s.Failures = nil
		msg := fmt.Sprintf("pushing %d images of backup %s to %s", total, isr.Spec.BackupName(), host)
		setCondition(&s.CommonStatus, isr.Generation, oadpv1alpha1.ConditionProgressing, metav1.ConditionTrue, ReasonCopying, msg)
		setCondition(&s.CommonStatus, isr.Generation, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonCopying, msg)
	}); err != nil {
		logger.Error(err, "Failed to update status")
	}
	r.Recorder.Eventf(isr, nil, corev1.EventTypeNormal, "Started", "Restore", "Started pushing %d images", total)

	p, err := copier.NewPusher(ctx, store, opts)
	if err != nil {
		r.finishRestore(ctx, logger, isr, live, canceledByUser, oadpv1alpha1.RestorePhaseFailed, ReasonFailed, err.Error(), nil, failures{}, start)
		return
	}
	var done, failed atomic.Int64
	var mu sync.Mutex
	var fails failures
	fail := func(it restoreItem, err error) {
		failed.Add(1)
		mu.Lock()
		fails.add(it.entry.Namespace, it.entry.ImageStream, it.entry.Reference, err)
		mu.Unlock()
		logger.Info("Image failed", "imagestream", it.entry.Namespace+"/"+it.entry.ImageStream, "reason", failureReason(err), "error", err.Error())
	}
	setProgress := func(s *oadpv1alpha1.ImageStreamsRestoreStatus) {
		st := p.Stats()
		s.Progress.ImagesDone, s.Progress.ImagesFailed = done.Load(), failed.Load()
		setBlobProgress(&s.Progress, st.BlobsTotal, st.BlobsUploaded, st.BlobsSkipped, st.BytesTotal, st.BytesUploaded, st.BytesSkipped)
	}
	stop := every(ctx, r.ProgressInterval, func() {
		if !r.progressDue() {
			return
		}
		if err := r.patchStatus(ctx, live, setProgress); err != nil && ctx.Err() == nil {
			logger.Error(err, "Failed to update progress")
		}
	})

	// Imagestreams restore in parallel; the images of one imagestream in order, so that tags
	// land where they belong.
	sem := make(chan struct{}, max(1, opts.Jobs, copier.DefaultJobs))
	var wg sync.WaitGroup
	for k, items := range groups {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		target := k[0]
		if m, ok := isr.Spec.NamespaceMapping[target]; ok && m != "" {
			target = m
		}
		wg.Go(func() {
			defer func() { <-sem }()
			repo, err := p.Repository(fmt.Sprintf("%s/%s/%s", host, target, k[1]))
			for _, it := range items {
				if ctx.Err() != nil {
					return
				}
				switch {
				case it.missing != nil:
					fail(it, it.missing)
				case err != nil:
					fail(it, err)
				default:
					if perr := p.Push(ctx, it.entry.Descriptor, repo, it.tags); perr != nil {
						if ctx.Err() == nil {
							fail(it, perr)
						}
						continue
					}
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	stop()
	st := p.Stats()
	bytesCopied.WithLabelValues("restore").Add(float64(st.BytesUploaded))
	bytesSkipped.WithLabelValues("restore").Add(float64(st.BytesSkipped))
	imagesProcessed.WithLabelValues("restore", "done").Add(float64(done.Load()))
	imagesProcessed.WithLabelValues("restore", "failed").Add(float64(failed.Load()))

	if ctx.Err() != nil {
		r.finishRestore(ctx, logger, isr, live, canceledByUser, oadpv1alpha1.RestorePhaseCanceled, ReasonCanceled, "canceled by spec.cancel", setProgress, fails, start)
		return
	}
	reason, partial, allFailed := outcome(total, failed.Load())
	phase, msg := oadpv1alpha1.RestorePhaseCompleted, fmt.Sprintf("pushed %d images: %d bytes sent, %d bytes already in the registry", total, st.BytesUploaded, st.BytesSkipped)
	switch {
	case allFailed:
		phase, msg = oadpv1alpha1.RestorePhaseFailed, fmt.Sprintf("all %d images failed; see status.failures", total)
	case total == 0 && len(backup.Missing) > 0:
		phase, msg = oadpv1alpha1.RestorePhaseFailed, "no image was restored"
	case partial || len(backup.Missing) > 0:
		phase, msg = oadpv1alpha1.RestorePhasePartiallyFailed, fmt.Sprintf("pushed %d of %d images; %d failed, see status.failures", done.Load(), total, failed.Load())
	}
	if len(backup.Missing) > 0 {
		// The images of a missing part are not even listed: the restore says which part.
		reason = ReasonBackupPartMissing
		msg = fmt.Sprintf("backup %s is missing parts %s from the location, so their images were not restored; %s",
			isr.Spec.BackupName(), strings.Join(backup.Missing, ", "), msg)
	}
	r.finishRestore(ctx, logger, isr, live, canceledByUser, phase, reason, msg, setProgress, fails, start)
}

func (r *RestoreReconciler) finishRestore(ctx context.Context, logger logr.Logger, isr, live *oadpv1alpha1.ImageStreamsRestore, canceledByUser func() bool, phase oadpv1alpha1.RestorePhase, reason, msg string,
	mutate func(*oadpv1alpha1.ImageStreamsRestoreStatus), fails failures, start time.Time) {
	if ctx.Err() != nil && !canceledByUser() {
		logger.Info("Restore interrupted by shutdown; it resumes when the worker restarts")
		return
	}
	ctx = context.WithoutCancel(ctx)
	completed := phase == oadpv1alpha1.RestorePhaseCompleted
	if err := r.patchStatus(ctx, live, func(s *oadpv1alpha1.ImageStreamsRestoreStatus) {
		if mutate != nil {
			mutate(s)
		}
		s.Phase = phase
		setEnded(&s.CommonStatus, isr.Generation, completed, reason, msg, fails)
	}); err != nil {
		logger.Error(err, "Failed to write final status")
	}
	recordEnd(r.Recorder, logger, live, "Restore", string(phase), completed, msg, start)
}

func (r *RestoreReconciler) patchStatus(ctx context.Context, isr *oadpv1alpha1.ImageStreamsRestore, mutate func(*oadpv1alpha1.ImageStreamsRestoreStatus)) error {
	return patchStatus(ctx, r.Client, isr, func() { mutate(&isr.Status) })
}
