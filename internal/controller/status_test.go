package controller

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
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
		"neither flag waits for a person": {isb: &oadpv1alpha1.ImageStreamsBackup{}, want: gateDecision{reason: ReasonNotStarted,
			message: "set spec.startBackup to true to start, or veleroBackupReference.startOnCompletion to start with a Velero backup"}},
		"a new Velero backup is waited for": {isb: onCompletion, velero: withPhase(""), want: gateDecision{reason: ReasonWaitingForVeleroBackup,
			message: "waiting for Velero backup velero/b1 to finish collecting items (phase New)"}},
		"a Velero backup collecting items is waited for": {isb: onCompletion, velero: withPhase(velerov1.BackupPhaseInProgress), want: gateDecision{reason: ReasonWaitingForVeleroBackup,
			message: "waiting for Velero backup velero/b1 to finish collecting items (phase InProgress)"}},
		"a Velero backup waiting for plugin operations starts it": {isb: onCompletion, velero: withPhase(velerov1.BackupPhaseWaitingForPluginOperations), want: gateDecision{start: true}},
		"a finalizing Velero backup starts it":                    {isb: onCompletion, velero: withPhase(velerov1.BackupPhaseFinalizingPartiallyFailed), want: gateDecision{start: true}},
		"a completed Velero backup starts it":                     {isb: onCompletion, velero: withPhase(velerov1.BackupPhaseCompleted), want: gateDecision{start: true}},
		"a failed Velero backup fails it": {isb: onCompletion, velero: &velerov1.Backup{Status: velerov1.BackupStatus{Phase: velerov1.BackupPhaseFailed, FailureReason: "boom"}},
			want: gateDecision{fail: true, reason: ReasonVeleroBackupFailed, message: "Velero backup velero/b1 ended in phase Failed: boom"}},
		"a Velero backup being deleted fails it": {isb: onCompletion, velero: withPhase(velerov1.BackupPhaseDeleting),
			want: gateDecision{fail: true, reason: ReasonVeleroBackupFailed, message: "Velero backup velero/b1 is being deleted"}},
		"a missing Velero backup fails it": {isb: onCompletion, err: apierrors.NewNotFound(schema.GroupResource{Resource: "backups"}, "b1"),
			want: gateDecision{fail: true, reason: ReasonVeleroBackupNotFound, message: "Velero backup velero/b1 does not exist"}},
		"an unreadable Velero backup is waited for": {isb: onCompletion, err: errors.New("timeout"),
			want: gateDecision{reason: ReasonWaitingForVeleroBackup, message: "cannot read Velero backup velero/b1: timeout"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := gate(tt.isb, tt.velero, tt.err); got != tt.want {
				t.Errorf("gate() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestOutcome(t *testing.T) {
	tests := map[string]struct {
		total, failed         int64
		reason                string
		partial, allFailedOut bool
	}{
		"no failure completes":            {4, 0, ReasonCompleted, false, false},
		"an empty backup completes":       {0, 0, ReasonCompleted, false, false},
		"some failures partially fail":    {4, 1, ReasonPartiallyFailed, true, false},
		"every image failing fails it":    {4, 4, ReasonFailed, false, true},
		"the only image failing fails it": {1, 1, ReasonFailed, false, true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			reason, partial, all := outcome(tt.total, tt.failed)
			if reason != tt.reason || partial != tt.partial || all != tt.allFailedOut {
				t.Errorf("outcome(%d, %d) = %s, %v, %v", tt.total, tt.failed, reason, partial, all)
			}
		})
	}
}

func TestFailureReason(t *testing.T) {
	tests := map[string]struct {
		err  error
		want string
	}{
		"an unknown manifest":  {&transport.Error{StatusCode: 404, Errors: []transport.Diagnostic{{Code: transport.ManifestUnknownErrorCode}}}, ReasonImageNotFound},
		"a plain 404":          {fmt.Errorf("fetching: %w", &transport.Error{StatusCode: 404}), ReasonImageNotFound},
		"a denied pull":        {&transport.Error{StatusCode: 403, Errors: []transport.Diagnostic{{Code: transport.DeniedErrorCode}}}, ReasonUnauthorized},
		"a failing registry":   {&transport.Error{StatusCode: 503}, ReasonRegistryUnavailable},
		"a connection refused": {&net.OpError{Op: "dial", Err: errors.New("refused")}, ReasonRegistryUnavailable},
		"a corrupt blob":       {&imagestore.DigestMismatchError{Digest: v1.Hash{Algorithm: "sha256", Hex: "00"}}, ReasonDigestMismatch},
		"anything else":        {errors.New("odd"), ReasonCopyFailed},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := failureReason(tt.err); got != tt.want {
				t.Errorf("failureReason(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}

func TestFailuresAreBounded(t *testing.T) {
	var f failures
	for i := range oadpv1alpha1.MaxFailures + 10 {
		f.add("ns", "is", fmt.Sprintf("r/ns/is@sha256:%064x", i), errors.New(string(make([]byte, 2000))))
	}
	if f.count != oadpv1alpha1.MaxFailures+10 || len(f.list) != oadpv1alpha1.MaxFailures || len(f.list[0].Message) > 1024 {
		t.Errorf("failures kept %d of %d, first message %d bytes", len(f.list), f.count, len(f.list[0].Message))
	}
}

func TestSelectImages(t *testing.T) {
	d := func(n int) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", n)} }
	entry := func(ns, is string, n int, tags ...string) imagestore.Entry {
		return imagestore.Entry{Namespace: ns, ImageStream: is, Tags: tags, Descriptor: v1.Descriptor{Digest: d(n)}}
	}
	// Newest first, as recorded.
	entries := []imagestore.Entry{entry("app", "web", 2, "latest", "v2"), entry("app", "web", 1, "latest", "v1"), entry("app", "api", 3, "latest")}
	digests := func(items []restoreItem) (out []string) {
		for _, it := range items {
			if it.missing != nil {
				out = append(out, "missing")
				continue
			}
			out = append(out, it.entry.Descriptor.Digest.Hex[62:]+":"+fmt.Sprint(it.tags))
		}
		return out
	}
	tests := map[string]struct {
		spec oadpv1alpha1.ImageStreamsRestoreSpec
		want map[[2]string][]string
	}{
		"everything, oldest first within an imagestream": {spec: oadpv1alpha1.ImageStreamsRestoreSpec{}, want: map[[2]string][]string{
			{"app", "web"}: {"01:[latest v1]", "02:[latest v2]"}, {"app", "api"}: {"03:[latest]"}}},
		"one imagestream by name": {spec: oadpv1alpha1.ImageStreamsRestoreSpec{ImageStreams: []oadpv1alpha1.ImageStream{{Name: "api", Namespace: "app"}}},
			want: map[[2]string][]string{{"app", "api"}: {"03:[latest]"}}},
		"one image by digest with its own tags": {spec: oadpv1alpha1.ImageStreamsRestoreSpec{ImageStreams: []oadpv1alpha1.ImageStream{{Name: "web",
			DockerImageReferences: []oadpv1alpha1.DockerImageReference{{DockerImageReference: "other-cluster:5000/app/web@" + d(1).String(), Tags: []string{"restored"}}}}}},
			want: map[[2]string][]string{{"app", "web"}: {"01:[restored]"}}},
		"an imagestream the backup lacks": {spec: oadpv1alpha1.ImageStreamsRestoreSpec{ImageStreams: []oadpv1alpha1.ImageStream{{Name: "nope", Namespace: "app"}}},
			want: map[[2]string][]string{{"app", "nope"}: {"missing"}}},
		"an image the backup lacks": {spec: oadpv1alpha1.ImageStreamsRestoreSpec{ImageStreams: []oadpv1alpha1.ImageStream{{Name: "web", Namespace: "app",
			DockerImageReferences: []oadpv1alpha1.DockerImageReference{{DockerImageReference: "r/app/web@" + d(9).String()}}}}},
			want: map[[2]string][]string{{"app", "web"}: {"missing"}}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := map[[2]string][]string{}
			for k, items := range selectImages(&tt.spec, entries) {
				got[k] = digests(items)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("selectImages() = %v, want %v", got, tt.want)
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
			var s oadpv1alpha1.CommonStatus
			var f failures
			f.add("ns", "is", "r/ns/is@sha256:0", errors.New("gone"))
			setEnded(&s, 7, tt.completed, "Why", "what happened", f)
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

func TestMergeReferences(t *testing.T) {
	a, b := "r/ns/is@sha256:"+strings.Repeat("a", 64), "r/ns/is@sha256:"+strings.Repeat("b", 64)
	tests := []struct {
		name string
		in   []oadpv1alpha1.DockerImageReference
		want []oadpv1alpha1.DockerImageReference
	}{
		{"none", nil, []oadpv1alpha1.DockerImageReference{}},
		{"distinct", []oadpv1alpha1.DockerImageReference{{DockerImageReference: a, Tags: []string{"x"}}, {DockerImageReference: b}},
			[]oadpv1alpha1.DockerImageReference{{DockerImageReference: a, Tags: []string{"x"}}, {DockerImageReference: b}}},
		{"twice, tags joined in order", []oadpv1alpha1.DockerImageReference{{DockerImageReference: a, Tags: []string{"x", "y"}}, {DockerImageReference: b}, {DockerImageReference: a, Tags: []string{"y", "z"}}},
			[]oadpv1alpha1.DockerImageReference{{DockerImageReference: a, Tags: []string{"x", "y", "z"}}, {DockerImageReference: b}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergeReferences(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("mergeReferences = %+v, want %+v", got, tt.want)
			}
		})
	}
}
