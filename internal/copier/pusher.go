package copier

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// Pusher restores stored images into a registry. A blob the target repository already has is
// not sent; a blob this Pusher already pushed to another repository of the registry is mounted
// from there instead of uploaded. Manifests are pushed byte for byte, so digests are kept.
type Pusher struct {
	store  *imagestore.Store
	opts   Options
	remote []remote.Option
	counts counters
	// slots bound the layers sent at once, shared with every Copier and Pusher given the same
	// Options.Slots.
	slots chan struct{}

	mu     sync.Mutex
	pushed map[v1.Hash]name.Repository // blob -> a repository of this registry that has it
	// sending are the layers a push of this Pusher is sending; closed when it has ended.
	sending map[v1.Hash]chan struct{}
}

// NewPusher returns a Pusher from store.
func NewPusher(ctx context.Context, store *imagestore.Store, opts Options) (*Pusher, error) {
	rt, err := opts.roundTripper()
	if err != nil {
		return nil, err
	}
	ropts := append(opts.remoteOptions(), remote.WithTransport(rt), remote.WithContext(ctx))
	p, err := remote.NewPusher(ropts...)
	if err != nil {
		return nil, err
	}
	slots := opts.Slots
	if slots == nil {
		slots = make(chan struct{}, opts.jobs())
	}
	return &Pusher{store: store, opts: opts, remote: append(ropts, remote.Reuse(p)), slots: slots,
		pushed: map[v1.Hash]name.Repository{}, sending: map[v1.Hash]chan struct{}{}}, nil
}

// Stats returns the counts so far; BytesUploaded counts the bytes sent, BytesSkipped those the
// registry had or mounted.
func (p *Pusher) Stats() Stats { return p.counts.stats() }

// Repository parses a repository name with the Pusher's options.
func (p *Pusher) Repository(repo string) (name.Repository, error) {
	return name.NewRepository(repo, p.opts.NameOptions()...)
}

// Push pushes the stored image desc names into repo by digest, then tags it with tags in order.
// The stored manifests are not trusted: nesting deeper than imagestore.MaxDepth or a cycle
// fails the push, and a manifest listed many times in the tree is pushed once.
func (p *Pusher) Push(ctx context.Context, desc v1.Descriptor, repo name.Repository, tags []string) error {
	// Tags may come from the bucket: repo.Tag does not check them, and one such as
	// "x/../../other" would put a path into the registry's URL.
	for _, tag := range tags {
		if _, err := name.NewTag(repo.Name()+":"+tag, p.opts.NameOptions()...); err != nil {
			return fmt.Errorf("invalid tag %q for %s: %w", tag, repo, err)
		}
	}
	t, err := p.push(ctx, desc, repo, nil, map[v1.Hash]remote.Taggable{})
	if err != nil {
		return err
	}
	for _, tag := range tags {
		if err := remote.Tag(repo.Tag(tag), t, p.remote...); err != nil {
			return fmt.Errorf("tagging %s:%s: %w", repo, tag, err)
		}
	}
	return nil
}

// push pushes desc and what it references, children first. ancestors are the indexes desc was
// reached through, outermost first; done holds what this Push already pushed.
func (p *Pusher) push(ctx context.Context, desc v1.Descriptor, repo name.Repository, ancestors []v1.Hash, done map[v1.Hash]remote.Taggable) (remote.Taggable, error) {
	if t, ok := done[desc.Digest]; ok {
		return t, nil
	}
	if err := imagestore.ValidateDigest(desc.Digest); err != nil {
		return nil, err
	}
	if slices.Contains(ancestors, desc.Digest) {
		return nil, fmt.Errorf("index %s contains itself: manifests form a cycle", desc.Digest)
	}
	if len(ancestors) > imagestore.MaxDepth {
		return nil, fmt.Errorf("manifest %s is nested more than %d levels deep", desc.Digest, imagestore.MaxDepth)
	}
	t, err := p.pushOne(ctx, desc, repo, ancestors, done)
	if err != nil {
		return nil, err
	}
	done[desc.Digest] = t
	return t, nil
}

