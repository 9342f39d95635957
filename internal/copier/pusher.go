package copier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// Pusher restores stored images into a registry. A blob the target repository already has is
// not sent; a blob this Pusher already pushed to another repository of the registry is mounted
// from there instead of uploaded. Manifests are pushed byte for byte, so digests are kept.
type Pusher struct {
	store  *imagestore.Store
	opts   Options
	up     *uploader
	counts counters
	// slots bound the layers sent at once, shared with every Copier and Pusher given the same
	// Options.Slots; small bounds those under SmallBlobSize (Options.SmallSlots).
	slots, small chan struct{}

	mu     sync.Mutex
	pushed map[v1.Hash]name.Repository // blob -> a repository of this registry that has it
	// fresh says of each repository looked at whether it had no tags then, so that a manifest
	// or config need not be looked for in it (see isFresh).
	fresh map[string]bool
	// sent are the repository@digest of the manifests, configs and layers this Pusher put.
	sent map[string]bool
	// sending are the layers a push of this Pusher is sending; closed when it has ended.
	sending map[v1.Hash]chan struct{}
}

// NewPusher returns a Pusher from store.
func NewPusher(store *imagestore.Store, opts Options) (*Pusher, error) {
	up, err := newUploader(&opts)
	if err != nil {
		return nil, err
	}
	slots := opts.Slots
	if slots == nil {
		slots = make(chan struct{}, opts.jobs())
	}
	small := opts.SmallSlots
	if small == nil {
		small = make(chan struct{}, SmallBlobsPerJob*opts.jobs())
	}
	return &Pusher{store: store, opts: opts, up: up, slots: slots, small: small,
		pushed: map[v1.Hash]name.Repository{}, sending: map[v1.Hash]chan struct{}{}, fresh: map[string]bool{}, sent: map[string]bool{}}, nil
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
	// An image's manifest put by a tag is stored by digest too: its tags are its only puts.
	var put []name.Reference
	for _, tag := range tags {
		put = append(put, repo.Tag(tag))
	}
	t, putDone, err := p.push(ctx, desc, repo, nil, map[v1.Hash]remote.Taggable{}, put)
	if err != nil {
		return err
	}
	if putDone {
		return nil
	}
	for _, tag := range tags {
		if err := p.putManifest(ctx, repo.Tag(tag), t, desc.MediaType); err != nil {
			return fmt.Errorf("tagging %s:%s: %w", repo, tag, err)
		}
	}
	return nil
}

// push pushes desc and what it references, children first. ancestors are the indexes desc was
// reached through, outermost first; done holds what this Push already pushed. An image pushed
// whole has its manifest put at each of put (by digest when put is empty), and push then
// reports putDone; a manifest found present, and an index, are put by digest only.
func (p *Pusher) push(ctx context.Context, desc v1.Descriptor, repo name.Repository, ancestors []v1.Hash, done map[v1.Hash]remote.Taggable, put []name.Reference) (t remote.Taggable, putDone bool, err error) {
	if t, ok := done[desc.Digest]; ok {
		return t, false, nil
	}
	if err := imagestore.ValidateDigest(desc.Digest); err != nil {
		return nil, false, err
	}
	if slices.Contains(ancestors, desc.Digest) {
		return nil, false, fmt.Errorf("index %s contains itself: manifests form a cycle", desc.Digest)
	}
	if len(ancestors) > imagestore.MaxDepth {
		return nil, false, fmt.Errorf("manifest %s is nested more than %d levels deep", desc.Digest, imagestore.MaxDepth)
	}
	t, putDone, err = p.pushOne(ctx, desc, repo, ancestors, done, put)
	if err != nil {
		return nil, false, err
	}
	done[desc.Digest] = t
	return t, putDone, nil
}

