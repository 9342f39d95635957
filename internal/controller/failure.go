package controller

import (
	"errors"
	"net"
	"strings"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// Reasons for one image's failure.
const (
	ReasonImageNotFound       = "ImageNotFound"
	ReasonUnauthorized        = "Unauthorized"
	ReasonDigestMismatch      = "DigestMismatch"
	ReasonRegistryUnavailable = "RegistryUnavailable"
	ReasonInvalidReference    = "InvalidReference"
	ReasonCopyFailed          = "CopyFailed"
	// ReasonExternalImage: the image is not in the internal registry. Only the cluster's own
	// images are backed up, and the worker's credentials go to no other registry.
	ReasonExternalImage = "ExternalImage"
)

// errExternalImage marks an image outside the internal registry.
var errExternalImage = errors.New("only images of the internal registry are backed up")

// failureReason classifies a copy error for status.failures.
func failureReason(err error) string {
	switch {
	case errors.Is(err, errExternalImage):
		return ReasonExternalImage
	case errors.Is(err, bucket.ErrNoSpace):
		return ReasonStoreFull
	case errors.Is(err, bucket.ErrDenied):
		return ReasonStoreDenied
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.BlobUnknownErrorCode, transport.NameUnknownErrorCode:
				return ReasonImageNotFound
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return ReasonUnauthorized
			}
		}
		switch terr.StatusCode {
		case 404:
			return ReasonImageNotFound
		case 401, 403:
			return ReasonUnauthorized
		}
		if terr.StatusCode >= 500 {
			return ReasonRegistryUnavailable
		}
	}
	var mismatch *imagestore.DigestMismatchError
	if errors.As(err, &mismatch) {
		return ReasonDigestMismatch
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		return ReasonRegistryUnavailable
	}
	return ReasonCopyFailed
}

// note adds suffix to the message of the listed failure of ref, if it is listed.
func (f *failures) note(namespace, imageStream, ref, suffix string) {
	for i := range f.list {
		if l := &f.list[i]; l.Namespace == namespace && l.ImageStream == imageStream && l.DockerImageReference == ref {
			l.Message = clip(l.Message, maxMessage-len(suffix)) + suffix
		}
	}
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

// failures is a bounded list of per-image failures.
type failures struct {
	list  []oadpv1alpha1.ImageFailure
	count int64
}

func (f *failures) add(namespace, imageStream, ref string, err error) {
	f.count++
	if len(f.list) >= oadpv1alpha1.MaxFailures {
		return
	}
	msg := err.Error()
	if len(msg) > 1000 {
		msg = clip(msg, 1000) + "..."
	}
	f.list = append(f.list, oadpv1alpha1.ImageFailure{
		Namespace: namespace, ImageStream: imageStream, DockerImageReference: ref,
		Reason: failureReason(err), Message: strings.ToValidUTF8(msg, "?"),
	})
}
