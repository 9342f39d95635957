package copier

import (
	"bytes"
	"context"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// uploader sends a blob held in memory, such as an image's config, in two requests: a POST
// that opens an upload and a PUT that carries the bytes and the digest (the distribution
// spec's monolithic upload). go-containerregistry's writer streams every blob, which takes a
// HEAD, a POST, a PATCH and a PUT; a restore of many small images is bound by the registry's
// cost per request, and a config is one blob of each image.
type uploader struct {
	transports *transports
	backoff    remote.Backoff
}

func newUploader(opts *Options) (*uploader, error) {
	ts, err := newTransports(opts, transport.PushScope)
	if err != nil {
		return nil, err
	}
	return &uploader{transports: ts, backoff: opts.backoff()}, nil
}

func blobsURL(repo name.Repository) string {
	return fmt.Sprintf("%s://%s/v2/%s/blobs/", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr())
}

// has reports whether repo holds blob h.
func (u *uploader) has(ctx context.Context, repo name.Repository, h v1.Hash) (bool, error) {
	var found bool
	err := retry(ctx, u.backoff, func() error {
		resp, err := u.do(ctx, repo, http.MethodHead, blobsURL(repo)+h.String(), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			found = false
			return nil
		}
		found = true
		return transport.CheckError(resp, http.StatusOK)
	})
	return found, err
}

// upload sends data, whose digest is h, into repo.
func (u *uploader) upload(ctx context.Context, repo name.Repository, h v1.Hash, data []byte) error {
	return retry(ctx, u.backoff, func() error {
		resp, err := u.do(ctx, repo, http.MethodPost, blobsURL(repo)+"uploads/", nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if err := transport.CheckError(resp, http.StatusAccepted); err != nil {
			return err
		}
		loc, err := resp.Location()
		if err != nil {
			return fmt.Errorf("upload of %s to %s: %w", h, repo, err)
		}
		q := loc.Query()
		q.Set("digest", h.String())
		loc.RawQuery = q.Encode()
		resp, err = u.do(ctx, repo, http.MethodPut, loc.String(), data)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return transport.CheckError(resp, http.StatusCreated)
	})
}

func (u *uploader) do(ctx context.Context, repo name.Repository, method, url string, body []byte) (*http.Response, error) {
	t, err := u.transports.get(ctx, repo)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	if body != nil {
		// A bytes.Reader body can be sent again: the retrying transport rewinds it.
		req, err = http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	return (&http.Client{Transport: t}).Do(req)
}