func (p *Pusher) pushOne(ctx context.Context, desc v1.Descriptor, repo name.Repository, ancestors []v1.Hash, done map[v1.Hash]remote.Taggable, put []name.Reference) (remote.Taggable, bool, error) {
	ref := repo.Digest(desc.Digest.String())
	switch {
	case desc.MediaType.IsIndex():
		idx, err := p.store.ImageIndex(ctx, desc)
		if err != nil {
			return nil, false, err
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, false, err
		}
		// Children first, each through this Pusher so that their layers mount and count; the
		// index's own push then finds them present.
		path := append(slices.Clip(ancestors), desc.Digest)
		for _, child := range m.Manifests {
			if _, _, err := p.push(ctx, child, repo, path, done, nil); err != nil {
				return nil, false, err
			}
		}
		if err := p.putManifest(ctx, ref, idx, desc.MediaType); err != nil {
			return nil, false, fmt.Errorf("pushing index %s: %w", ref, err)
		}
		p.counts.add(desc.Size, true)
		return idx, false, nil
	case desc.MediaType.IsImage():
		img, err := p.store.Image(ctx, desc)
		if err != nil {
			return nil, false, err
		}
		// A manifest the repository already has comes with everything it references: one
		// HEAD makes a restarted restore skip what it finished.
		fresh := p.isFresh(ctx, repo)
		if p.wasSent(repo, desc.Digest) {
			return img, false, p.countPresent(img, desc)
		}
		if !fresh {
			if has, err := p.up.hasManifest(ctx, repo, desc.Digest); err == nil && has {
				return img, false, p.countPresent(img, desc)
			}
		}
		if len(put) == 0 {
			put = []name.Reference{ref}
		}
		return img, true, p.pushImage(ctx, img, desc, repo, put, fresh)
	default:
		return nil, false, fmt.Errorf("%s: unsupported media type %q", ref, desc.MediaType)
	}
}

// putManifest puts t's manifest, of media type mt (its descriptor's), whose blobs and
// children are in the registry, at ref, and puts it again when the registry answers that it
// lacks one of them. Distribution's filesystem storage rewrites a repository's link files in
// place, so while another client (another restore of the same target) sends the same blobs,
// the registry may for a moment not see one it has.
func (p *Pusher) putManifest(ctx context.Context, ref name.Reference, t remote.Taggable, mt types.MediaType) error {
	raw, err := t.RawManifest()
	if err != nil {
		return err
	}
	return retryIf(ctx, p.opts.backoff(), lacksReferenced, func() error {
		return p.up.putManifest(ctx, ref.Context(), ref.Identifier(), mt, raw)
	})
}

// lacksReferenced reports whether err is a registry's refusal of a manifest for a blob or
// child manifest it says it lacks.
func lacksReferenced(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && slices.ContainsFunc(terr.Errors, func(d transport.Diagnostic) bool {
		return d.Code == transport.ManifestBlobUnknownErrorCode || d.Code == transport.BlobUnknownErrorCode
	})
}

// isFresh reports whether repo had no tags when this Pusher first looked: one tag list a
// repository instead of a manifest HEAD and a config HEAD an image. An image found in such a
// repository would only have spared a config and a manifest put, as layers are looked for
// anyway; a registry that does not answer counts the repository as not fresh, which costs
// only those requests.
func (p *Pusher) isFresh(ctx context.Context, repo name.Repository) bool {
	p.mu.Lock()
	fresh, ok := p.fresh[repo.String()]
	p.mu.Unlock()
	if ok {
		return fresh
	}
	tagged, err := p.up.hasTags(ctx, repo)
	fresh = err == nil && !tagged
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.fresh[repo.String()]; !ok {
		p.fresh[repo.String()] = fresh
	}
	return p.fresh[repo.String()]
}

// sendLayer gives repo the layer unless this Pusher did already: a layer it pushed to another
// repository is mounted from there with one request, and any other the repository lacks is
// sent in two (see sendSmall and sendLarge). A repository that is not fresh is asked for it
// first.
func (p *Pusher) sendLayer(ctx context.Context, l v1.Layer, cl *countingLayer, repo name.Repository, fresh bool) error {
	h, err := l.Digest()
	if err != nil {
		return err
	}
	if p.wasSent(repo, h) {
		return nil
	}
	mounted := false
	if ml, ok := l.(*remote.MountableLayer); ok {
		if mounted, err = p.up.mount(ctx, repo, ml.Reference.Context(), h); err != nil {
			return fmt.Errorf("mounting layer %s into %s: %w", h, repo, err)
		}
		// A registry that does not mount may still hold the layer for every repository, as
		// some keep blobs: it is looked for before it is sent.
		fresh = false
	}
	has := mounted
	if !has && !fresh {
		if has, err = p.up.has(ctx, repo, h); err != nil {
			return fmt.Errorf("looking for layer %s in %s: %w", h, repo, err)
		}
	}
	if !has {
		send := p.sendLarge
		if cl.size < SmallBlobSize {
			send = p.sendSmall
		}
		if err := send(ctx, cl, repo, h); err != nil {
			return fmt.Errorf("pushing layer %s to %s: %w", h, repo, err)
		}
	}
	p.markSent(repo, h)
	return nil
}

