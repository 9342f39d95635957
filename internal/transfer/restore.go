package transfer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// RestoreSpec is what a restore job pushes and where.
type RestoreSpec struct {
	// Backup is the stored backup, read before the job starts.
	Backup *imagestore.Backup
	// Restore selects the images and maps their namespaces.
	Restore *oadpv1alpha1.ImageStreamsRestoreSpec
	// Host is the internal registry the images are pushed to.
	Host    string
	Options copier.Options
	// Pushed, when set, holds what earlier runs of this restore pushed: those images are
	// counted done without a request, and this run's pushes are added.
	Pushed *Pushed
}

// Restore pushes the images of a stored backup into the internal registry. Imagestreams are
// restored in parallel, the images of one imagestream in order, so that tags land where they
// belong.
type Restore struct {
	spec   RestoreSpec
	store  *imagestore.Store
	pusher atomic.Pointer[copier.Pusher]
	// remembered counts the images an earlier run pushed.
	remembered atomic.Int64

	tally
}

// NewRestore returns a restore job from store, which the job closes.
func NewRestore(store *imagestore.Store, spec RestoreSpec) *Restore {
	return &Restore{spec: spec, store: store}
}

// Close implements Job.
func (r *Restore) Close() { r.store.Close() }

// Progress implements Job.
func (r *Restore) Progress() oadpv1alpha1.Progress {
	var st copier.Stats
	if p := r.pusher.Load(); p != nil {
		st = p.Stats()
	}
	return r.progress(st)
}

// Run implements Job: select the images, push them, decide.
func (r *Restore) Run(ctx context.Context, started StartedFunc) Result {
	groups := selectImages(r.spec.Restore, r.spec.Backup.Entries)
	var total int64
	for _, g := range groups {
		total += int64(len(g))
	}
	r.total.Store(total)
	started(total, fmt.Sprintf("pushing %d images of backup %s to %s", total, r.spec.Restore.BackupName(), r.spec.Host))
	p, err := copier.NewPusher(r.store, r.spec.Options)
	if err != nil {
		return r.final(Result{Outcome: Failed, Reason: oadpv1alpha1.ReasonFailed, Message: err.Error()}, copier.Stats{})
	}
	r.pusher.Store(p)
	r.pushAll(ctx, p, groups)
	return r.final(r.decide(ctx), p.Stats())
}

// imageStreamsPerJob is how many imagestreams a restore pushes at once for each of
// Options.Jobs. A push is mostly small requests (a manifest, a config, tags), each of which
// waits for the registry to write and sync a few files; the layers it sends take the transfer
// slots, Options.Jobs at once, which bound the memory.
const imageStreamsPerJob = 4

// pushAll pushes every group, imageStreamsPerJob times Options.Jobs imagestreams at once.
func (r *Restore) pushAll(ctx context.Context, p *copier.Pusher, groups map[[2]string][]restoreItem) {
	var g errgroup.Group
	g.SetLimit(imageStreamsPerJob * jobs(r.spec.Options))
	for k, items := range groups {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			r.pushImageStream(ctx, p, k, items)
			return nil
		})
	}
	_ = g.Wait()
}

// pushImageStream pushes the images of imagestream k in order.
func (r *Restore) pushImageStream(ctx context.Context, p *copier.Pusher, k [2]string, items []restoreItem) {
	target := k[0]
	if m, ok := r.spec.Restore.NamespaceMapping[target]; ok && m != "" {
		target = m
	}
	repo, repoErr := p.Repository(fmt.Sprintf("%s/%s/%s", r.spec.Host, target, k[1]))
	for _, it := range items {
		if ctx.Err() != nil {
			return
		}
		err := it.missing
		if err == nil {
			err = repoErr
		}
		if err == nil && r.spec.Pushed.has(repo.String(), it.entry.Descriptor.Digest, it.tags) {
			r.remembered.Add(1)
			r.done.Add(1)
			continue
		}
		if err == nil {
			err = p.Push(ctx, it.entry.Descriptor, repo, it.tags)
		}
		switch {
		case err == nil:
			r.spec.Pushed.add(repo.String(), it.entry.Descriptor.Digest, it.tags)
			r.done.Add(1)
		case ctx.Err() == nil:
			r.fail(ctx, it.entry.Namespace, it.entry.ImageStream, it.entry.Reference, err)
		}
	}
}

