// Command benchscale measures the product at scale, for `make bench-scale`: a Velero backup of
// thousands of imagestreams holding tens of thousands of image references through the plugin
// and the worker, the time the plugin adds to a Velero backup, the worker's memory and the API
// writes, the largest object the system writes, and the restore of it all. It runs the whole
// stack of package stack and fails when the backup or the restore does not complete.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	imagev1 "github.com/openshift/api/image/v1"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"gocloud.dev/blob"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
	"github.com/openshift/oadp-imagestreams-backup/test/stack"
)

// fullBackup is the Velero backup, and the restore, of every imagestream.
const fullBackup = "full"

var (
	imageStreams = flag.Int("imagestreams", 2000, "imagestreams to back up")
	tags         = flag.Int("tags", 10, "images per imagestream, each a tag of its own")
	namespaces   = flag.Int("namespaces", 20, "namespaces the imagestreams are spread over")
	overhead     = flag.Int("overhead-imagestreams", 1000, "imagestreams in the backups timed with and without the plugin")
	rounds       = flag.Int("rounds", 3, "backups timed without a plugin, with one that does nothing and with ours, each")
	logs         = flag.String("logs", "", "directory to copy velero's and the worker's logs into at the end")
	withRestore  = flag.Bool("restore", true, "restore everything at the end")
	profile      = flag.String("profile", "", "directory to write CPU profiles of the worker's first -profile-seconds of the backup and of the restore into")
	profileFor   = flag.Int("profile-seconds", 60, "seconds each -profile profile covers")
)

// pprofAddress is where the worker serves its profiles with -profile; the stack runs in a
// network namespace of its own, so the port is free.
const pprofAddress = "127.0.0.1:6061"

