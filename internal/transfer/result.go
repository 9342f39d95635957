package transfer

import (
	"context"
	"sync/atomic"

	"github.com/go-logr/logr"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
)

// Outcome is how a job ended.
type Outcome int

const (
	// Completed: every image moved.
	Completed Outcome = iota + 1
	// PartiallyFailed: some images failed; the others moved (and a backup committed them).
	PartiallyFailed
	// Failed: the job ended without result: every image failed, or something stopped all of
	// them (a store that refuses writes, an index that cannot be written).
	Failed
	// Canceled: spec.cancel stopped the job.
	Canceled
	// Interrupted: the job stopped before an outcome and runs again: the worker is stopping,
	// or a store did not answer (Reason says why; the resource is retried).
	Interrupted
)

func (o Outcome) String() string {
	switch o {
	case Completed:
		return "Completed"
	case PartiallyFailed:
		return "PartiallyFailed"
	case Failed:
		return "Failed"
	case Canceled:
		return "Canceled"
	case Interrupted:
		return "Interrupted"
	}
	return "Unknown"
}

// Terminal reports whether the outcome ends the resource's run; an interrupted one runs again.
func (o Outcome) Terminal() bool { return o >= Completed && o <= Canceled }

// Result is how a job ended and what it did.
type Result struct {
	Outcome Outcome
	// Reason is the condition reason and Message the condition message.
	Reason, Message string
	// Progress is the final count, nil for a job that moved nothing.
	Progress *oadpv1alpha1.Progress
	// Failures lists failed images (at most oadpv1alpha1.MaxFailures) and
	// FailedImageStreams counts them for every imagestream.
	Failures           []oadpv1alpha1.ImageFailure
	FailedImageStreams []oadpv1alpha1.ImageStreamFailures
}

// outcomeOf is how moving total images of which failed failed ends.
func outcomeOf(total, failed int64) Outcome {
	switch {
	case failed == 0:
		return Completed
	case failed < total:
		return PartiallyFailed
	default:
		return Failed
	}
}

// reasonOf is the condition reason of a terminal outcome.
func reasonOf(o Outcome) string {
	switch o {
	case Completed:
		return oadpv1alpha1.ReasonCompleted
	case PartiallyFailed:
		return oadpv1alpha1.ReasonPartiallyFailed
	case Canceled:
		return oadpv1alpha1.ReasonCanceled
	}
	return oadpv1alpha1.ReasonFailed
}

// tally counts the images of a job and records those that failed. It is safe for concurrent
// use.
type tally struct {
	total, done, failed atomic.Int64
	fails               failures
}

// fail records that the image ref of imagestream namespace/imageStream failed with err.
func (t *tally) fail(ctx context.Context, namespace, imageStream, ref string, err error) {
	t.failed.Add(1)
	t.fails.add(namespace, imageStream, ref, err)
	logr.FromContextOrDiscard(ctx).Info("Image failed", "imagestream", namespace+"/"+imageStream, "reference", ref, "reason", FailureReason(err), "error", err.Error())
}

// progress is the status progress so far, with the blob counts of st.
func (t *tally) progress(st copier.Stats) oadpv1alpha1.Progress {
	return oadpv1alpha1.Progress{
		ImagesTotal: t.total.Load(), ImagesDone: t.done.Load(), ImagesFailed: t.failed.Load(),
		BlobsTotal: st.BlobsTotal, BlobsUploaded: st.BlobsUploaded, BlobsSkipped: st.BlobsSkipped,
		BytesTotal: st.BytesTotal, BytesUploaded: st.BytesUploaded, BytesSkipped: st.BytesSkipped,
	}
}

// final completes res with the final counts, the blob counts of st, and the failures.
func (t *tally) final(res Result, st copier.Stats) Result {
	p := t.progress(st)
	res.Progress = &p
	t.fails.into(&res)
	return res
}
