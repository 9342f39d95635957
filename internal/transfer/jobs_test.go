package transfer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ggcrtypes "github.com/google/go-containerregistry/pkg/v1/types"
	"gocloud.dev/blob/fileblob"
	"k8s.io/apimachinery/pkg/types"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// fakeJob runs until release is closed or its context ends.
type fakeJob struct {
	release chan struct{}
	closed  atomic.Int32
}

func newFakeJob() *fakeJob { return &fakeJob{release: make(chan struct{})} }

func (j *fakeJob) Run(ctx context.Context, started StartedFunc) Result {
	started(1, "waiting")
	select {
	case <-j.release:
		return Result{Outcome: Completed}
	case <-ctx.Done():
		return Result{Outcome: stopped(ctx)}
	}
}

func (j *fakeJob) Progress() oadpv1alpha1.Progress { return oadpv1alpha1.Progress{ImagesTotal: 1} }
func (j *fakeJob) Close()                          { j.closed.Add(1) }

func startedRunner(t *testing.T) (*Runner, context.CancelFunc) {
	t.Helper()
	r := NewRunner(time.Millisecond)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Start(ctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	return r, stop
}

// A job the runner does not start is closed, so that the store it holds is not left open; a
// job it runs is closed once, after it ran.
func TestTheRunnerClosesEveryJob(t *testing.T) {
	r, stop := startedRunner(t)
	key := types.NamespacedName{Namespace: "ns", Name: "b"}
	first, ended := newFakeJob(), make(chan Result, 1)
	if err := r.StartJob(context.Background(), key, first, Callbacks{OnDone: func(_ context.Context, res Result) { ended <- res }}); err != nil {
		t.Fatal(err)
	}
	second := newFakeJob()
	if err := r.StartJob(context.Background(), key, second, Callbacks{}); !errors.Is(err, ErrRunning) || second.closed.Load() != 1 {
		t.Errorf("a second job for a running key: %v, closed %d times; want ErrRunning, closed once", err, second.closed.Load())
	}
	close(first.release)
	if res := <-ended; res.Outcome != Completed || first.closed.Load() != 1 {
		t.Errorf("the job ended %v, closed %d times; want Completed, closed once", res.Outcome, first.closed.Load())
	}
	stop()
	third := newFakeJob()
	if err := r.StartJob(context.Background(), types.NamespacedName{Name: "other"}, third, Callbacks{}); !errors.Is(err, ErrStopping) || third.closed.Load() != 1 {
		t.Errorf("a job on a stopping runner: %v, closed %d times; want ErrStopping, closed once", err, third.closed.Load())
	}
}

// Cancel ends a job Canceled; the runner stopping ends it Interrupted, for the next worker.
func TestCancelAndShutdownEndJobsApart(t *testing.T) {
	r, stop := startedRunner(t)
	outcomes := make(chan Outcome, 2)
	done := Callbacks{OnDone: func(_ context.Context, res Result) { outcomes <- res.Outcome }}
	canceled, interrupted := types.NamespacedName{Name: "canceled"}, types.NamespacedName{Name: "interrupted"}
	for _, key := range []types.NamespacedName{canceled, interrupted} {
		if err := r.StartJob(context.Background(), key, newFakeJob(), done); err != nil {
			t.Fatal(err)
		}
	}
	r.Cancel(canceled)
	if got := <-outcomes; got != Canceled {
		t.Errorf("a canceled job ended %v, want Canceled", got)
	}
	stop()
	if got := <-outcomes; got != Interrupted {
		t.Errorf("a job of a stopping runner ended %v, want Interrupted", got)
	}
}

// --jobs below the default bounds the images a backup copies at once, as the README says.
func TestABackupCopiesAtMostJobsImagesAtOnce(t *testing.T) {
	var manifests peak
	reg := newRegistry(t, func(_ http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
			manifests.enter()
			defer manifests.leave()
			time.Sleep(20 * time.Millisecond)
		}
		return false
	})
	is := oadpv1alpha1.ImageStream{Name: "web", Namespace: "app"}
	for range 6 {
		is.DockerImageReferences = append(is.DockerImageReferences, reg.push(t, "web"))
	}
	manifests.max.Store(0)
	backedUp(t, newStore(t), reg, []oadpv1alpha1.ImageStream{is}, copier.Options{Insecure: true, Jobs: 1})
	if got := manifests.max.Load(); got != 1 {
		t.Errorf("%d manifests were fetched at once with --jobs 1", got)
	}
}