func main() {
	flag.Parse()
	s := &stack.Stack{WorkerFlags: []string{"--progress-interval", "10s"}} // the worker's default
	if *profile != "" {
		s.WorkerFlags = append(s.WorkerFlags, "--pprof-bind-address", pprofAddress)
	}
	stack.Main(s, "bench-scale", func(s *stack.Stack) {
		if *logs != "" {
			defer func() {
				if s.Home() != "" {
					_ = exec.Command("cp", "-r", s.Home()+"/.", *logs).Run()
				}
			}()
		}
		run(s)
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func check(err error) {
	if err != nil {
		panic(err)
	}
}

func step(format string, args ...any) {
	fmt.Printf("%s ==> %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func nsName(i int) string { return fmt.Sprintf("scale-%02d", i) }

func run(s *stack.Stack) {
	ctx := context.Background()
	step("starting the stack")
	stack.Start(s)
	c := s.Env.Client
	perNS := *imageStreams / *namespaces

	step("seeding %d imagestreams with %d images each", *imageStreams, *tags)
	reg := newRegistryStorage(s.Registry.Dir)
	layers := must(reg.sharedLayers(3, 16<<10))
	for n := range *namespaces {
		check(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(n)}}))
	}
	check(parallel(*imageStreams, 16, func(i int) error {
		ns, isName := nsName(i/perNS), fmt.Sprintf("is-%04d", i)
		repo := s.Registry.Host + "/" + ns + "/" + isName
		is := &imagev1.ImageStream{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: isName}}
		if err := c.Create(ctx, is); err != nil {
			return err
		}
		is.Status.DockerImageRepository = repo
		for t := range *tags {
			tag := fmt.Sprintf("v%d", t)
			d, err := reg.putImage(ns+"/"+isName, tag, layers, fmt.Sprintf("%s:%s", repo, tag))
			if err != nil {
				return err
			}
			is.Status.Tags = append(is.Status.Tags, imagev1.NamedTagEventList{Tag: tag, Items: []imagev1.TagEvent{
				{DockerImageReference: repo + "@" + d.String(), Image: d.String(), Created: metav1.Now()}}})
		}
		return c.Status().Update(ctx, is)
	}))
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: s.Registry.Username, Password: s.Registry.Password}))
	if _, err := remote.Get(must(name.NewTag(s.Registry.Host+"/"+nsName(0)+"/is-0000:v0")), auth); err != nil {
		panic(fmt.Sprintf("the registry does not serve the seeded images: %v", err))
	}
	all := make([]string, *namespaces)
	for n := range all {
		all[n] = nsName(n)
	}

	step("velero backup of all %d imagestreams (%d image references)", *imageStreams, *imageStreams**tags)
	writesBefore, cpuBefore := apiWrites(ctx, s), readCPUTimes()
	waitProfile := startProfile("worker-backup")
	full := timeBackup(s, fullBackup, all)
	waitProfile()
	backupCPU := readCPUTimes().minus(cpuBefore)
	if full.phase != velerov1.BackupPhaseCompleted {
		panic(fmt.Sprintf("the backup of %d imagestreams ended %s", *imageStreams, full.phase))
	}
	writes := apiWrites(ctx, s).minus(writesBefore)
	rss := s.WorkerPeakRSS()
	isbs := &oadpv1alpha1.ImageStreamsBackupList{}
	check(c.List(ctx, isbs, client.InNamespace(stack.VeleroNamespace), client.MatchingLabels{"velero.io/backup-name": fullBackup}))
	var images, uploaded int64
	largestISB, largestISBName := 0, ""
	for _, isb := range isbs.Items {
		if isb.Status.Phase != oadpv1alpha1.BackupPhaseCompleted {
			panic(fmt.Sprintf("ImageStreamsBackup %s is %s", isb.Name, isb.Status.Phase))
		}
		step("ImageStreamsBackup %s: %d imagestreams, %d of %d images (generation %d, observed %d), started %s, completed %s", isb.Name,
			len(isb.Spec.ImageStreams), isb.Status.Progress.ImagesDone, isb.Status.Progress.ImagesTotal, isb.Generation, isb.Status.ObservedGeneration,
			isb.Status.StartTimestamp.Format("15:04:05"), isb.Status.CompletionTimestamp.Format("15:04:05"))
		images += isb.Status.Progress.ImagesDone
		uploaded += isb.Status.Progress.BytesUploaded
		if n := objectSize(ctx, s, "imagestreamsbackups", isb.Name); n > largestISB {
			largestISB, largestISBName = n, isb.Name
		}
	}
	if images != int64(*imageStreams**tags) {
		panic(fmt.Sprintf("the backup stored %d images, want %d", images, *imageStreams**tags))
	}
	largestIndex, largestIndexKey := largestStoredObject(ctx, s)
	blobs := storedBlobs(ctx, s)

	// The plugin's cost: the same backup without a plugin, with a plugin that does nothing on
	// imagestreams (what Velero's call of any plugin for every item costs), and with ours,
	// velero restarted in between. Item collection ends when the backup leaves InProgress; with
	// our plugin the backup then waits for the worker, which finds every image stored already.
	overheadNS := all[:max(1, *overhead/perNS)]
	ours := peers.Binary(s, "IMAGESTREAMS_BACKUP_PLUGIN", "imagestreams-backup-plugin")
	noop := peers.Binary(s, "NOOP_PLUGIN", "noopplugin")
	var without, withNoop, with []backupTimes
	for r := range *rounds {
		for _, run := range []struct {
			name    string
			plugins []string
			times   *[]backupTimes
		}{{"none", nil, &without}, {"noop", []string{noop}, &withNoop}, {"ours", []string{ours}, &with}} {
			s.StopVelero()
			s.StartVeleroWith(run.plugins...)
			backup := fmt.Sprintf("overhead-%d-plugin-%s", r, run.name)
			step("velero backup %s of %d imagestreams", backup, len(overheadNS)*perNS)
			warmUp(s, backup)
			t := timeBackup(s, backup, overheadNS)
			if t.phase != velerov1.BackupPhaseCompleted {
				panic(fmt.Sprintf("backup %s ended %s", backup, t.phase))
			}
			*run.times = append(*run.times, t)
		}
	}

	wo, wn, wi := median(without, collection), median(withNoop, collection), median(with, collection)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "backup of %d imagestreams, %d image references\t%s (%d ImageStreamsBackups, %d images, %.1f MiB uploaded)\n",
		*imageStreams, *imageStreams**tags, full.total.Round(100*time.Millisecond), len(isbs.Items), images, float64(uploaded)/(1<<20))
	fmt.Fprintf(tw, "  item collection by velero and the plugin\t%s (%d operations for velero to follow)\n", full.collection.Round(100*time.Millisecond), full.operations)
	fmt.Fprintf(tw, "  images/s, blobs/s\t%.0f, %.0f (%d blobs in the bucket)\n", float64(images)/full.total.Seconds(), float64(blobs)/full.total.Seconds(), blobs)
	fmt.Fprintf(tw, "  CPU used\t%s\n", backupCPU)
	fmt.Fprintf(tw, "  worker peak RSS\t%.1f MiB\n", float64(rss)/(1<<20))
	fmt.Fprintf(tw, "  API writes to our kinds\t%d (%s)\n", writes.total(), writes)
	fmt.Fprintf(tw, "largest ImageStreamsBackup\t%.1f KiB (%s)\n", float64(largestISB)/1024, largestISBName)
	fmt.Fprintf(tw, "largest stored index\t%.1f KiB (%s)\n", float64(largestIndex)/1024, largestIndexKey)
	fmt.Fprintf(tw, "backup of %d imagestreams without a plugin\t%s (runs: %s)\n", len(overheadNS)*perNS, wo.Round(10*time.Millisecond), list(without, collection))
	fmt.Fprintf(tw, "  item collection with a plugin that does nothing\t%s (runs: %s)\n", wn.Round(10*time.Millisecond), list(withNoop, collection))
	fmt.Fprintf(tw, "  item collection with the plugin\t%s (runs: %s; operations: %s)\n", wi.Round(10*time.Millisecond), list(with, collection), operations(with))
	fmt.Fprintf(tw, "  added by a plugin that does nothing\t%+.1f%%\n", 100*(wn.Seconds()/wo.Seconds()-1))
	fmt.Fprintf(tw, "  added by the plugin\t%+.1f%% (%+.1f%% more than the plugin that does nothing)\n", 100*(wi.Seconds()/wo.Seconds()-1), 100*(wi.Seconds()-wn.Seconds())/wo.Seconds())
	fmt.Fprintf(tw, "  to Completed with the plugin, images already stored\t%s (runs: %s)\n", median(with, total).Round(10*time.Millisecond), list(with, total))
	if !*withRestore {
		return
	}

	step("velero restore of all %d imagestreams into new namespaces", *imageStreams)
	var mappings []string
	for _, ns := range all {
		mappings = append(mappings, ns+":restored-"+strings.TrimPrefix(ns, "scale-"))
	}
	writesBefore, cpuBefore = apiWrites(ctx, s), readCPUTimes()
	waitProfile = startProfile("worker-restore")
	t0 := time.Now()
	s.Run("restore", "create", fullBackup, "--from-backup", fullBackup, "--namespace-mappings", strings.Join(mappings, ","))
	var restore velerov1.Restore
	s.WaitFor(2*time.Hour, "the restore to end", func() bool {
		if c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: fullBackup}, &restore) != nil {
			return false
		}
		switch restore.Status.Phase {
		case velerov1.RestorePhaseCompleted, velerov1.RestorePhasePartiallyFailed, velerov1.RestorePhaseFailed, velerov1.RestorePhaseFailedValidation:
			return true
		}
		return false
	})
	restoreTime := time.Since(t0)
	waitProfile()
	restoreCPU, restoreWrites := readCPUTimes().minus(cpuBefore), apiWrites(ctx, s).minus(writesBefore)
	if restore.Status.Phase != velerov1.RestorePhaseCompleted {
		panic(fmt.Sprintf("the restore ended %s", restore.Status.Phase))
	}
	isr := &oadpv1alpha1.ImageStreamsRestore{}
	check(c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: fullBackup}, isr))
	if isr.Status.Progress.ImagesDone != int64(*imageStreams**tags) {
		panic(fmt.Sprintf("the restore pushed %d images, want %d", isr.Status.Progress.ImagesDone, *imageStreams**tags))
	}
	sample := fmt.Sprintf("%s/restored-%02d/is-%04d:v%d", s.Registry.Host, *namespaces-1, *imageStreams-1, *tags-1)
	if _, err := remote.Get(must(name.NewTag(sample)), auth); err != nil {
		panic(fmt.Sprintf("%s after the restore: %v", sample, err))
	}
	largestISR := objectSize(ctx, s, "imagestreamsrestores", fullBackup)

	fmt.Fprintf(tw, "largest ImageStreamsRestore\t%.1f KiB\n", float64(largestISR)/1024)
	fmt.Fprintf(tw, "restore of %d imagestreams, %d images pushed\t%s\n", *imageStreams, isr.Status.Progress.ImagesDone, restoreTime.Round(100*time.Millisecond))
	// Each run of the restore counts its own blobs; the restore brings back the blobs the
	// backup stored.
	fmt.Fprintf(tw, "  images/s, blobs/s\t%.0f, %.0f (the %d blobs in the bucket)\n", float64(isr.Status.Progress.ImagesDone)/restoreTime.Seconds(),
		float64(blobs)/restoreTime.Seconds(), blobs)
	fmt.Fprintf(tw, "  CPU used\t%s\n", restoreCPU)
	fmt.Fprintf(tw, "  worker peak RSS\t%.1f MiB\n", float64(s.WorkerPeakRSS())/(1<<20))
	fmt.Fprintf(tw, "  API writes to our kinds\t%d (%s)\n", restoreWrites.total(), restoreWrites)
}

