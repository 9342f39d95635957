package bucket

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"slices"
	"syscall"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"gocloud.dev/gcerrors"
)

var (
	// ErrDenied marks an object store error that refused access: a read-only bucket, or
	// credentials without the permission asked for.
	ErrDenied = errors.New("the object store denied access (read-only bucket, or credentials without permission)")
	// ErrNoSpace marks an object store error that says the store is full or over its quota.
	ErrNoSpace = errors.New("the object store is out of space or over its quota")
)

// noSpaceCodes are the S3 error codes of S3-compatible servers that mean full or over quota:
// MinIO's, and Ceph RGW's bucket and user quotas (sent with 403, so checked before denial).
var noSpaceCodes = []string{"XMinioStorageFull", "QuotaExceeded", "InsufficientStorage"}

// Explain marks err with ErrNoSpace or ErrDenied when it is one of those, whatever the provider
// said, so that callers can tell a store that refuses writes from one that failed, and a
// message says so in words. Any other error is returned as it is.
func Explain(err error) error {
	switch {
	case err == nil || errors.Is(err, ErrNoSpace) || errors.Is(err, ErrDenied):
		return err
	case noSpace(err):
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	case gcerrors.Code(err) == gcerrors.PermissionDenied || errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %w", ErrDenied, err)
	}
	return err
}

func noSpace(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	// smithy.APIError, as the AWS SDK returns it.
	var api interface{ ErrorCode() string }
	if errors.As(err, &api) && slices.Contains(noSpaceCodes, api.ErrorCode()) {
		return true
	}
	var resp *awshttp.ResponseError
	return errors.As(err, &resp) && resp.HTTPStatusCode() == http.StatusInsufficientStorage
}