// Blobs under copier.SmallBlobSize move in slots of their own, SmallBlobsPerJob times --jobs,
// because their pace is set by round trips; larger ones keep to --jobs, which bounds memory.
func TestSmallBlobsMoveInSlotsOfTheirOwn(t *testing.T) {
	for _, tt := range []struct {
		name        string
		size        int64
		least, most int64
	}{
		{"small blobs", 2048, 2, copier.SmallBlobsPerJob},
		{"large blobs", copier.SmallBlobSize + 1, 1, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Six layers of the size, and a small config; the layers are counted.
			img, err := random.Image(tt.size, 6)
			if err != nil {
				t.Fatal(err)
			}
			layers := map[string]bool{}
			ls, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range ls {
				d, err := l.Digest()
				if err != nil {
					t.Fatal(err)
				}
				layers[d.String()] = true
			}
			var blobs peak
			reg := newRegistry(t, func(_ http.ResponseWriter, r *http.Request) bool {
				if _, digest, ok := strings.Cut(r.URL.Path, "/blobs/"); ok && r.Method == http.MethodGet && layers[digest] {
					blobs.enter()
					defer blobs.leave()
					time.Sleep(20 * time.Millisecond)
				}
				return false
			})
			is := oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{reg.write(t, "app", "web", img)}}
			blobs.max.Store(0)
			backedUp(t, newStore(t), reg, []oadpv1alpha1.ImageStream{is}, copier.Options{Insecure: true, Jobs: 1})
			if got := blobs.max.Load(); got < tt.least || got > tt.most {
				t.Errorf("%d layers were fetched at once with --jobs 1, want %d to %d", got, tt.least, tt.most)
			}
		})
	}
}

// A restore takes the worker's transfer slots for the layers it sends, so that restores are
// bounded together with backups. The layers are larger than a socket's buffers, so a layer's
// slot is held until the registry has read it.
func TestARestoreSendsNoMoreLayersThanTheSharedSlots(t *testing.T) {
	var uploads peak
	reg := newRegistry(t, func(_ http.ResponseWriter, r *http.Request) bool {
		if (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.ContentLength > 1<<20 {
			uploads.enter()
			time.Sleep(50 * time.Millisecond)
			uploads.leave()
		}
		return false
	})
	store := newStore(t)
	is := oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{reg.pushSized(t, "app", "web", 16<<20, 4)}}
	slots := make(chan struct{}, 1)
	opts := copier.Options{Insecure: true, Slots: slots}
	stored := backedUp(t, store, reg, []oadpv1alpha1.ImageStream{is}, opts)
	target := newRegistry(t, reg.hook)
	uploads.max.Store(0)
	restore := NewRestore(store, RestoreSpec{Backup: stored, Restore: &oadpv1alpha1.ImageStreamsRestoreSpec{}, Host: target.host(), Options: opts})
	if res := run(t, restore); res.Outcome != Completed {
		t.Fatalf("restore ended %v: %s", res.Outcome, res.Message)
	}
	if got := uploads.max.Load(); got != 1 {
		t.Errorf("%d layers were sent at once with one transfer slot", got)
	}
}

