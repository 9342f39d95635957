package controller

import (
	"fmt"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

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
		return gateDecision{reason: oadpv1alpha1.ReasonNotStarted, message: "set spec.startBackup to true to start, or veleroBackupReference.startOnCompletion to start with a Velero backup"}
	}
	name := fmt.Sprintf("%s/%s", veleroNamespace(isb), ref.Name)
	switch {
	case apierrors.IsNotFound(getErr):
		return gateDecision{fail: true, reason: oadpv1alpha1.ReasonVeleroBackupNotFound, message: fmt.Sprintf("Velero backup %s does not exist", name)}
	case getErr != nil:
		return gateDecision{reason: oadpv1alpha1.ReasonWaitingForVeleroBackup, message: fmt.Sprintf("cannot read Velero backup %s: %v", name, getErr)}
	}
	switch vb.Status.Phase {
	case velerov1.BackupPhaseFailed, velerov1.BackupPhaseFailedValidation:
		msg := fmt.Sprintf("Velero backup %s ended in phase %s", name, vb.Status.Phase)
		if vb.Status.FailureReason != "" {
			msg += ": " + vb.Status.FailureReason
		}
		return gateDecision{fail: true, reason: oadpv1alpha1.ReasonVeleroBackupFailed, message: msg}
	case velerov1.BackupPhaseDeleting:
		return gateDecision{fail: true, reason: oadpv1alpha1.ReasonVeleroBackupFailed, message: fmt.Sprintf("Velero backup %s is being deleted", name)}
	case velerov1.BackupPhaseWaitingForPluginOperations, velerov1.BackupPhaseWaitingForPluginOperationsPartiallyFailed,
		velerov1.BackupPhaseFinalizing, velerov1.BackupPhaseFinalizingPartiallyFailed,
		velerov1.BackupPhaseCompleted, velerov1.BackupPhasePartiallyFailed:
		return gateDecision{start: true}
	}
	phase := vb.Status.Phase
	if phase == "" {
		phase = velerov1.BackupPhaseNew
	}
	return gateDecision{reason: oadpv1alpha1.ReasonWaitingForVeleroBackup, message: fmt.Sprintf("waiting for Velero backup %s to finish collecting items (phase %s)", name, phase)}
}

func veleroNamespace(isb *oadpv1alpha1.ImageStreamsBackup) string {
	if ref := isb.Spec.VeleroBackupReference; ref != nil && ref.Namespace != "" {
		return ref.Namespace
	}
	return isb.Namespace
}
