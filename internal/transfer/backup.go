package transfer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/errgroup"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// BackupSpec is what a backup job copies and where.
type BackupSpec struct {
	// Name is the stored backup's name and Writer the uid its index records as its writer.
	Name, Writer string
	// Parts are the other stored backups the index leads to (a split Velero backup's parts).
	Parts        []string
	ImageStreams []oadpv1alpha1.ImageStream
	// Previous are the entries an earlier run of the backup stored: an image that fails now
	// keeps its earlier copy.
	Previous []imagestore.Entry
	// Host is the internal registry: images of other registries are refused.
	Host    string
	Options copier.Options
	// StaleAfter is how long the backup's in-progress marker counts without being refreshed.
	StaleAfter time.Duration
}

// Backup copies the images of a set of imagestreams into a store, each blob once, and commits
// them as one stored backup: an index written last, so that a backup is either whole or not
// there.
type Backup struct {
	spec   BackupSpec
	store  *imagestore.Store
	copier *copier.Copier

	tally
}

// NewBackup returns a backup job into store, which the job closes.
func NewBackup(store *imagestore.Store, spec BackupSpec) (*Backup, error) {
	c, err := copier.New(store, spec.Options)
	if err != nil {
		store.Close()
		return nil, err
	}
	return &Backup{spec: spec, store: store, copier: c}, nil
}

// Close implements Job.
func (b *Backup) Close() { b.store.Close() }

// Progress implements Job.
func (b *Backup) Progress() oadpv1alpha1.Progress {
	return b.progress(b.copier.Stats())
}

// Run implements Job: take the in-progress marker, copy every image, decide, commit.
func (b *Backup) Run(ctx context.Context, started StartedFunc) Result {
	items := plan(b.spec.ImageStreams)
	pending, err := b.store.Begin(ctx, b.spec.Name, b.spec.Writer, b.spec.StaleAfter)
	if err != nil {
		if ctx.Err() != nil {
			return b.decide(ctx, items, nil)
		}
		return Result{Outcome: Interrupted, Reason: oadpv1alpha1.ReasonStoreUnavailable, Message: fmt.Sprintf("marking the backup in progress: %v", err)}
	}
	b.total.Store(int64(len(items)))
	started(int64(len(items)), fmt.Sprintf("copying %d images", len(items)))
	refused := b.copyAll(ctx, items)
	// Copies of manifests that no image waits for any more end before the job decides, so
	// that nothing writes to the store after the job has ended.
	b.copier.Wait()
	res := b.decide(ctx, items, refused)
	if res.Outcome == Completed || res.Outcome == PartiallyFailed {
		res = b.commit(ctx, pending, items, res)
	}
	if res.Outcome != Completed && res.Outcome != PartiallyFailed && res.Outcome != Interrupted {
		// A run that ends for good gives up its marker; an interrupted one keeps it for the
		// run that resumes it, which takes it over.
		_ = pending.Abort(context.WithoutCancel(ctx))
	}
	return b.final(res, b.copier.Stats())
}

// copyAll copies items, at most Options.Jobs at once. A location that refuses writes (full,
// over quota, read-only) fails every image after it: the first such error stops the copy and
// is returned.
func (b *Backup) copyAll(ctx context.Context, items []*item) (refused error) {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs(b.spec.Options))
	for _, it := range items {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return b.copyOne(gctx, it) })
	}
	return g.Wait()
}

// copyOne copies one image; it returns an error only for a location that refuses writes.
func (b *Backup) copyOne(ctx context.Context, it *item) error {
	ref, err := imageSource(b.spec.Host, it, b.spec.Options)
	if err == nil {
		it.entry.Descriptor, err = b.copier.Copy(ctx, ref)
	}
	switch {
	case err == nil:
		it.entry.Namespace, it.entry.ImageStream, it.entry.Tags, it.entry.Reference = it.ns, it.is.Name, it.ref.Tags, it.ref.DockerImageReference
		b.done.Add(1)
		return nil
	case errors.Is(err, bucket.ErrNoSpace) || errors.Is(err, bucket.ErrDenied):
		return err
	case ctx.Err() != nil:
		return nil
	}
	it.failed = err
	b.fail(ctx, it.ns, it.is.Name, it.ref.DockerImageReference, err)
	return nil
}

// decide is how the copy of items ended, before any commit.
func (b *Backup) decide(ctx context.Context, items []*item, refused error) Result {
	if ctx.Err() != nil {
		return Result{Outcome: stopped(ctx), Reason: oadpv1alpha1.ReasonCanceled, Message: "canceled by spec.cancel; no index was written"}
	}
	if refused != nil {
		return Result{Outcome: Failed, Reason: FailureReason(refused), Message: fmt.Sprintf(
			"the backup location stopped taking writes, so no index was written: %v. Blobs stored so far are removed by the next garbage collection unless another backup uses them", refused)}
	}
	total, failed := int64(len(items)), b.failed.Load()
	outcome := outcomeOf(total, failed)
	if outcome == Failed && len(b.spec.Parts) > 0 {
		// A head's index is the way to its parts: it is written even when none of the head's
		// own images could be stored.
		outcome = PartiallyFailed
	}
	if outcome == Failed {
		msg := fmt.Sprintf("all %d images failed; see status.failures", total)
		if b.spec.Previous != nil {
			msg += "; the backup stored earlier is unchanged"
		}
		return Result{Outcome: Failed, Reason: oadpv1alpha1.ReasonFailed, Message: msg}
	}
	return Result{Outcome: outcome, Reason: reasonOf(outcome)}
}