// decide is how the restore ended.
func (r *Restore) decide(ctx context.Context) Result {
	if ctx.Err() != nil {
		return Result{Outcome: stopped(ctx), Reason: oadpv1alpha1.ReasonCanceled, Message: "canceled by spec.cancel"}
	}
	total, done, failed := r.total.Load(), r.done.Load(), r.failed.Load()
	missing := r.spec.Backup.Missing
	st := r.pusher.Load().Stats()
	outcome := outcomeOf(total, failed)
	res := Result{Outcome: outcome, Reason: reasonOf(outcome), Message: fmt.Sprintf("pushed %d images: %d bytes sent, %d bytes already in the registry", total, st.BytesUploaded, st.BytesSkipped)}
	if n := r.remembered.Load(); n > 0 {
		res.Message = fmt.Sprintf("pushed %d images (%d of them by an earlier run of this restore): %d bytes sent, %d bytes already in the registry",
			total, n, st.BytesUploaded, st.BytesSkipped)
	}
	switch {
	case outcome == Failed:
		res.Message = fmt.Sprintf("all %d images failed; see status.failures", total)
	case total == 0 && len(missing) > 0:
		res.Outcome, res.Message = Failed, "no image was restored"
	case outcome == PartiallyFailed || len(missing) > 0:
		res.Outcome, res.Message = PartiallyFailed, fmt.Sprintf("pushed %d of %d images; %d failed, see status.failures", done, total, failed)
	}
	if len(missing) > 0 {
		// The images of a missing part are not even listed: the restore says which part.
		res.Reason = oadpv1alpha1.ReasonBackupPartMissing
		res.Message = fmt.Sprintf("backup %s is missing parts %s from the location, so their images were not restored; %s",
			r.spec.Restore.BackupName(), strings.Join(missing, ", "), res.Message)
	}
	return res
}

// restoreItem is one image to push and where.
type restoreItem struct {
	entry imagestore.Entry
	tags  []string
	// missing is set for an image the restore lists but the backup lacks.
	missing error
}

// selectImages picks the backup's images that the restore lists (all when it lists none),
// grouped by imagestream, oldest first: entries are recorded newest first, as imagestream
// history lists them, so pushing oldest first leaves a tag that moved on its newest image.
func selectImages(spec *oadpv1alpha1.ImageStreamsRestoreSpec, entries []imagestore.Entry) map[[2]string][]restoreItem {
	byImageStream := map[[2]string][]imagestore.Entry{}
	for _, e := range entries {
		k := [2]string{e.Namespace, e.ImageStream}
		byImageStream[k] = append(byImageStream[k], e)
	}
	groups := map[[2]string][]restoreItem{}
	if len(spec.ImageStreams) == 0 {
		for k, es := range byImageStream {
			for _, e := range es {
				groups[k] = append(groups[k], restoreItem{entry: e, tags: e.Tags})
			}
		}
	}
	for i := range spec.ImageStreams {
		is := &spec.ImageStreams[i]
		k := [2]string{is.NamespaceOrDefault(), is.Name}
		groups[k] = append(groups[k], selectOf(is, k, byImageStream[k])...)
	}
	for k := range groups {
		slices.Reverse(groups[k])
	}
	return groups
}

// selectOf picks the images of imagestream k that is lists, from have, the backup's entries of
// k: all of them when it lists none.
func selectOf(is *oadpv1alpha1.ImageStream, k [2]string, have []imagestore.Entry) []restoreItem {
	var out []restoreItem
	if len(is.DockerImageReferences) == 0 {
		if len(have) == 0 {
			out = append(out, restoreItem{missing: fmt.Errorf("imagestream %s/%s is not in the backup", k[0], k[1]), entry: imagestore.Entry{Namespace: k[0], ImageStream: k[1]}})
		}
		for _, e := range have {
			out = append(out, restoreItem{entry: e, tags: e.Tags})
		}
		return out
	}
	for _, ref := range is.DockerImageReferences {
		digest := ref.DockerImageReference[len(ref.DockerImageReference)-71:] // the schema guarantees @sha256:<64 hex>
		item := restoreItem{entry: imagestore.Entry{Namespace: k[0], ImageStream: k[1], Reference: ref.DockerImageReference}, tags: ref.Tags,
			missing: fmt.Errorf("image %s is not in the backup", digest)}
		for _, e := range have {
			if e.Descriptor.Digest.String() == digest {
				item.entry, item.missing = e, nil
				if len(item.tags) == 0 {
					item.tags = e.Tags
				}
			}
		}
		out = append(out, item)
	}
	return out
}
