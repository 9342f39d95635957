package action

import (
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// transientAPIError says a write may succeed when tried again: the API server was busy or an
// internal retry of a contended object ran out.
func transientAPIError(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err)
}