// commit writes the index of what res says was copied and completes res's message.
func (b *Backup) commit(ctx context.Context, pending *imagestore.Pending, items []*item, res Result) Result {
	entries, kept := indexEntries(items, b.spec.Previous)
	for _, it := range kept {
		b.fails.note(it.ns, it.is.Name, it.ref.DockerImageReference, "; the copy stored by an earlier run stays in the backup")
	}
	if err := pending.Commit(ctx, entries, imagestore.IndexMeta{Writer: b.spec.Writer, Parts: b.spec.Parts}); err != nil {
		switch {
		case ctx.Err() != nil:
			return b.decide(ctx, items, nil)
		case errors.Is(err, imagestore.ErrInvalidIndex):
			return Result{Outcome: Failed, Reason: oadpv1alpha1.ReasonFailed, Message: fmt.Sprintf("writing the backup's index: %v", err)}
		}
		// A store that refused the index, or a collection that removed what the backup counted
		// on while its marker was stale: a new run uploads only what is missing. The marker
		// goes, as the run that follows takes a new one.
		_ = pending.Abort(context.WithoutCancel(ctx))
		return Result{Outcome: Interrupted, Reason: oadpv1alpha1.ReasonStoreUnavailable, Message: fmt.Sprintf("writing the backup's index: %v; copying again", err)}
	}
	st := b.copier.Stats()
	total := int64(len(items))
	res.Message = fmt.Sprintf("stored %d images: %d bytes uploaded, %d bytes already stored", total, st.BytesUploaded, st.BytesSkipped)
	if res.Outcome == PartiallyFailed {
		res.Message = fmt.Sprintf("stored %d of %d images; %d failed, see status.failures", b.done.Load(), total, b.failed.Load())
		if len(kept) > 0 {
			res.Message += fmt.Sprintf("; the backup keeps the earlier copy of %d of them", len(kept))
		}
	}
	return res
}

// jobs is how many images of a job move at once.
func jobs(o copier.Options) int {
	if o.Jobs > 0 {
		return o.Jobs
	}
	return copier.DefaultJobs
}

// item is one image of a backup.
type item struct {
	is     *oadpv1alpha1.ImageStream
	ns     string
	ref    oadpv1alpha1.DockerImageReference
	entry  imagestore.Entry
	failed error
}

// plan lists the images to copy, each reference once per imagestream.
func plan(imageStreams []oadpv1alpha1.ImageStream) []*item {
	var items []*item
	for i := range imageStreams {
		is := &imageStreams[i]
		for _, ref := range mergeReferences(is.DockerImageReferences) {
			items = append(items, &item{is: is, ns: is.NamespaceOrDefault(), ref: ref})
		}
	}
	return items
}

// mergeReferences lists each reference once, with the tags of all its entries in order.
func mergeReferences(refs []oadpv1alpha1.DockerImageReference) []oadpv1alpha1.DockerImageReference {
	out := make([]oadpv1alpha1.DockerImageReference, 0, len(refs))
	at := make(map[string]int, len(refs))
	for _, r := range refs {
		i, ok := at[r.DockerImageReference]
		if !ok {
			at[r.DockerImageReference] = len(out)
			out = append(out, oadpv1alpha1.DockerImageReference{DockerImageReference: r.DockerImageReference, Tags: slices.Clone(r.Tags)})
			continue
		}
		for _, t := range r.Tags {
			if !slices.Contains(out[i].Tags, t) {
				out[i].Tags = append(out[i].Tags, t)
			}
		}
	}
	return out
}

// indexEntries are the images a commit records: each image copied now and, for an image that
// failed now, the copy an earlier run of the backup stored, if there is one. An image once
// stored stays in the backup rather than leave it (and its blobs with the next collection)
// because a later run could not read it again; kept lists those images.
func indexEntries(items []*item, previous []imagestore.Entry) (entries []imagestore.Entry, kept []*item) {
	earlier := make(map[[3]string]imagestore.Entry, len(previous))
	for _, e := range previous {
		earlier[[3]string{e.Namespace, e.ImageStream, e.Reference}] = e
	}
	for _, it := range items {
		if it.failed == nil {
			entries = append(entries, it.entry)
			continue
		}
		if e, ok := earlier[[3]string{it.ns, it.is.Name, it.ref.DockerImageReference}]; ok {
			e.Tags = it.ref.Tags
			entries = append(entries, e)
			kept = append(kept, it)
		}
	}
	return entries, kept
}

// pullReference is where an image is read from: an internal-registry image through its
// imagestream's own repository, which serves every image of the imagestream even when the
// recorded reference names another namespace (after promotion, the source tag may be gone);
// any other image from its recorded reference.
func pullReference(host, namespace string, is *oadpv1alpha1.ImageStream, ref string, opts copier.Options) (name.Digest, error) {
	d, err := name.NewDigest(ref, opts.NameOptions()...)
	if err != nil {
		return d, fmt.Errorf("invalid reference %q: %w", ref, err)
	}
	if d.Context().RegistryStr() == host && namespace != "" {
		return name.NewDigest(fmt.Sprintf("%s/%s/%s@%s", host, namespace, is.Name, d.DigestStr()), opts.NameOptions()...)
	}
	return d, nil
}

// imageSource is where the image of it is read from, or why it is not read at all: only images
// of the internal registry are the cluster's to back up, and only that registry gets the
// worker's credentials.
func imageSource(host string, it *item, opts copier.Options) (name.Digest, error) {
	ref, err := pullReference(host, it.ns, it.is, it.ref.DockerImageReference, opts)
	if err == nil && ref.Context().RegistryStr() != host {
		err = fmt.Errorf("%w: %s is not the internal registry %s", ErrExternalImage, ref.Context().RegistryStr(), host)
	}
	return ref, err
}
