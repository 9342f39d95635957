package controller

import (
	"fmt"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// Reasons on the Ready and Progressing conditions.
const (
	ReasonNotStarted             = "NotStarted"
	ReasonWaitingForVeleroBackup = "WaitingForVeleroBackup"
	ReasonVeleroBackupNotFound   = "VeleroBackupNotFound"
	ReasonVeleroBackupFailed     = "VeleroBackupFailed"
	ReasonCopying                = "Copying"
	ReasonCompleted              = "Completed"
	ReasonPartiallyFailed        = "PartiallyFailed"
	ReasonFailed                 = "Failed"
	ReasonCanceled               = "Canceled"
	ReasonBackupNotFound         = "BackupNotFound"
	// ReasonBackupPartMissing: a split backup lists a part the location does not hold.
	ReasonBackupPartMissing = "BackupPartMissing"
	// ReasonInvalidBackup: a stored backup's index cannot be read as it is.
	ReasonInvalidBackup         = "InvalidBackup"
	ReasonBackupExists          = "BackupExists"
	ReasonStoreUnavailable      = "StoreUnavailable"
	ReasonStoreFull             = "StoreFull"
	ReasonStoreDenied           = "StoreDenied"
	ReasonRegistryNotConfigured = "RegistryNotConfigured"
	// ReasonDeleting: spec.deleteStoredImages is being carried out.
	ReasonDeleting = "Deleting"
)

func setCondition(s *oadpv1alpha1.CommonStatus, generation int64, typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&s.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: message, ObservedGeneration: generation,
	})
}

// setEnded records a terminal outcome: the generation it answers, the time, the failures, and
// Ready (True only when completed) and Progressing (False) with the same reason.
func setEnded(s *oadpv1alpha1.CommonStatus, generation int64, completed bool, reason, message string, fails failures) {
	ready := metav1.ConditionFalse
	if completed {
		ready = metav1.ConditionTrue
	}
	s.ObservedGeneration = generation
	s.CompletionTimestamp = ptrNow()
	s.Failures = fails.list
	setCondition(s, generation, oadpv1alpha1.ConditionProgressing, metav1.ConditionFalse, reason, message)
	setCondition(s, generation, oadpv1alpha1.ConditionReady, ready, reason, message)
}

// gateDecision says whether an ImageStreamsBackup may start copying.
type gateDecision struct {
	start bool
	// fail ends the backup in phase Failed; otherwise, when not start, it waits.
	fail            bool
	reason, message string
}

// gate applies the start rules: spec.startBackup starts at once; with
// veleroBackupReference.startOnCompletion the Velero Backup must have collected every item,
// which is every phase after InProgress. The Velero Backup only completes after the image
// backup (it waits for our plugin's operations), so its Completed phase cannot be the signal.
func gate(isb *oadpv1alpha1.ImageStreamsBackup, vb *velerov1.Backup, getErr error) gateDecision {
	if isb.Spec.StartBackup {
		return gateDecision{start: true}
	}
	ref := isb.Spec.VeleroBackupReference
	if ref == nil || !ref.StartOnCompletion {
		return gateDecision{reason: ReasonNotStarted, message: "set spec.startBackup to true to start, or veleroBackupReference.startOnCompletion to start with a Velero backup"}
	}
	name := fmt.Sprintf("%s/%s", veleroNamespace(isb), ref.Name)
	switch {
	case apierrors.IsNotFound(getErr):
		return gateDecision{fail: true, reason: ReasonVeleroBackupNotFound, message: fmt.Sprintf("Velero backup %s does not exist", name)}
	case getErr != nil:
		return gateDecision{reason: ReasonWaitingForVeleroBackup, message: fmt.Sprintf("cannot read Velero backup %s: %v", name, getErr)}
	}
	switch vb.Status.Phase {
	case velerov1.BackupPhaseFailed, velerov1.BackupPhaseFailedValidation:
		msg := fmt.Sprintf("Velero backup %s ended in phase %s", name, vb.Status.Phase)
		if vb.Status.FailureReason != "" {
			msg += ": " + vb.Status.FailureReason
		}
		return gateDecision{fail: true, reason: ReasonVeleroBackupFailed, message: msg}
	case velerov1.BackupPhaseDeleting:
		return gateDecision{fail: true, reason: ReasonVeleroBackupFailed, message: fmt.Sprintf("Velero backup %s is being deleted", name)}
	case velerov1.BackupPhaseWaitingForPluginOperations, velerov1.BackupPhaseWaitingForPluginOperationsPartiallyFailed,
		velerov1.BackupPhaseFinalizing, velerov1.BackupPhaseFinalizingPartiallyFailed,
		velerov1.BackupPhaseCompleted, velerov1.BackupPhasePartiallyFailed:
		return gateDecision{start: true}
	}
	phase := vb.Status.Phase
	if phase == "" {
		phase = velerov1.BackupPhaseNew
	}
	return gateDecision{reason: ReasonWaitingForVeleroBackup, message: fmt.Sprintf("waiting for Velero backup %s to finish collecting items (phase %s)", name, phase)}
}

func veleroNamespace(isb *oadpv1alpha1.ImageStreamsBackup) string {
	if ref := isb.Spec.VeleroBackupReference; ref != nil && ref.Namespace != "" {
		return ref.Namespace
	}
	return isb.Namespace
}

// outcome is how a copy of total images with failed failures ends.
func outcome(total, failed int64) (reason string, partial, allFailed bool) {
	switch {
	case failed == 0:
		return ReasonCompleted, false, false
	case failed < total:
		return ReasonPartiallyFailed, true, false
	default:
		return ReasonFailed, false, true
	}
}

// setBlobProgress copies the copier's counters into status.
func setBlobProgress(p *oadpv1alpha1.Progress, blobsTotal, blobsUploaded, blobsSkipped, bytesTotal, bytesUploaded, bytesSkipped int64) {
	p.BlobsTotal, p.BlobsUploaded, p.BlobsSkipped = blobsTotal, blobsUploaded, blobsSkipped
	p.BytesTotal, p.BytesUploaded, p.BytesSkipped = bytesTotal, bytesUploaded, bytesSkipped
}