// startProfile profiles the worker with -profile; the returned function waits for the profile.
func startProfile(label string) (wait func()) {
	if *profile == "" {
		return func() {}
	}
	return profileWorker(pprofAddress, *profile, label, *profileFor)
}

type backupTimes struct {
	collection, total time.Duration
	phase             velerov1.BackupPhase
	// operations is how many operations the plugin returned, which Velero asks about in turn.
	operations int
}

func collection(t backupTimes) time.Duration { return t.collection }
func total(t backupTimes) time.Duration      { return t.total }

func median(ts []backupTimes, f func(backupTimes) time.Duration) time.Duration {
	ds := make([]time.Duration, len(ts))
	for i, t := range ts {
		ds[i] = f(t)
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func operations(ts []backupTimes) string {
	var out []string
	for _, t := range ts {
		out = append(out, fmt.Sprint(t.operations))
	}
	return strings.Join(out, ", ")
}

func list(ts []backupTimes, f func(backupTimes) time.Duration) string {
	var out []string
	for _, t := range ts {
		out = append(out, f(t).Round(10*time.Millisecond).String())
	}
	return strings.Join(out, ", ")
}

// timeBackup runs a Velero backup of namespaces and times it from creation to the end of item
// collection (the backup leaves InProgress) and to its end.
func timeBackup(s *stack.Stack, backup string, namespaces []string) backupTimes {
	ctx := context.Background()
	t0 := time.Now()
	s.Run("backup", "create", backup, "--include-namespaces", strings.Join(namespaces, ","))
	var t backupTimes
	var b velerov1.Backup
	s.WaitFor(2*time.Hour, "backup "+backup+" to end", func() bool {
		if s.Env.Client.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: backup}, &b) != nil {
			return false
		}
		switch b.Status.Phase {
		case "", velerov1.BackupPhaseNew, velerov1.BackupPhaseQueued, velerov1.BackupPhaseReadyToStart, velerov1.BackupPhaseInProgress:
			return false
		}
		if t.collection == 0 {
			t.collection = time.Since(t0)
		}
		switch b.Status.Phase {
		case velerov1.BackupPhaseCompleted, velerov1.BackupPhasePartiallyFailed, velerov1.BackupPhaseFailed, velerov1.BackupPhaseFailedValidation:
			t.total, t.phase, t.operations = time.Since(t0), b.Status.Phase, b.Status.BackupItemOperationsAttempted
			return true
		}
		return false
	})
	return t
}

