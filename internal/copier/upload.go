package copier

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// uploader makes the registry requests of a restore that go-containerregistry makes in more
// requests than the protocol needs; a restore of many small images is bound by the registry's
// cost per request. It sends a blob in two requests: a POST that opens an upload and a PUT
// that carries the bytes and the digest (the distribution spec's monolithic upload), where
// go-containerregistry's writer streams every blob in four (HEAD, POST, PATCH, PUT). It mounts a
// blob with one POST, where go-containerregistry looks for it first. And it lists a
// repository's tags through the same authenticated transport.
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
	return u.uploadStream(ctx, repo, h, blobBody{size: int64(len(data)), open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}})
}

// blobBody is the bytes of a blob, for a request: open returns them from the start, as many
// times as the request is sent.
type blobBody struct {
	size int64
	open func() (io.ReadCloser, error)
}

// uploadStream sends the blob body holds, whose digest is h, into repo; the PUT streams it. A
// body that fails to read (a blob that does not match its digest) fails the upload before its
// last bytes are sent, so the registry never completes it.
func (u *uploader) uploadStream(ctx context.Context, repo name.Repository, h v1.Hash, body blobBody) error {
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
		resp, err = u.do(ctx, repo, http.MethodPut, loc.String(), &body)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return transport.CheckError(resp, http.StatusCreated)
	})
}

// hasTags reports whether repo has a tag; a repository the registry does not know has none.
func (u *uploader) hasTags(ctx context.Context, repo name.Repository) (bool, error) {
	var tagged bool
	err := retry(ctx, u.backoff, func() error {
		list := fmt.Sprintf("%s://%s/v2/%s/tags/list?n=1", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr())
		resp, err := u.do(ctx, repo, http.MethodGet, list, nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			tagged = false
			return nil
		}
		if err := transport.CheckError(resp, http.StatusOK); err != nil {
			return err
		}
		var tags struct {
			Tags []string `json:"tags"`
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tags); err != nil {
			return fmt.Errorf("reading the tags of %s: %w", repo, err)
		}
		tagged = len(tags.Tags) > 0
		return nil
	})
	return tagged, err
}

// mount asks the registry to give repo the blob h that repository from has. It reports false
// when the registry opened an upload instead (it may not mount from there), which it then
// cancels: the caller sends the blob.
func (u *uploader) mount(ctx context.Context, repo, from name.Repository, h v1.Hash) (bool, error) {
	var mounted bool
	err := retry(ctx, u.backoff, func() error {
		q := url.Values{"mount": {h.String()}, "from": {from.RepositoryStr()}}
		resp, err := u.do(ctx, repo, http.MethodPost, blobsURL(repo)+"uploads/?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusCreated:
			mounted = true
			return nil
		case http.StatusAccepted:
			mounted = false
			if loc, err := resp.Location(); err == nil {
				if resp, err := u.do(ctx, repo, http.MethodDelete, loc.String(), nil); err == nil {
					resp.Body.Close()
				}
			}
			return nil
		}
		return transport.CheckError(resp, http.StatusCreated)
	})
	return mounted, err
}

func (u *uploader) do(ctx context.Context, repo name.Repository, method, target string, body *blobBody) (*http.Response, error) {
	t, err := u.transports.get(ctx, repo)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, err
	}
	if body != nil {
		rc, err := body.open()
		if err != nil {
			return nil, err
		}
		// The retrying transport sends the request again with the body opened anew.
		req.Body, req.GetBody, req.ContentLength = rc, body.open, body.size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	return (&http.Client{Transport: t}).Do(req)
}
