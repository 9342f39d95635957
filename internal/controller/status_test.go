package controller

import (
	"errors"
	"testing"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/transfer"
)

func TestGate(t *testing.T) {
	onCompletion := &oadpv1alpha1.ImageStreamsBackup{Spec: oadpv1alpha1.ImageStreamsBackupSpec{
		VeleroBackupReference: &oadpv1alpha1.VeleroBackupReference{Name: "b1", Namespace: "velero", StartOnCompletion: true}}}
	withPhase := func(p velerov1.BackupPhase) *velerov1.Backup {
		return &velerov1.Backup{Status: velerov1.BackupStatus{Phase: p}}
	}
	tests := map[string]struct {
		isb    *oadpv1alpha1.ImageStreamsBackup
		velero *velerov1.Backup
		err    error
		want   gateDecision
	}{
		"startBackup starts at once": {isb: &oadpv1alpha1.ImageStreamsBackup{Spec: oadpv1alpha1.ImageStreamsBackupSpec{StartBackup: true}}, want: gateDecision{start: true}},
		"neither flag waits for a person": {isb: &oadpv1alpha1.ImageStreamsBackup{}, want: gateDecision{reason: oadpv1alpha1.ReasonNotStarted,
			message: "set spec.startBackup to true to start, or veleroBackupReference.startOnCompletion to start with a Velero backup"}},
		"a new Velero backup is waited for": {isb: onCompletion, velero: withPhase(""), want: gateDecision{reason: oadpv1alpha1.ReasonWaitingForVeleroBackup,
			message: "waiting for Velero backup velero/b1 to finish collecting items (phase New)"}},
		"a Velero backup collecting items is waited for": {isb: onCompletion, velero: withPhase(velerov1.BackupPhaseInProgress), want: gateDecision{reason: oadpv1alpha1.ReasonWaitingForVeleroBackup,
			message: "waiting for Velero backup velero/b1 to finish collecting items (phase InProgress)"}},
		"a Velero backup waiting for plugin operations starts it": {isb: onCompletion, velero: withPhase(velerov1.BackupPhaseWaitingForPluginOperations), want: gateDecision{start: true}},
		"a finalizing Velero backup starts it":                    {isb: onCompletion, velero: withPhase(velerov1.BackupPhaseFinalizingPartiallyFailed), want: gateDecision{start: true}},
		"a completed Velero backup starts it":                     {isb: onCompletion, velero: withPhase(velerov1.BackupPhaseCompleted), want: gateDecision{start: true}},
		"a failed Velero backup fails it": {isb: onCompletion, velero: &velerov1.Backup{Status: velerov1.BackupStatus{Phase: velerov1.BackupPhaseFailed, FailureReason: "boom"}},
			want: gateDecision{fail: true, reason: oadpv1alpha1.ReasonVeleroBackupFailed, message: "Velero backup velero/b1 ended in phase Failed: boom"}},
		"a Velero backup being deleted fails it": {isb: onCompletion, velero: withPhase(velerov1.BackupPhaseDeleting),
			want: gateDecision{fail: true, reason: oadpv1alpha1.ReasonVeleroBackupFailed, message: "Velero backup velero/b1 is being deleted"}},
		"a missing Velero backup fails it": {isb: onCompletion, err: apierrors.NewNotFound(schema.GroupResource{Resource: "backups"}, "b1"),
			want: gateDecision{fail: true, reason: oadpv1alpha1.ReasonVeleroBackupNotFound, message: "Velero backup velero/b1 does not exist"}},
		"an unreadable Velero backup is waited for": {isb: onCompletion, err: errors.New("timeout"),
			want: gateDecision{reason: oadpv1alpha1.ReasonWaitingForVeleroBackup, message: "cannot read Velero backup velero/b1: timeout"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := gate(tt.isb, tt.velero, tt.err); got != tt.want {
				t.Errorf("gate() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSetEnded(t *testing.T) {
	tests := map[string]struct {
		completed bool
		wantReady metav1.ConditionStatus
	}{
		"a completed run is Ready":   {true, metav1.ConditionTrue},
		"any other end is not Ready": {false, metav1.ConditionFalse},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			outcome := transfer.PartiallyFailed
			if tt.completed {
				outcome = transfer.Completed
			}
			isb := &oadpv1alpha1.ImageStreamsBackup{}
			setEnded(isb, 7, transfer.Result{Outcome: outcome, Reason: "Why", Message: "what happened",
				Failures: []oadpv1alpha1.ImageFailure{{Namespace: "ns", ImageStream: "is", DockerImageReference: "r/ns/is@sha256:0", Reason: "CopyFailed", Message: "gone"}}})
			s := isb.Status.CommonStatus
			ready := meta.FindStatusCondition(s.Conditions, oadpv1alpha1.ConditionReady)
			progressing := meta.FindStatusCondition(s.Conditions, oadpv1alpha1.ConditionProgressing)
			if s.ObservedGeneration != 7 || s.CompletionTimestamp == nil || len(s.Failures) != 1 ||
				ready == nil || ready.Status != tt.wantReady || ready.Reason != "Why" || ready.ObservedGeneration != 7 ||
				progressing == nil || progressing.Status != metav1.ConditionFalse || progressing.Message != "what happened" {
				t.Errorf("status after setEnded: %+v", s)
			}
		})
	}
}