// warmUp waits until a freshly started velero server runs backups, with one of an empty
// namespace, so that its start is not timed.
func warmUp(s *stack.Stack, backup string) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "empty"}}
	if err := s.Env.Client.Create(ctx, ns); err != nil && !strings.Contains(err.Error(), "already exists") {
		panic(err)
	}
	s.Run("backup", "create", "warm-up-"+backup, "--include-namespaces", "empty", "--wait")
}

// objectSize is the size of a resource of ours as the API server stores and serves it.
func objectSize(ctx context.Context, s *stack.Stack, resource, object string) int {
	raw := must(restClient(s).Get().
		AbsPath("/apis", oadpv1alpha1.GroupVersion.Group, oadpv1alpha1.GroupVersion.Version, "namespaces", stack.VeleroNamespace, resource, object).
		DoRaw(ctx))
	return len(raw)
}

// largestStoredObject is the largest object under the store's backups/, where the indexes and
// markers are; blobs are the images' own bytes.
func largestStoredObject(ctx context.Context, s *stack.Stack) (int, string) {
	b := s.Bucket()
	defer b.Close()
	var largest int
	var key string
	it := b.List(&blob.ListOptions{Prefix: "cluster-a/plugins/imagestreams/backups/"})
	for {
		o, err := it.Next(ctx)
		if err == io.EOF {
			return largest, key
		}
		check(err)
		if int(o.Size) > largest {
			largest, key = int(o.Size), o.Key
		}
	}
}