// sendLarge streams a layer from the store in one POST and one PUT, holding a transfer slot
// while its bytes are read (countingLayer). The store checks the layer's digest before it
// hands out its last bytes, so a layer that does not match never reaches the registry whole.
func (p *Pusher) sendLarge(ctx context.Context, cl *countingLayer, repo name.Repository, h v1.Hash) error {
	return p.up.uploadStream(ctx, repo, h, blobBody{size: cl.size, open: cl.Compressed})
}

// sendSmall sends a layer under SmallBlobSize as the uploader sends a config: read whole and
// verified, then in one POST and one PUT. Small layers move in slots of their own, as in a
// backup: they cost their size in memory, and their pace is the registry's per request.
func (p *Pusher) sendSmall(ctx context.Context, cl *countingLayer, repo name.Repository, h v1.Hash) error {
	select {
	case p.small <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.small }()
	data, err := p.store.ReadBlob(ctx, h, cl.size)
	if err != nil {
		return err
	}
	if int64(len(data)) != cl.size {
		return &imagestore.DigestMismatchError{Digest: h, Got: fmt.Sprintf("%d bytes stored, want %d", len(data), cl.size)}
	}
	cl.countRead()
	return p.up.upload(ctx, repo, h, data)
}

// sendConfig sends the image's config to repo unless this Pusher sent it there, or, in a
// repository that is not fresh, the registry has it.
func (p *Pusher) sendConfig(ctx context.Context, img v1.Image, repo name.Repository, fresh bool) error {
	h, err := img.ConfigName()
	if err != nil {
		return err
	}
	if p.wasSent(repo, h) {
		return nil
	}
	has := false
	if !fresh {
		if has, err = p.up.has(ctx, repo, h); err != nil {
			return fmt.Errorf("looking for config %s in %s: %w", h, repo, err)
		}
	}
	if !has {
		raw, err := img.RawConfigFile()
		if err != nil {
			return err
		}
		if err := p.up.upload(ctx, repo, h, raw); err != nil {
			return fmt.Errorf("pushing config %s to %s: %w", h, repo, err)
		}
	}
	p.markSent(repo, h)
	return nil
}

// wasSent reports whether this Pusher put the manifest, config or layer h into repo.
func (p *Pusher) wasSent(repo name.Repository, h v1.Hash) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent[repo.String()+"@"+h.String()]
}

func (p *Pusher) markSent(repo name.Repository, h v1.Hash) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent[repo.String()+"@"+h.String()] = true
}

// countPresent counts an image the repository has, and its layers, as skipped.
func (p *Pusher) countPresent(img v1.Image, desc v1.Descriptor) error {
	p.counts.add(desc.Size, false)
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		size, err := l.Size()
		if err != nil {
			return err
		}
		p.counts.add(size, false)
	}
	return nil
}

