package copier

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// Stats count the blobs (layers, configs and manifests) and bytes a copy saw.
type Stats struct {
	BlobsTotal, BlobsUploaded, BlobsSkipped int64
	BytesTotal, BytesUploaded, BytesSkipped int64
}

type counters struct {
	blobsTotal, blobsUploaded, blobsSkipped atomic.Int64
	bytesTotal, bytesUploaded, bytesSkipped atomic.Int64
}

func (c *counters) add(size int64, uploaded bool) {
	c.blobsTotal.Add(1)
	c.bytesTotal.Add(size)
	if uploaded {
		c.blobsUploaded.Add(1)
		c.bytesUploaded.Add(size)
	} else {
		c.blobsSkipped.Add(1)
		c.bytesSkipped.Add(size)
	}
}

func (c *counters) stats() Stats {
	return Stats{
		BlobsTotal: c.blobsTotal.Load(), BlobsUploaded: c.blobsUploaded.Load(), BlobsSkipped: c.blobsSkipped.Load(),
		BytesTotal: c.bytesTotal.Load(), BytesUploaded: c.bytesUploaded.Load(), BytesSkipped: c.bytesSkipped.Load(),
	}
}

// Copier backs images up from a registry into a store. It is safe for concurrent use: images
// copied at once share the Jobs limit, and a blob two images share is fetched once.
type Copier struct {
	store  *imagestore.Store
	opts   Options
	puller *puller
	sem    chan struct{}
	small  chan struct{} // slots of blobs under SmallBlobSize
	counts counters

	mu      sync.Mutex
	flights map[v1.Hash]*flight // manifests being copied
	running sync.WaitGroup      // every flight's goroutine
	copied  sync.Map            // v1.Hash -> v1.Descriptor of manifests stored by this Copier
	// stored are the blobs this Copier wrote or found in the store. What a copy found stays
	// there while it runs: a backup holds garbage collections off with its in-progress marker
	// until it commits (package imagestore), and so a blob is looked for once a Copier, not
	// once for every image that shares it.
	stored sync.Map // v1.Hash -> struct{}
}

// flight is one copy of a manifest that several callers wait for. It runs under its own
// context, which ends when the last caller waiting for it has gone: one caller's cancellation
// does not fail the others.
type flight struct {
	done    chan struct{}
	desc    v1.Descriptor
	err     error
	waiters int
	cancel  context.CancelFunc
}

// New returns a Copier into store.
func New(store *imagestore.Store, opts Options) (*Copier, error) {
	p, err := newPuller(&opts)
	if err != nil {
		return nil, err
	}
	sem := opts.Slots
	if sem == nil {
		sem = make(chan struct{}, opts.jobs())
	}
	small := opts.SmallSlots
	if small == nil {
		small = make(chan struct{}, SmallBlobsPerJob*opts.jobs())
	}
	return &Copier{store: store, opts: opts, puller: p, sem: sem, small: small, flights: map[v1.Hash]*flight{}}, nil
}

// Stats returns the counts so far.
func (c *Copier) Stats() Stats { return c.counts.stats() }

// ParseReference parses a digest reference as the copier and pusher accept them.
func (c *Copier) ParseReference(ref string) (name.Digest, error) {
	return name.NewDigest(ref, c.opts.NameOptions()...)
}

// Copy stores the image ref names, with every manifest it reaches (all platforms of an index),
// their configs and layers, byte for byte. Manifests are stored after everything they
// reference, so a stored manifest always has its content beside it. An image already stored
// costs no registry request. It returns the image's top descriptor.
func (c *Copier) Copy(ctx context.Context, ref name.Digest) (v1.Descriptor, error) {
	h, err := v1.NewHash(ref.DigestStr())
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("reference %s: %w", ref, err)
	}
	if err := imagestore.ValidateDigest(h); err != nil {
		return v1.Descriptor{}, fmt.Errorf("reference %s: %w", ref, err)
	}
	desc, err := c.copyManifest(ctx, ref.Context(), v1.Descriptor{Digest: h}, 0)
	if err != nil {
		// A store that refuses writes or is full fails every image alike; say so first.
		return v1.Descriptor{}, bucket.Explain(err)
	}
	return desc, nil
}

// copyManifest copies a manifest and what it references once per Copier: concurrent callers
// of one digest share one flight, which runs until the last of them has gone, and later
// callers its result. An index may list one child
// many times, at every level; copied again each time, that is exponential work. (A manifest
// cannot reach itself: it would have to contain its own digest.)
func (c *Copier) copyManifest(ctx context.Context, repo name.Repository, desc v1.Descriptor, depth int) (v1.Descriptor, error) {
	if depth > imagestore.MaxDepth {
		return desc, fmt.Errorf("manifest %s is nested more than %d levels deep", desc.Digest, imagestore.MaxDepth)
	}
	if d, ok := c.copied.Load(desc.Digest); ok {
		return d.(v1.Descriptor), nil
	}
	f := c.join(ctx, repo, desc, depth)
	select {
	case <-f.done:
		return f.desc, f.err
	case <-ctx.Done():
		c.leave(desc.Digest, f)
		return desc, ctx.Err()
	}
}