// Every imagestream with a failed image is counted, also when status.failures has no room left
// to list its failures: the Velero plugin reports each imagestream from these counts.
func TestEveryImageStreamWithFailuresIsCounted(t *testing.T) {
	reg := newRegistry(t, nil)
	crowded := oadpv1alpha1.ImageStream{Name: "crowded", Namespace: "app"}
	for i := range oadpv1alpha1.MaxFailures {
		crowded.DockerImageReferences = append(crowded.DockerImageReferences, reg.missing("app", "crowded", i))
	}
	late := oadpv1alpha1.ImageStream{Name: "late", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{
		reg.missing("app", "late", 100), reg.missing("app", "late", 101), reg.push(t, "late")}}
	job, err := NewBackup(newStore(t), BackupSpec{Name: "b", Writer: "uid", ImageStreams: []oadpv1alpha1.ImageStream{crowded, late}, Host: reg.host(),
		Options: copier.Options{Insecure: true, Jobs: 1}})
	if err != nil {
		t.Fatal(err)
	}
	res := run(t, job)
	if res.Outcome != PartiallyFailed || len(res.Failures) != oadpv1alpha1.MaxFailures {
		t.Fatalf("backup ended %v listing %d failures: %s", res.Outcome, len(res.Failures), res.Message)
	}
	want := []oadpv1alpha1.ImageStreamFailures{{Namespace: "app", Name: "crowded", ImagesFailed: int64(oadpv1alpha1.MaxFailures)}, {Namespace: "app", Name: "late", ImagesFailed: 2}}
	if len(res.FailedImageStreams) != 2 || res.FailedImageStreams[0] != want[0] || res.FailedImageStreams[1] != want[1] {
		t.Errorf("failed imagestreams %+v, want %+v", res.FailedImageStreams, want)
	}
	if res.Progress == nil || res.Progress.ImagesFailed != int64(oadpv1alpha1.MaxFailures)+2 || res.Progress.ImagesDone != 1 {
		t.Errorf("progress %+v", res.Progress)
	}
}

