package bucket_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"testing"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
)

// apiError stands in for the AWS SDK's smithy.APIError.
type apiError string

func (e apiError) Error() string     { return "api error " + string(e) }
func (e apiError) ErrorCode() string { return string(e) }

func TestExplain(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want error // nil: returned as it is
	}{
		{"a full disk", &os.PathError{Op: "write", Path: "/b/x.tmp", Err: syscall.ENOSPC}, bucket.ErrNoSpace},
		{"a disk quota", &os.PathError{Op: "write", Path: "/b/x.tmp", Err: syscall.EDQUOT}, bucket.ErrNoSpace},
		{"a full MinIO", apiError("XMinioStorageFull"), bucket.ErrNoSpace},
		{"a Ceph RGW quota", apiError("QuotaExceeded"), bucket.ErrNoSpace},
		{"a read-only directory", &os.PathError{Op: "open", Path: "/b/x.tmp", Err: fs.ErrPermission}, bucket.ErrDenied},
		{"a server error", apiError("InternalError"), nil},
		{"a timeout", os.ErrDeadlineExceeded, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wrapped := fmt.Errorf("committing blob: %w", tt.err)
			got := bucket.Explain(wrapped)
			if tt.want == nil {
				if got != wrapped {
					t.Errorf("Explain = %v, want the error as it was", got)
				}
				return
			}
			if !errors.Is(got, tt.want) || !errors.Is(got, tt.err) {
				t.Errorf("Explain = %v, want it marked %v and still wrapping %v", got, tt.want, tt.err)
			}
			if again := bucket.Explain(got); again != got {
				t.Errorf("Explain twice = %v, want it marked once", again)
			}
		})
	}
}
