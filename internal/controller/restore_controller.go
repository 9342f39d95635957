package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/internal/transfer"
)

// RestoreReconciler reconciles ImageStreamsRestores.
type RestoreReconciler struct {
	client.Client
	APIReader client.Reader
	Recorder  events.EventRecorder
	Config

	jobs   *jobs
	pushed pushedSets
}

// maxPushedSets bounds the restores whose pushed images the worker remembers.
const maxPushedSets = 8

// pushedSets keeps what the runs of the restores run most recently pushed, by UID: a Velero
// restore's ImageStreamsRestore gets runs seconds apart as Velero adds imagestreams to it.
type pushedSets struct {
	mu    sync.Mutex
	byUID map[types.UID]*transfer.Pushed
	order []types.UID // least recently used first
}

func (s *pushedSets) get(uid types.UID) *transfer.Pushed {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byUID == nil {
		s.byUID = map[types.UID]*transfer.Pushed{}
	}
	p, ok := s.byUID[uid]
	if ok {
		s.order = slices.DeleteFunc(s.order, func(u types.UID) bool { return u == uid })
	} else {
		p = transfer.NewPushed()
		s.byUID[uid] = p
	}
	s.order = append(s.order, uid)
	if len(s.order) > maxPushedSets {
		delete(s.byUID, s.order[0])
		s.order = s.order[1:]
	}
	return p
}

// +kubebuilder:rbac:groups=oadp.openshift.io,namespace=openshift-adp,resources=imagestreamsrestores,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=oadp.openshift.io,namespace=openshift-adp,resources=imagestreamsrestores/status,verbs=get;update;patch

// SetupWithManager registers the reconciler and its job runner.
func (r *RestoreReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.jobs = newJobs(r.Client, r.APIReader, r.Recorder, &r.Config, "Restore", func() client.Object { return &oadpv1alpha1.ImageStreamsRestore{} })
	if err := mgr.Add(r.jobs.runner); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&oadpv1alpha1.ImageStreamsRestore{}, builder.WithPredicates(inNamespace(r.Namespace))).
		WatchesRawSource(r.jobs.source()).
		Complete(r)
}

// Reconcile starts a restore at once; the pushes run as a transfer job. A terminal phase
// answers the spec it observed: a Velero restore adds imagestreams as it goes, and those added
// after a run ended, even one whose images all failed, are restored by another run.
func (r *RestoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Namespace != r.Namespace {
		return ctrl.Result{}, nil
	}
	isr := &oadpv1alpha1.ImageStreamsRestore{}
	if err := r.Get(ctx, req.NamespacedName, isr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if res, running := r.jobs.whileRunning(isr); running {
		return res, nil
	}
	switch {
	case !isr.DeletionTimestamp.IsZero(), answered(isr):
		return ctrl.Result{}, nil
	case isr.Spec.Cancel:
		return r.jobs.cancelBeforeStart(ctx, isr)
	}
	p, reason, err := r.preflight(ctx, r.APIReader, isr.Spec.BackupLocation)
	if err != nil {
		return r.jobs.notYet(ctx, isr, reason, err)
	}
	backup, err := p.store.ReadBackup(ctx, isr.Spec.BackupName())
	if err != nil {
		p.store.Close()
		return r.unreadable(ctx, isr, err)
	}
	job := transfer.NewRestore(p.store, transfer.RestoreSpec{Backup: backup, Restore: &isr.Spec, Host: p.host, Options: p.opts,
		Pushed: r.pushed.get(isr.UID)})
	return r.jobs.start(ctx, isr, job)
}

// unreadable handles a stored backup that could not be read: a store that did not answer is
// asked again; a backup that is not there, or not readable as it is, fails the restore.
func (r *RestoreReconciler) unreadable(ctx context.Context, isr *oadpv1alpha1.ImageStreamsRestore, err error) (ctrl.Result, error) {
	if !errors.Is(err, imagestore.ErrNotFound) && !errors.Is(err, imagestore.ErrInvalidIndex) {
		return r.jobs.notYet(ctx, isr, oadpv1alpha1.ReasonStoreUnavailable, err)
	}
	reason := oadpv1alpha1.ReasonInvalidBackup
	if errors.Is(err, imagestore.ErrNotFound) {
		reason = oadpv1alpha1.ReasonBackupNotFound
		err = fmt.Errorf("backup %q is not in the backup location (no backups/%s/index.json)", isr.Spec.BackupName(), isr.Spec.BackupName())
	}
	r.Recorder.Eventf(isr, nil, corev1.EventTypeWarning, reason, "Restore", err.Error())
	return r.jobs.fail(ctx, isr, transfer.Result{Outcome: transfer.Failed, Reason: reason, Message: err.Error()})
}