func (p *Pusher) pushOne(ctx context.Context, desc v1.Descriptor, repo name.Repository, ancestors []v1.Hash, done map[v1.Hash]remote.Taggable) (remote.Taggable, error) {
	ref := repo.Digest(desc.Digest.String())
	switch {
	case desc.MediaType.IsIndex():
		idx, err := p.store.ImageIndex(ctx, desc)
		if err != nil {
			return nil, err
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		// Children first, each through this Pusher so that their layers mount and count; the
		// index's own push then finds them present.
		path := append(slices.Clip(ancestors), desc.Digest)
		for _, child := range m.Manifests {
			if _, err := p.push(ctx, child, repo, path, done); err != nil {
				return nil, err
			}
		}
		if err := remote.WriteIndex(ref, idx, p.remote...); err != nil {
			return nil, fmt.Errorf("pushing index %s: %w", ref, err)
		}
		p.counts.add(desc.Size, true)
		return idx, nil
	case desc.MediaType.IsImage():
		img, err := p.store.Image(ctx, desc)
		if err != nil {
			return nil, err
		}
		// A manifest the repository already has comes with everything it references: one
		// HEAD makes a restarted restore skip what it finished.
		if d, err := remote.Head(ref, p.remote...); err == nil && d.Digest == desc.Digest {
			p.counts.add(desc.Size, false)
			layers, err := img.Layers()
			if err != nil {
				return nil, err
			}
			for _, l := range layers {
				size, err := l.Size()
				if err != nil {
					return nil, err
				}
				p.counts.add(size, false)
			}
			return img, nil
		}
		// Images pushed at once often share layers (a base image): a layer another push is
		// sending is waited for and then mounted, not sent twice.
		layers, err := img.Layers()
		if err != nil {
			return nil, err
		}
		mine, others, err := p.claim(layers)
		defer p.release(mine)
		if err != nil {
			return nil, err
		}
		for _, sent := range others {
			select {
			case <-sent:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		wrapped, err := p.mountable(ctx, img, repo)
		if err != nil {
			return nil, err
		}
		if err := remote.Write(ref, wrapped, p.remote...); err != nil {
			return nil, fmt.Errorf("pushing image %s: %w", ref, err)
		}
		p.counts.add(desc.Size, true)
		p.record(wrapped, repo)
		return img, nil
	default:
		return nil, fmt.Errorf("%s: unsupported media type %q", ref, desc.MediaType)
	}
}

// claim marks the layers that no push of this Pusher has sent or is sending as sent by the
// caller (mine, for release), and returns the sends of other pushes to wait for. One call
// claims all at once, so a push only waits for pushes that claimed before it: no two pushes
// wait for each other.
func (p *Pusher) claim(layers []v1.Layer) (mine []v1.Hash, others []chan struct{}, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return mine, nil, err
		}
		if _, ok := p.pushed[h]; ok || slices.Contains(mine, h) {
			continue
		}
		if sent, ok := p.sending[h]; ok {
			others = append(others, sent)
			continue
		}
		p.sending[h] = make(chan struct{})
		mine = append(mine, h)
	}
	return mine, others, nil
}

// release ends the caller's claims: pushes waiting for them go on, and mount what was sent.
func (p *Pusher) release(mine []v1.Hash) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range mine {
		close(p.sending[h])
		delete(p.sending, h)
	}
}

// mountable wraps img so that each layer counts the bytes it sends, holds a transfer slot
// while it is sent and, when this Pusher already pushed it to another repository of the same
// registry, is mounted from there.
func (p *Pusher) mountable(ctx context.Context, img v1.Image, repo name.Repository) (*countingImage, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	out := &countingImage{Image: img}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return nil, err
		}
		size, err := l.Size()
		if err != nil {
			return nil, err
		}
		cl := &countingLayer{Layer: l, counts: &p.counts, size: size, ctx: ctx, slots: p.slots}
		out.counted = append(out.counted, cl)
		if from, ok := p.pushed[h]; ok && from.RegistryStr() == repo.RegistryStr() && from.String() != repo.String() {
			out.layers = append(out.layers, &remote.MountableLayer{Layer: cl, Reference: from.Digest(h.String())})
		} else {
			out.layers = append(out.layers, cl)
		}
	}
	return out, nil
}

// record notes where img's layers now are and counts the ones never read as skipped.
func (p *Pusher) record(img *countingImage, repo name.Repository) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range img.counted {
		if h, err := l.Digest(); err == nil {
			p.pushed[h] = repo
		}
		if !l.read.Load() {
			p.counts.add(l.size, false)
		}
	}
}

type countingImage struct {
	v1.Image
	layers  []v1.Layer
	counted []*countingLayer
}

func (i *countingImage) Layers() ([]v1.Layer, error) { return i.layers, nil }

// countingLayer counts the layer as uploaded once the registry asks for its bytes, and holds
// one of slots from then until the bytes are closed.
type countingLayer struct {
	v1.Layer
	counts *counters
	size   int64
	read   atomic.Bool
	// ctx is the push's: waiting for a slot ends with it.
	ctx   context.Context
	slots chan struct{}
}

func (l *countingLayer) Compressed() (io.ReadCloser, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.ctx.Done():
		return nil, l.ctx.Err()
	}
	release := sync.OnceFunc(func() { <-l.slots })
	rc, err := l.Layer.Compressed()
	if err != nil {
		release()
		return nil, err
	}
	if l.read.CompareAndSwap(false, true) {
		l.counts.add(l.size, true)
	}
	// The slot goes back when the bytes are closed or read to their end, or at the latest
	// with the push: a body a failed request never closes holds it no longer.
	stop := context.AfterFunc(l.ctx, release)
	return &slotReader{ReadCloser: rc, release: func() { stop(); release() }}, nil
}

// slotReader gives its transfer slot back when it is closed or read to its end.
type slotReader struct {
	io.ReadCloser
	release func()
}

func (r *slotReader) Read(b []byte) (int, error) {
	n, err := r.ReadCloser.Read(b)
	if err != nil {
		r.release()
	}
	return n, err
}

func (r *slotReader) Close() error {
	defer r.release()
	return r.ReadCloser.Close()
}
