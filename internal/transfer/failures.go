package transfer

import (
	"cmp"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// ErrExternalImage marks an image outside the internal registry.
var ErrExternalImage = errors.New("only images of the internal registry are backed up")

// FailureReason classifies a copy error for status.failures.
func FailureReason(err error) string {
	switch {
	case errors.Is(err, ErrExternalImage):
		return oadpv1alpha1.ReasonExternalImage
	case errors.Is(err, bucket.ErrNoSpace):
		return oadpv1alpha1.ReasonStoreFull
	case errors.Is(err, bucket.ErrDenied):
		return oadpv1alpha1.ReasonStoreDenied
	}
	if reason := registryReason(err); reason != "" {
		return reason
	}
	var mismatch *imagestore.DigestMismatchError
	if errors.As(err, &mismatch) {
		return oadpv1alpha1.ReasonDigestMismatch
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		return oadpv1alpha1.ReasonRegistryUnavailable
	}
	return oadpv1alpha1.ReasonCopyFailed
}

// registryReason classifies a registry's error response, or returns "".
func registryReason(err error) string {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return ""
	}
	for _, d := range terr.Errors {
		switch d.Code {
		case transport.ManifestUnknownErrorCode, transport.BlobUnknownErrorCode, transport.NameUnknownErrorCode:
			return oadpv1alpha1.ReasonImageNotFound
		case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
			return oadpv1alpha1.ReasonUnauthorized
		}
	}
	switch {
	case terr.StatusCode == 404:
		return oadpv1alpha1.ReasonImageNotFound
	case terr.StatusCode == 401, terr.StatusCode == 403:
		return oadpv1alpha1.ReasonUnauthorized
	case terr.StatusCode >= 500:
		return oadpv1alpha1.ReasonRegistryUnavailable
	}
	return ""
}

// maxMessage is the longest message the API takes in status.failures.
const maxMessage = 1024

// clip cuts s to at most n bytes, at a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// imageStreamKey names an imagestream.
type imageStreamKey struct{ namespace, name string }

// failures records the images a job could not move: each counts for its imagestream, and the
// first oadpv1alpha1.MaxFailures are listed with their reasons. It is safe for concurrent use.
type failures struct {
	mu    sync.Mutex
	list  []oadpv1alpha1.ImageFailure
	count int64
	per   map[imageStreamKey]int64
}

func (f *failures) add(namespace, imageStream, ref string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count++
	if f.per == nil {
		f.per = map[imageStreamKey]int64{}
	}
	f.per[imageStreamKey{namespace, imageStream}]++
	if len(f.list) >= oadpv1alpha1.MaxFailures {
		return
	}
	msg := err.Error()
	if len(msg) > 1000 {
		msg = clip(msg, 1000) + "..."
	}
	f.list = append(f.list, oadpv1alpha1.ImageFailure{
		Namespace: namespace, ImageStream: imageStream, DockerImageReference: ref,
		Reason: FailureReason(err), Message: strings.ToValidUTF8(msg, "?"),
	})
}

// note adds suffix to the message of the listed failure of ref, if it is listed.
func (f *failures) note(namespace, imageStream, ref, suffix string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.list {
		if l := &f.list[i]; l.Namespace == namespace && l.ImageStream == imageStream && l.DockerImageReference == ref {
			l.Message = clip(l.Message, maxMessage-len(suffix)) + suffix
		}
	}
}

// into records the failures on r.
func (f *failures) into(r *Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.Failures = slices.Clone(f.list)
	r.FailedImageStreams = nil
	for k, n := range f.per {
		r.FailedImageStreams = append(r.FailedImageStreams, oadpv1alpha1.ImageStreamFailures{Namespace: k.namespace, Name: k.name, ImagesFailed: n})
	}
	slices.SortFunc(r.FailedImageStreams, func(a, b oadpv1alpha1.ImageStreamFailures) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	if len(r.FailedImageStreams) > oadpv1alpha1.MaxFailedImageStreams {
		r.FailedImageStreams = r.FailedImageStreams[:oadpv1alpha1.MaxFailedImageStreams]
	}
}
