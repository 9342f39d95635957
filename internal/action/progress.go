package action

import (
	"fmt"
	"strings"
	"time"

	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// runEnd is how the worker's run of an object's spec has ended, as Progress counts it.
type runEnd int

const (
	// notEnded: no run of the spec Progress answers for has ended yet.
	notEnded runEnd = iota
	// ranThrough: the worker tried every image (Completed or PartiallyFailed); which images
	// failed is told per imagestream.
	ranThrough
	// stopped: the run failed or was canceled as a whole (Failed or Canceled); the Ready
	// condition says why.
	stopped
)

// statusReport is what Progress reads of an ImageStreamsBackup's or ImageStreamsRestore's status
// for the operation of one of its imagestreams; each kind decides end by its own rules.
type statusReport struct {
	kind, name string // the object, as messages name it
	phase      string
	end        runEnd
	status     *oadpv1alpha1.CommonStatus
}

// progress is the operation's progress as far as both kinds tell it alike: the run's times, a
// description that counts the object's images (detail adds what the kind counts besides) and,
// once the run ended, completion with the imagestream's failures or the run's. It also returns
// how many of the imagestream's images failed. It depends on the status and now alone.
func (r statusReport) progress(op operation, detail string, now time.Time) (velero.OperationProgress, int64) {
	st := r.status
	p := velero.OperationProgress{OperationUnits: imageUnits, Updated: now,
		Description: fmt.Sprintf("%s %s %s: %d of %d images%s",
			r.kind, r.name, orDefault(r.phase, "New"), st.Progress.ImagesDone, st.Progress.ImagesTotal, detail)}
	if st.StartTimestamp != nil {
		p.Started = st.StartTimestamp.Time
	}
	if r.end != notEnded && st.CompletionTimestamp != nil {
		p.Updated = st.CompletionTimestamp.Time
	}
	switch r.end {
	case ranThrough:
		p.Completed = true
		failed, msg := imageStreamFailures(st, op.namespace, op.name)
		if op.writer != "" {
			failed, msg = objectFailures(st)
			if failed == 0 && r.phase == string(oadpv1alpha1.BackupPhasePartiallyFailed) {
				msg = withReadyMessage(fmt.Sprintf("%s %s %s", r.kind, r.name, r.phase), st.Conditions)
			}
		}
		p.Err = msg
		return p, failed
	case stopped:
		p.Completed = true
		p.Err = withReadyMessage(fmt.Sprintf("%s %s %s", r.kind, r.name, r.phase), st.Conditions)
	}
	return p, 0
}

// imageStreamFailures counts the failed images of imagestream namespace/name and says which,
// or returns 0 and "" when none failed.
//
// status.failures holds at most MaxFailures entries for the whole object, so an imagestream's
// failures may be missing from it: the count is status.failedImageStreams's, which covers every
// imagestream, and at least what status.failures lists (a worker that does not count per
// imagestream writes that alone). The message lists what status.failures has and says how many
// more it leaves out. An imagestream status.failedImageStreams has no room for is reported as
// possibly failed, never as a success.
func imageStreamFailures(st *oadpv1alpha1.CommonStatus, namespace, name string) (int64, string) {
	var listed []string
	for _, f := range st.Failures {
		if f.Namespace == namespace && f.ImageStream == name {
			listed = append(listed, fmt.Sprintf("%s: %s", orDefault(f.DockerImageReference, f.ImageStream), f.Reason))
		}
	}
	failed := max(st.ImagesFailedOf(namespace, name), int64(len(listed)))
	if failed == 0 && st.FailedImageStreamsLeftOut() {
		return 0, fmt.Sprintf("more than %d imagestreams have failed images, more than the status records; this one's may have failed too: see the resource's status and the worker's log",
			oadpv1alpha1.MaxFailedImageStreams)
	}
	if failed == 0 {
		return 0, ""
	}
	return failed, failuresMessage(failed, listed)
}

// objectFailures counts the failed images of the whole object and says which, as far as
// status.failures lists them, or returns 0 and "" when none failed.
func objectFailures(st *oadpv1alpha1.CommonStatus) (int64, string) {
	failed := max(st.Progress.ImagesFailed, int64(len(st.Failures)))
	if failed == 0 {
		return 0, ""
	}
	var listed []string
	for _, f := range st.Failures {
		listed = append(listed, fmt.Sprintf("%s: %s", orDefault(f.DockerImageReference, f.Namespace+"/"+f.ImageStream), f.Reason))
	}
	return failed, failuresMessage(failed, listed)
}

// failuresMessage says that failed images failed, listed among them.
func failuresMessage(failed int64, listed []string) string {
	msg := fmt.Sprintf("%d images failed", failed)
	if len(listed) > 0 {
		msg += ": " + strings.Join(listed, "; ")
	}
	if unlisted := failed - int64(len(listed)); unlisted > 0 {
		msg += fmt.Sprintf(" (%d not listed in status.failures)", unlisted)
	}
	return msg
}

// withReadyMessage is msg followed by the Ready condition's message, which says why a run
// failed, when there is one.
func withReadyMessage(msg string, conditions []metav1.Condition) string {
	if c := meta.FindStatusCondition(conditions, oadpv1alpha1.ConditionReady); c != nil {
		return msg + ": " + c.Message
	}
	return msg
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
