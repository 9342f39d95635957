package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

func readyReason(conds []metav1.Condition) (string, string) {
	if c := meta.FindStatusCondition(conds, oadpv1alpha1.ConditionReady); c != nil {
		return c.Reason, c.Message
	}
	return "", ""
}

func TestVeleroBackupGatesTheStart(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	r := c.push("app/web", imageOn(t, nil), c.registry.Host)
	c.startWorker(c.workerOptions())

	vb := &velerov1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "velero-b1"}, Status: velerov1.BackupStatus{Phase: velerov1.BackupPhaseInProgress}}
	c.create(vb)
	isb := newBackup(c.ns, "velero-b1", oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r, "latest")}})
	isb.Spec.StartBackup = false
	isb.Spec.VeleroBackupReference = &oadpv1alpha1.VeleroBackupReference{Name: "velero-b1", StartOnCompletion: true}
	c.create(isb)

	waitFor(t, isb, 30*time.Second, "waiting for the Velero backup", backupPhase(oadpv1alpha1.BackupPhaseWaitingForVeleroBackup))
	if reason, msg := readyReason(isb.Status.Conditions); reason != oadpv1alpha1.ReasonWaitingForVeleroBackup || !strings.Contains(msg, "velero-b1") || !strings.Contains(msg, "InProgress") {
		t.Errorf("Ready condition %s: %q, want it to say it waits for velero-b1 in phase InProgress", reason, msg)
	}
	// Give the worker time to copy if it wrongly would.
	time.Sleep(500 * time.Millisecond)
	if names := must(c.store().Backups(ctx)); len(names) != 0 || isb.Status.Progress.BytesUploaded != 0 {
		t.Fatalf("a gated backup copied: backups %v, progress %+v", names, isb.Status.Progress)
	}
	// The plugin's parts are not written again while Velero works.
	if len(isb.Finalizers) != 0 {
		t.Errorf("finalizers %v on a backup that has not started, want none yet", isb.Finalizers)
	}

	// Velero has collected every item and waits for our operation: the copy starts.
	vb.Status.Phase = velerov1.BackupPhaseWaitingForPluginOperations
	if err := env.Client.Update(ctx, vb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, isb, 30*time.Second, "backup Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))
	// Deleting the object keeps what it stored, so nothing needs a finalizer: none can hold up
	// the deletion of its namespace while no worker runs.
	if len(isb.Finalizers) != 0 {
		t.Errorf("finalizers %v on a started backup, want none", isb.Finalizers)
	}

	tests := []struct {
		name       string
		velero     *velerov1.Backup // nil: no Velero backup at all
		wantReason string
		wantText   string
	}{
		{"a failed Velero backup fails the image backup with its reason",
			&velerov1.Backup{Status: velerov1.BackupStatus{Phase: velerov1.BackupPhaseFailed, FailureReason: "object store unreachable"}},
			oadpv1alpha1.ReasonVeleroBackupFailed, "object store unreachable"},
		{"a Velero backup that failed validation fails it",
			&velerov1.Backup{Status: velerov1.BackupStatus{Phase: velerov1.BackupPhaseFailedValidation}},
			oadpv1alpha1.ReasonVeleroBackupFailed, "FailedValidation"},
		{"a missing Velero backup fails it", nil, oadpv1alpha1.ReasonVeleroBackupNotFound, "does not exist"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "gated-" + string(rune('a'+i))
			if tt.velero != nil {
				tt.velero.ObjectMeta = metav1.ObjectMeta{Namespace: c.ns, Name: name}
				c.create(tt.velero)
			}
			b := newBackup(c.ns, name, isb.Spec.ImageStreams...)
			b.Spec.StartBackup = false
			b.Spec.VeleroBackupReference = &oadpv1alpha1.VeleroBackupReference{Name: name, StartOnCompletion: true}
			c.create(b)
			waitFor(t, b, 30*time.Second, "backup Failed", backupPhase(oadpv1alpha1.BackupPhaseFailed))
			if reason, msg := readyReason(b.Status.Conditions); reason != tt.wantReason || !strings.Contains(msg, tt.wantText) {
				t.Errorf("Ready condition %s: %q, want %s mentioning %q", reason, msg, tt.wantReason, tt.wantText)
			}
		})
	}

	// Without startBackup or startOnCompletion nothing starts, and the condition says how to.
	idle := newBackup(c.ns, "idle", isb.Spec.ImageStreams...)
	idle.Spec.StartBackup = false
	c.create(idle)
	waitFor(t, idle, 30*time.Second, "backup New", backupPhase(oadpv1alpha1.BackupPhaseNew))
	if reason, msg := readyReason(idle.Status.Conditions); reason != oadpv1alpha1.ReasonNotStarted || !strings.Contains(msg, "startBackup") {
		t.Errorf("Ready condition %s: %q, want NotStarted explaining startBackup", reason, msg)
	}
}
