package copier

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// uploader makes the registry requests of a restore that go-containerregistry makes in more
// requests than the protocol needs; a restore of many small images is bound by the registry's
// cost per request. It sends a blob in two requests: a POST that opens an upload and a PUT
// that carries the bytes and the digest (the distribution spec's monolithic upload), where
// go-containerregistry's writer streams every blob in four (HEAD, POST, PATCH, PUT). It mounts a
// blob with one POST, where go-containerregistry looks for it first. And it lists tags, looks
// for manifests and puts them through the same authenticated transport: one handshake (a ping
// and, with bearer tokens, a token) a repository, where go-containerregistry's pusher and
// puller each make their own.
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

func manifestsURL(repo name.Repository) string {
	return fmt.Sprintf("%s://%s/v2/%s/manifests/", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr())
}

// has reports whether repo holds blob h.
func (u *uploader) has(ctx context.Context, repo name.Repository, h v1.Hash) (bool, error) {
	return u.exists(ctx, repo, blobsURL(repo), h, nil)
}

// hasManifest reports whether repo holds the manifest whose digest is h.
func (u *uploader) hasManifest(ctx context.Context, repo name.Repository, h v1.Hash) (bool, error) {
	return u.exists(ctx, repo, manifestsURL(repo), h, http.Header{"Accept": {manifestAccept}})
}

// exists reports whether the registry answers a HEAD of h under base, with hdr, with 200
// rather than 404. An answer naming another digest (Docker-Content-Digest) counts as 404: what
// the registry has is not what would be sent.
func (u *uploader) exists(ctx context.Context, repo name.Repository, base string, h v1.Hash, hdr http.Header) (bool, error) {
	var found bool
	err := retry(ctx, u.backoff, func() error {
		resp, err := u.do(ctx, repo, http.MethodHead, base+h.String(), hdr, nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			found = false
			return nil
		}
		if err := transport.CheckError(resp, http.StatusOK); err != nil {
			return err
		}
		d := resp.Header.Get("Docker-Content-Digest")
		found = d == "" || d == h.String()
		return nil
	})
	return found, err
}

// upload sends data, whose digest is h, into repo.
func (u *uploader) upload(ctx context.Context, repo name.Repository, h v1.Hash, data []byte) error {
	return u.uploadStream(ctx, repo, h, bytesBody(data))
}

// putManifest puts raw, a manifest of media type mt, at ref (a tag or a digest) in repo, byte
// for byte. A manifest that refers to a subject is put as any other: the registry's referrers
// fallback tag is not written (go-containerregistry's remote.Put would), as a restore gives a
// repository the tags its backup recorded and no other.
func (u *uploader) putManifest(ctx context.Context, repo name.Repository, ref string, mt types.MediaType, raw []byte) error {
	body := bytesBody(raw)
	return retry(ctx, u.backoff, func() error {
		resp, err := u.do(ctx, repo, http.MethodPut, manifestsURL(repo)+ref, http.Header{"Content-Type": {string(mt)}}, &body)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return transport.CheckError(resp, http.StatusOK, http.StatusCreated, http.StatusAccepted)
	})
}

// blobBody is the bytes of a blob, for a request: open returns them from the start, as many
// times as the request is sent.
type blobBody struct {
	size int64
	open func() (io.ReadCloser, error)
	// once marks bytes the registry appends to an upload session. A request is not sent
	// again with them: the session may hold part of them already (the network failed after
	// the registry read some), and sent again they would follow that part. A new upload takes
	// the retry.
	once bool
}

func bytesBody(data []byte) blobBody {
	return blobBody{size: int64(len(data)), open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
}

// uploadStream sends the blob body holds, whose digest is h, into repo; the PUT streams it. A
// body that fails to read (a blob that does not match its digest) fails the upload before its
// last bytes are sent, so the registry never completes it. A PUT that fails in a way worth
// retrying goes again in a new upload (blobBody.once).
func (u *uploader) uploadStream(ctx context.Context, repo name.Repository, h v1.Hash, body blobBody) error {
	body.once = true
	return retry(ctx, u.backoff, func() error {
		resp, err := u.do(ctx, repo, http.MethodPost, blobsURL(repo)+"uploads/", nil, nil)
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
		resp, err = u.do(ctx, repo, http.MethodPut, loc.String(), http.Header{"Content-Type": {"application/octet-stream"}}, &body)
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
		resp, err := u.do(ctx, repo, http.MethodGet, list, nil, nil)
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
		resp, err := u.do(ctx, repo, http.MethodPost, blobsURL(repo)+"uploads/?"+q.Encode(), nil, nil)
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
				if resp, err := u.do(ctx, repo, http.MethodDelete, loc.String(), nil, nil); err == nil {
					resp.Body.Close()
				}
			}
			return nil
		}
		return transport.CheckError(resp, http.StatusCreated)
	})
	return mounted, err
}

func (u *uploader) do(ctx context.Context, repo name.Repository, method, target string, hdr http.Header, body *blobBody) (*http.Response, error) {
	t, err := u.transports.get(ctx, repo)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, err
	}
	maps.Copy(req.Header, hdr)
	if body != nil {
		rc, err := body.open()
		if err != nil {
			return nil, err
		}
		req.Body, req.ContentLength = &sentBody{ReadCloser: rc}, body.size
		if !body.once {
			// The retrying transport sends the request again with the body opened anew.
			req.GetBody = func() (io.ReadCloser, error) {
				rc, err := body.open()
				if err != nil {
					return nil, err
				}
				return &sentBody{ReadCloser: rc}, nil
			}
		}
	}
	return (&http.Client{Transport: t}).Do(req)
}

// sentBody is a request body that knows whether it was handed to a transport.
// go-containerregistry's bearer transport sends a request again after a 401 that renewed its
// token, with the body the first send had; the retrying transport below it then opens the body
// anew, or, for bytes sent once, fails the request so that the upload starts over
// (errBodySent).
type sentBody struct {
	io.ReadCloser
	handed atomic.Bool
}
