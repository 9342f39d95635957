package controller

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/transfer"
)

// statusObject is what the status setters need of both kinds.
type statusObject interface {
	client.Object
	GetCommonStatus() *oadpv1alpha1.CommonStatus
	GetPhase() string
	SetPhase(phase string)
	CancelRequested() bool
}

// Phases both kinds share.
const (
	phaseNew        = string(oadpv1alpha1.BackupPhaseNew)
	phaseInProgress = string(oadpv1alpha1.BackupPhaseInProgress)
	phaseCanceled   = string(oadpv1alpha1.BackupPhaseCanceled)
	phaseFailed     = string(oadpv1alpha1.BackupPhaseFailed)
)

// phaseOf is the phase a terminal outcome ends in.
func phaseOf(o transfer.Outcome) string {
	if !o.Terminal() {
		return phaseFailed
	}
	return o.String()
}

// terminal reports whether phase ends a run.
func terminal(phase string) bool {
	switch phase {
	case string(oadpv1alpha1.BackupPhaseCompleted), string(oadpv1alpha1.BackupPhasePartiallyFailed), phaseFailed, phaseCanceled:
		return true
	}
	return false
}

// answered reports whether obj's status answers its spec: a terminal phase answers the spec
// it observed, or a cancel; a spec changed since (images added) is run again.
func answered(obj statusObject) bool {
	return terminal(obj.GetPhase()) && (obj.GetCommonStatus().ObservedGeneration == obj.GetGeneration() || obj.CancelRequested())
}

// condition is a condition of generation gen.
func condition(gen int64, typ string, status metav1.ConditionStatus, reason, message string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message, ObservedGeneration: gen}
}

// setNotReady says on Ready why obj's run does not go on, keeping its phase.
func setNotReady(obj statusObject, gen int64, reason, message string) {
	meta.SetStatusCondition(&obj.GetCommonStatus().Conditions, condition(gen, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, reason, message))
}

// setWaiting says why obj cannot start yet; a resource never looked at, or one whose Velero
// backup has let it start, is New.
func setWaiting(obj statusObject, gen int64, reason, message string) {
	if p := obj.GetPhase(); p == "" || p == string(oadpv1alpha1.BackupPhaseWaitingForVeleroBackup) {
		obj.SetPhase(phaseNew)
	}
	setNotReady(obj, gen, reason, message)
}

// setCanceledBeforeStart ends obj, canceled before it started.
func setCanceledBeforeStart(obj statusObject, gen int64) {
	obj.SetPhase(phaseCanceled)
	obj.GetCommonStatus().CompletionTimestamp = ptrNow()
	setNotReady(obj, gen, oadpv1alpha1.ReasonCanceled, "canceled before it started")
}

// setStarted records that a run of total images started.
func setStarted(obj statusObject, gen, total int64, message string) {
	obj.SetPhase(phaseInProgress)
	s := obj.GetCommonStatus()
	if s.StartTimestamp == nil {
		s.StartTimestamp = ptrNow()
	}
	s.CompletionTimestamp = nil
	s.Progress = oadpv1alpha1.Progress{ImagesTotal: total}
	s.Failures, s.FailedImageStreams = nil, nil
	meta.SetStatusCondition(&s.Conditions, condition(gen, oadpv1alpha1.ConditionProgressing, metav1.ConditionTrue, oadpv1alpha1.ReasonCopying, message))
	meta.SetStatusCondition(&s.Conditions, condition(gen, oadpv1alpha1.ConditionReady, metav1.ConditionFalse, oadpv1alpha1.ReasonCopying, message))
}

// setProgress records a running job's counts; the total stays what the start recorded.
func setProgress(obj statusObject, p oadpv1alpha1.Progress) {
	s := obj.GetCommonStatus()
	p.ImagesTotal = s.Progress.ImagesTotal
	s.Progress = p
}

// setEnded records a terminal result: the phase, the generation it answers, the time, the
// counts, the failures, and Ready (True only when completed) and Progressing (False) with the
// same reason.
func setEnded(obj statusObject, gen int64, res transfer.Result) {
	obj.SetPhase(phaseOf(res.Outcome))
	s := obj.GetCommonStatus()
	if res.Progress != nil {
		setProgress(obj, *res.Progress)
	}
	ready := metav1.ConditionFalse
	if res.Outcome == transfer.Completed {
		ready = metav1.ConditionTrue
	}
	s.ObservedGeneration = gen
	s.CompletionTimestamp = ptrNow()
	s.Failures, s.FailedImageStreams = res.Failures, res.FailedImageStreams
	meta.SetStatusCondition(&s.Conditions, condition(gen, oadpv1alpha1.ConditionProgressing, metav1.ConditionFalse, res.Reason, res.Message))
	meta.SetStatusCondition(&s.Conditions, condition(gen, oadpv1alpha1.ConditionReady, ready, res.Reason, res.Message))
}

func ptrNow() *metav1.Time { t := metav1.Now(); return &t }