// pushImage sends the image's layers and config that repo lacks, then puts its manifest at
// each of put. The manifest's existence was checked already: go-containerregistry's
// remote.Write would check it again.
func (p *Pusher) pushImage(ctx context.Context, img v1.Image, desc v1.Descriptor, repo name.Repository, put []name.Reference, fresh bool) error {
	// Images pushed at once often share layers (a base image): a layer another push is
	// sending is waited for and then mounted, not sent twice. Only that layer waits: the
	// image's own layers and config go meanwhile.
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	mine, others, err := p.claim(layers)
	defer p.release(mine)
	if err != nil {
		return err
	}
	counted := make([]*countingLayer, len(layers))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(SmallBlobsPerJob * p.opts.jobs())
	seen := map[v1.Hash]bool{}
	for i, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		// A layer an image lists twice (old Docker images repeat the empty layer) is sent
		// once; its other entries count as skipped.
		if seen[h] || !distributable(l) {
			if counted[i], err = p.counted(ctx, l); err != nil {
				return err
			}
			continue
		}
		seen[h] = true
		g.Go(func() error {
			if sent, ok := others[h]; ok {
				select {
				case <-sent:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			send, cl, err := p.mountable(ctx, l, h, repo)
			if err != nil {
				return err
			}
			counted[i] = cl
			return p.sendLayer(gctx, send, cl, repo, fresh)
		})
	}
	g.Go(func() error { return p.sendConfig(gctx, img, repo, fresh) })
	if err := g.Wait(); err != nil {
		return fmt.Errorf("pushing image %s@%s: %w", repo, desc.Digest, err)
	}
	for _, ref := range put {
		if err := p.putManifest(ctx, ref, img, desc.MediaType); err != nil {
			return fmt.Errorf("pushing image %s: %w", ref, err)
		}
	}
	p.counts.add(desc.Size, true)
	p.record(counted, repo)
	p.markSent(repo, desc.Digest)
	return nil
}

// claim marks the layers that no push of this Pusher has sent or is sending as sent by the
// caller (mine, for release), and returns the sends of other pushes to wait for, by layer. One
// call claims all at once, so a push only waits for pushes that claimed before it: no two
// pushes wait for each other.
func (p *Pusher) claim(layers []v1.Layer) (mine []v1.Hash, others map[v1.Hash]chan struct{}, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	others = map[v1.Hash]chan struct{}{}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return mine, nil, err
		}
		if _, ok := p.pushed[h]; ok || slices.Contains(mine, h) {
			continue
		}
		if sent, ok := p.sending[h]; ok {
			others[h] = sent
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

// distributable reports whether a registry takes layer l: a foreign layer (a Windows base
// layer) is fetched from its URLs, is not in the store (the backup does not copy it) and is
// not sent, as go-containerregistry does not send it either.
func distributable(l v1.Layer) bool {
	mt, err := l.MediaType()
	return err != nil || mt.IsDistributable()
}

// counted wraps layer l so that it counts, as skipped, when the image is recorded.
func (p *Pusher) counted(ctx context.Context, l v1.Layer) (*countingLayer, error) {
	size, err := l.Size()
	if err != nil {
		return nil, err
	}
	return &countingLayer{Layer: l, counts: &p.counts, size: size, ctx: ctx, slots: p.slots}, nil
}

// mountable wraps layer l, whose digest is h, so that it counts the bytes it sends, holds a
// transfer slot while it is sent and, when this Pusher already pushed it to another repository
// of the same registry, is mounted from there. It returns the layer to send and its count.
func (p *Pusher) mountable(ctx context.Context, l v1.Layer, h v1.Hash, repo name.Repository) (v1.Layer, *countingLayer, error) {
	cl, err := p.counted(ctx, l)
	if err != nil {
		return nil, nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if from, ok := p.pushed[h]; ok && from.RegistryStr() == repo.RegistryStr() && from.String() != repo.String() {
		return &remote.MountableLayer{Layer: cl, Reference: from.Digest(h.String())}, cl, nil
	}
	return cl, cl, nil
}

// record notes where the image's layers now are and counts the ones never read as skipped.
func (p *Pusher) record(counted []*countingLayer, repo name.Repository) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range counted {
		if h, err := l.Digest(); err == nil && distributable(l) {
			p.pushed[h] = repo
		}
		if !l.read.Load() {
			p.counts.add(l.size, false)
		}
	}
}

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
	l.countRead()
	// The slot goes back when the bytes are closed or read to their end, or at the latest
	// with the push: a body a failed request never closes holds it no longer.
	stop := context.AfterFunc(l.ctx, release)
	return &slotReader{ReadCloser: rc, release: func() { stop(); release() }}, nil
}

// countRead counts the layer as uploaded the first time its bytes are read.
func (l *countingLayer) countRead() {
	if l.read.CompareAndSwap(false, true) {
		l.counts.add(l.size, true)
	}
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