// storedBlobs counts the blobs in the store: every image's manifest, config and layers, once.
func storedBlobs(ctx context.Context, s *stack.Stack) int64 {
	b := s.Bucket()
	defer b.Close()
	var n int64
	it := b.List(&blob.ListOptions{Prefix: "cluster-a/plugins/imagestreams/blobs/"})
	for {
		_, err := it.Next(ctx)
		if err == io.EOF {
			return n
		}
		check(err)
		n++
	}
}

func restClient(s *stack.Stack) rest.Interface {
	return must(kubernetes.NewForConfig(s.Env.Config)).RESTClient()
}

// writes counts API write requests to this project's kinds by resource, subresource and verb,
// from kube-apiserver's apiserver_request_total.
type writes map[string]int

func (w writes) total() (n int) {
	for _, v := range w {
		n += v
	}
	return n
}

func (w writes) minus(before writes) writes {
	out := writes{}
	for k, v := range w {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

func (w writes) String() string {
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range w {
			if !yield(k) {
				return
			}
		}
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, w[k]))
	}
	return strings.Join(parts, ", ")
}

func apiWrites(ctx context.Context, s *stack.Stack) writes {
	raw := must(restClient(s).Get().AbsPath("/metrics").DoRaw(ctx))
	out := writes{}
	for line := range strings.Lines(string(raw)) {
		if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `group="`+oadpv1alpha1.GroupVersion.Group+`"`) {
			continue
		}
		labels := map[string]string{}
		for kv := range strings.SplitSeq(line[strings.Index(line, "{")+1:strings.LastIndex(line, "}")], ",") {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = strings.Trim(v, `"`)
		}
		switch labels["verb"] {
		case "POST", "PUT", "PATCH", "APPLY", "DELETE":
		default:
			continue
		}
		var n float64
		if _, err := fmt.Sscan(strings.TrimSpace(line[strings.LastIndex(line, "}")+1:]), &n); err != nil {
			continue
		}
		key := labels["resource"]
		if labels["subresource"] != "" {
			key += "/" + labels["subresource"]
		}
		out[key+" "+labels["verb"]] += int(n)
	}
	return out
}