// join returns the flight copying desc, starting one when none runs.
func (c *Copier) join(ctx context.Context, repo name.Repository, desc v1.Descriptor, depth int) *flight {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.flights[desc.Digest]; ok {
		f.waiters++
		return f
	}
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &flight{done: make(chan struct{}), waiters: 1, cancel: cancel}
	c.flights[desc.Digest] = f
	c.running.Go(func() {
		defer cancel()
		d, err := c.copyManifestOnce(fctx, repo, desc, depth)
		c.mu.Lock()
		if c.flights[desc.Digest] == f {
			delete(c.flights, desc.Digest)
		}
		if err == nil {
			c.copied.Store(desc.Digest, d)
		}
		c.mu.Unlock()
		f.desc, f.err = d, err
		close(f.done)
	})
	return f
}

// Wait returns once no manifest copy runs: copies whose callers have all gone end soon after
// them, and a Copier's owner waits for them before it closes the store.
func (c *Copier) Wait() { c.running.Wait() }

// leave stops waiting for f; the last caller to leave cancels it, and a later caller starts
// a new one.
func (c *Copier) leave(h v1.Hash, f *flight) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.waiters--; f.waiters == 0 {
		f.cancel()
		if c.flights[h] == f {
			delete(c.flights, h)
		}
	}
}

func (c *Copier) copyManifestOnce(ctx context.Context, repo name.Repository, desc v1.Descriptor, depth int) (v1.Descriptor, error) {
	stored, err := c.store.Has(ctx, desc.Digest)
	if err != nil {
		return desc, err
	}
	var raw []byte
	if stored {
		if raw, err = c.store.ReadBlob(ctx, desc.Digest, imagestore.MaxManifestSize); err != nil {
			return desc, err
		}
		desc.Size = int64(len(raw))
		desc.MediaType = sniffMediaType(desc.MediaType, raw)
	} else {
		err := retry(ctx, c.opts.backoff(), func() error {
			var err error
			desc, raw, err = c.puller.manifest(ctx, repo, desc.Digest)
			return err
		})
		if err != nil {
			return desc, err
		}
	}
	kids, err := imagestore.Children(desc, raw)
	if err != nil {
		return desc, fmt.Errorf("manifest %s@%s: %w", repo, desc.Digest, err)
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, k := range kids {
		g.Go(func() error {
			if k.MediaType.IsIndex() || k.MediaType.IsImage() {
				_, err := c.copyManifest(gctx, repo, k, depth+1)
				return err
			}
			return c.copyBlob(gctx, repo, k)
		})
	}
	if err := g.Wait(); err != nil {
		return desc, err
	}

	// The manifest goes in last, once everything it references is stored; a stored manifest
	// was found, and one fetched was missing a moment ago.
	if !stored {
		if err := c.store.WriteBlob(ctx, desc, raw); err != nil {
			return desc, err
		}
	}
	c.counts.add(desc.Size, !stored)
	c.report()
	return desc, nil
}

func (c *Copier) copyBlob(ctx context.Context, repo name.Repository, d v1.Descriptor) error {
	if _, ok := c.stored.Load(d.Digest); ok {
		c.counts.add(d.Size, false)
		c.report()
		return nil
	}
	slots := c.sem
	if d.Size < SmallBlobSize {
		slots = c.small
	}
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-slots }()
	var wrote bool
	err := retry(ctx, c.opts.backoff(), func() error {
		var err error
		wrote, err = c.store.PutBlob(ctx, d, func(ctx context.Context) (io.ReadCloser, error) {
			return c.puller.blob(ctx, repo, d.Digest)
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("copying blob %s@%s: %w", repo, d.Digest, err)
	}
	c.stored.Store(d.Digest, struct{}{})
	c.counts.add(d.Size, wrote)
	c.report()
	return nil
}

func (c *Copier) report() {
	if c.opts.Progress != nil {
		c.opts.Progress(c.counts.stats())
	}
}

// sniffMediaType returns mt when it names a manifest, else the media type the manifest's own
// JSON declares, else the OCI type its shape implies (OCI lets manifests omit mediaType).
func sniffMediaType(mt types.MediaType, raw []byte) types.MediaType {
	if mt.IsIndex() || mt.IsImage() {
		return mt
	}
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(raw, &probe) == nil {
		switch {
		case probe.MediaType != "":
			return probe.MediaType
		case probe.Manifests != nil:
			return types.OCIImageIndex
		}
	}
	return types.OCIManifestSchema1
}