// A store that cannot take the in-progress marker interrupts the backup, to be run again; it
// does not fail it.
func TestABackupWhoseMarkerCannotBeWrittenRunsAgain(t *testing.T) {
	store := newStore(t)
	store.Close()
	job, err := NewBackup(store, BackupSpec{Name: "b", Writer: "uid", Host: "127.0.0.1:1", Options: copier.Options{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	res := job.Run(context.Background(), func(int64, string) { t.Error("the backup started without its marker") })
	if res.Outcome != Interrupted || res.Reason != oadpv1alpha1.ReasonStoreUnavailable {
		t.Errorf("backup ended %v (%s), want Interrupted StoreUnavailable", res.Outcome, res.Reason)
	}
}

// A running job's progress is reported every interval from its start, and no more after its end.
func TestARunningJobReportsItsProgress(t *testing.T) {
	r, _ := startedRunner(t)
	job, reports, ended := newFakeJob(), make(chan oadpv1alpha1.Progress, 1000), make(chan struct{})
	var started atomic.Int64
	err := r.StartJob(context.Background(), types.NamespacedName{Name: "b"}, job, Callbacks{
		OnStarted:  func(_ context.Context, total int64, _ string) { started.Store(total) },
		OnProgress: func(_ context.Context, p oadpv1alpha1.Progress) { reports <- p },
		OnDone:     func(context.Context, Result) { close(ended) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := <-reports; p.ImagesTotal != 1 || started.Load() != 1 {
		t.Errorf("progress %+v after a start of %d images", p, started.Load())
	}
	close(job.release)
	<-ended
	for len(reports) > 0 {
		<-reports
	}
	time.Sleep(20 * time.Millisecond)
	if n := len(reports); n != 0 {
		t.Errorf("%d progress reports after the job ended", n)
	}
}

// A backup stopped with the worker keeps its in-progress marker, so that no collection removes
// what it stored before the next worker resumes it; one canceled by spec.cancel gives it up.
func TestAnInterruptedBackupKeepsItsMarkerAndACanceledOneGivesItUp(t *testing.T) {
	for _, tt := range []struct {
		name         string
		stop         func(r *Runner, key types.NamespacedName, shutdown context.CancelFunc)
		want         Outcome
		wantDeferred bool
	}{
		{"shutdown", func(_ *Runner, _ types.NamespacedName, shutdown context.CancelFunc) { shutdown() }, Interrupted, true},
		{"spec.cancel", func(r *Runner, key types.NamespacedName, _ context.CancelFunc) { r.Cancel(key) }, Canceled, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg := newRegistry(t, nil)
			is := oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{reg.push(t, "web")}}
			reg.hook = func(_ http.ResponseWriter, r *http.Request) bool {
				<-r.Context().Done() // the copy hangs until it is stopped
				return true
			}
			dir := t.TempDir()
			job, err := NewBackup(openFileStore(t, dir), BackupSpec{Name: "b", Writer: "uid", ImageStreams: []oadpv1alpha1.ImageStream{is}, Host: reg.host(),
				Options: copier.Options{Insecure: true}, StaleAfter: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			r, shutdown := startedRunner(t)
			key := types.NamespacedName{Name: "b"}
			started, ended := make(chan struct{}), make(chan Result, 1)
			if err := r.StartJob(context.Background(), key, job, Callbacks{
				OnStarted: func(context.Context, int64, string) { close(started) },
				OnDone:    func(_ context.Context, res Result) { ended <- res },
			}); err != nil {
				t.Fatal(err)
			}
			<-started
			tt.stop(r, key, shutdown)
			if res := <-ended; res.Outcome != tt.want {
				t.Fatalf("the backup ended %v, want %v", res.Outcome, tt.want)
			}
			rep, err := fileStore(t, dir).GC(context.Background(), time.Hour)
			if err != nil || rep.Deferred != tt.wantDeferred {
				t.Errorf("a collection afterwards: deferred %v (%v), want deferred %v", rep.Deferred, err, tt.wantDeferred)
			}
		})
	}
}

// fileStore opens a store on directory dir, closed when the test ends; stores on one directory
// see each other's objects.
func fileStore(t *testing.T, dir string) *imagestore.Store {
	t.Helper()
	s := openFileStore(t, dir)
	t.Cleanup(func() { s.Close() })
	return s
}

// openFileStore opens a store on directory dir for its user to close (a job closes its own).
func openFileStore(t *testing.T, dir string) *imagestore.Store {
	t.Helper()
	b, err := fileblob.OpenBucket(dir, &fileblob.Options{Metadata: fileblob.MetadataDontWrite})
	if err != nil {
		t.Fatal(err)
	}
	return imagestore.New(b, "")
}

// Imagestreams restored at once whose images share a layer (a base image) send it once: the
// others mount it once it is there.
func TestARestoreSendsALayerItsImageStreamsShareOnce(t *testing.T) {
	var sends atomic.Int64
	store, opts := newStore(t), copier.Options{Insecure: true, Jobs: 4}
	stored := backedUpSharing(t, store, 4, 1<<20, opts)
	target := newRegistry(t, func(_ http.ResponseWriter, r *http.Request) bool {
		if (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.ContentLength >= 1<<20 {
			sends.Add(1)
			time.Sleep(20 * time.Millisecond) // the other pushes are under way meanwhile
		}
		return false
	})
	restore := NewRestore(store, RestoreSpec{Backup: stored, Restore: &oadpv1alpha1.ImageStreamsRestoreSpec{}, Host: target.host(), Options: opts})
	if res := run(t, restore); res.Outcome != Completed {
		t.Fatalf("restore ended %v: %s", res.Outcome, res.Message)
	}
	if got := sends.Load(); got != 1 {
		t.Errorf("the shared layer was sent %d times", got)
	}
}

// An image whose base layer another push is sending sends its own layers and config meanwhile:
// only the shared layer waits, to be mounted once it is there.
func TestARestoreSendsAnImagesOwnBlobsWhileASharedLayerIsOnItsWay(t *testing.T) {
	store, opts := newStore(t), copier.Options{Insecure: true, Jobs: 4}
	stored := backedUpSharing(t, store, 2, 2<<20, opts)
	// The shared layer's bytes are held until both images' own layer and config (four small
	// blobs) have arrived.
	var small atomic.Int64
	ownSent := make(chan struct{})
	var waited atomic.Bool
	target := newRegistry(t, func(_ http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/uploads/") || r.ContentLength <= 0 {
			return false
		}
		switch {
		case r.ContentLength < 1<<20 && r.Method == http.MethodPut:
			if small.Add(1) == 4 {
				close(ownSent)
			}
		case r.Method == http.MethodPut || r.Method == http.MethodPatch:
			select {
			case <-ownSent:
			case <-time.After(5 * time.Second):
				waited.Store(true)
			}
		}
		return false
	})
	restore := NewRestore(store, RestoreSpec{Backup: stored, Restore: &oadpv1alpha1.ImageStreamsRestoreSpec{}, Host: target.host(), Options: opts})
	if res := run(t, restore); res.Outcome != Completed {
		t.Fatalf("restore ended %v: %s", res.Outcome, res.Message)
	}
	if waited.Load() {
		t.Errorf("an image sent its own blobs only after the layer it shares with another: %d of 4 small blobs came while that layer was sent", small.Load())
	}
}

// backedUpSharing backs up n imagestreams web0 ... web<n-1> into store, each of one image of a
// base layer of size bytes that they share and a small layer of its own.
func backedUpSharing(t *testing.T, store *imagestore.Store, n int, size int64, opts copier.Options) *imagestore.Backup {
	t.Helper()
	reg := newRegistry(t, nil)
	base, err := random.Layer(size, ggcrtypes.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	var streams []oadpv1alpha1.ImageStream
	for i := range n {
		stream := fmt.Sprintf("web%d", i)
		streams = append(streams, oadpv1alpha1.ImageStream{Name: stream, Namespace: "app",
			DockerImageReferences: []oadpv1alpha1.DockerImageReference{reg.pushWith(t, "app", stream, base)}})
	}
	return backedUp(t, store, reg, streams, opts)
}

// backedUp backs streams up from reg into store, as backup "b", and returns it as stored.
func backedUp(t *testing.T, store *imagestore.Store, reg *testRegistry, streams []oadpv1alpha1.ImageStream, opts copier.Options) *imagestore.Backup {
	t.Helper()
	backup, err := NewBackup(store, BackupSpec{Name: "b", Writer: "uid", ImageStreams: streams, Host: reg.host(), Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	if res := backup.Run(context.Background(), func(int64, string) {}); res.Outcome != Completed {
		t.Fatalf("backup ended %v: %s", res.Outcome, res.Message)
	}
	stored, err := store.ReadBackup(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	return stored
}

// TestAnotherRunOfARestoreAsksOnlyAboutWhatIsNew runs a restore twice, as Velero does when it
// adds imagestreams to its ImageStreamsRestore: the second run sends no request for the
// imagestream the first run restored, and restores the new one.
func TestAnotherRunOfARestoreAsksOnlyAboutWhatIsNew(t *testing.T) {
	reg := newRegistry(t, nil)
	dir := t.TempDir() // each run closes its store: they open one each on the same bucket
	store := openFileStore(t, dir)
	var streams []oadpv1alpha1.ImageStream
	for _, stream := range []string{"first", "second"} {
		s := oadpv1alpha1.ImageStream{Name: stream, Namespace: "app"}
		for i := range 3 {
			ref := reg.push(t, stream)
			ref.Tags = []string{fmt.Sprintf("v%d", i)}
			s.DockerImageReferences = append(s.DockerImageReferences, ref)
		}
		streams = append(streams, s)
	}
	opts := copier.Options{Insecure: true, Jobs: 2}
	stored := backedUp(t, store, reg, streams, opts)
	store.Close()
	var firstsRequests atomic.Int64
	target := newRegistry(t, func(_ http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/v2/app/first/") {
			firstsRequests.Add(1)
		}
		return false
	})
	pushed := NewPushed()
	runWith := func(spec *oadpv1alpha1.ImageStreamsRestoreSpec) Result {
		t.Helper()
		res := run(t, NewRestore(openFileStore(t, dir), RestoreSpec{Backup: stored, Restore: spec, Host: target.host(), Options: opts, Pushed: pushed}))
		if res.Outcome != Completed {
			t.Fatalf("restore ended %v: %s", res.Outcome, res.Message)
		}
		return res
	}
	runWith(&oadpv1alpha1.ImageStreamsRestoreSpec{ImageStreams: []oadpv1alpha1.ImageStream{{Name: "first", Namespace: "app"}}})
	if firstsRequests.Load() == 0 {
		t.Fatal("the first run sent nothing to app/first")
	}
	firstsRequests.Store(0)
	res := runWith(&oadpv1alpha1.ImageStreamsRestoreSpec{ImageStreams: []oadpv1alpha1.ImageStream{{Name: "first", Namespace: "app"}, {Name: "second", Namespace: "app"}}})
	if n := firstsRequests.Load(); n != 0 {
		t.Errorf("the second run sent %d requests for app/first, which the first run restored", n)
	}
	if res.Progress.ImagesDone != 6 {
		t.Errorf("the second run counted %d images done, want 6", res.Progress.ImagesDone)
	}
	for _, s := range streams {
		for _, ref := range s.DockerImageReferences {
			tag, err := name.NewTag(target.host()+"/app/"+s.Name+":"+ref.Tags[0], name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			d, err := remote.Head(tag)
			if err != nil {
				t.Fatalf("%s after the second run: %v", tag, err)
			}
			if !strings.HasSuffix(ref.DockerImageReference, d.Digest.String()) {
				t.Errorf("%s is %s, want %s", tag, d.Digest, ref.DockerImageReference)
			}
		}
	}
}

// TestARestoreIntoANewRepositoryTakesThreeRequestsAnImage counts what a restore of many small
// images into a repository that does not exist asks of the registry: after the first image,
// whose layer is sent, an image costs its config (a POST and a PUT) and one PUT of its manifest
// by its tag. Nothing is looked for: the repository holds only what the restore put there.
func TestARestoreIntoANewRepositoryTakesThreeRequestsAnImage(t *testing.T) {
	reg := newRegistry(t, nil)
	store := newStore(t)
	base, err := random.Layer(4096, ggcrtypes.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	const images = 10
	s := oadpv1alpha1.ImageStream{Name: "web", Namespace: "app"}
	for i := range images {
		img, err := mutate.AppendLayers(empty.Image, base)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.Config(img, v1.Config{Labels: map[string]string{"build": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
		ref := reg.write(t, "app", "web", img)
		ref.Tags = []string{fmt.Sprintf("v%d", i)}
		s.DockerImageReferences = append(s.DockerImageReferences, ref)
	}
	opts := copier.Options{Insecure: true, Jobs: 2}
	stored := backedUp(t, store, reg, []oadpv1alpha1.ImageStream{s}, opts)
	var requests atomic.Int64
	target := newRegistry(t, func(_ http.ResponseWriter, r *http.Request) bool {
		requests.Add(1)
		return false
	})
	if res := run(t, NewRestore(store, RestoreSpec{Backup: stored, Restore: &oadpv1alpha1.ImageStreamsRestoreSpec{}, Host: target.host(), Options: opts})); res.Outcome != Completed {
		t.Fatalf("restore ended %v: %s", res.Outcome, res.Message)
	}
	// Once for the restore: a ping of each of the two clients (go-containerregistry's blob
	// writer, and the uploader of small blobs, mounts and tag lists), the tag list, and the
	// small layer's POST and PUT.
	const once = 2 + 1 + 2
	if got, most := requests.Load(), int64(3*images+once); got > most {
		t.Errorf("the restore sent %d requests for %d images, want at most %d", got, images, most)
	}
}
