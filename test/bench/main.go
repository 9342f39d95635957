// Command bench measures the copier and pusher against crane, skopeo, oras and regctl on the
// same images in one run, all against a distribution registry on 127.0.0.1, and prints a table
// beside what this machine allows: its disk's write speed with fsync and sha256 on one core. It is run by
// `make bench`; it is not a pass/fail test.
//
// Every tool runs as its own process so that wall time, CPU seconds and peak RSS are measured
// the same way for each; ours runs as this binary's `copy` and `restore` subcommands.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

// The child commands: this binary's own backup and restore, run as processes of their own.
const (
	cmdCopy    = "copy"
	cmdRestore = "restore"
)

// jobsFlag is the child's flag for n blobs at once.
func jobsFlag(n int) []string { return []string{"-jobs", fmt.Sprint(n)} }

// bucketFlag is the child's flag for its bucket: a file bucket's directory, or with -s3 an S3
// bucket's name.
func bucketFlag(b string) []string { return []string{"-bucket", b} }

func main() {
	log.SetFlags(0)
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case cmdCopy:
			runCopy(os.Args[2:])
			return
		case cmdRestore:
			runRestore(os.Args[2:])
			return
		case "measure":
			runMeasure(os.Args[2:])
			return
		case cmdPin:
			runPin(os.Args[2:])
			return
		}
	}
	crane := flag.String("crane", "crane", "crane binary")
	skopeo := flag.String("skopeo", "skopeo", "skopeo binary")
	oras := flag.String("oras", "", "oras binary; its rows are left out when empty")
	regctl := flag.String("regctl", "", "regctl binary; its rows are left out when empty")
	jobs := flag.Int("jobs", 4, "blobs our copier moves at once")
	rounds := flag.Int("rounds", 3, "times each measurement runs; the table shows the median")
	scale := flag.Int64("layer-mib", 256, "size of each of the four large layers in scenario (a)")
	only := flag.String("scenarios", "abc", "the scenarios to measure, by letter: (a) large layers, (b) small blobs, (c) shared layers")
	profiles := flag.String("profile", "", "directory for CPU profiles of our backups and restores, one a scenario and round (go tool pprof)")
	flag.Parse()
	if err := run(peerTools{crane: *crane, skopeo: *skopeo, oras: *oras, regctl: *regctl, profiles: *profiles}, *jobs, *rounds, *scale<<20, *only); err != nil {
		log.Fatal(err)
	}
}

// peerTools are the binaries of the other tools, and where our profiles go.
type peerTools struct{ crane, skopeo, oras, regctl, profiles string }

// profileFlag is the flag that has our run of kind (backup or restore) of scenario i in round
// write its CPU profile, if asked.
func (t peerTools) profileFlag(kind string, round, i int) []string {
	if t.profiles == "" {
		return nil
	}
	return []string{"-cpuprofile", filepath.Join(t.profiles, fmt.Sprintf("%s-r%d-s%d.pprof", kind, round, i))}
}

// scenario is a set of images in the source registry.
type scenario struct {
	name string
	// index numbers the scenario's repositories and directories; restore and rebackup label
	// the rows of its restore and, when set, of a second backup of it.
	index             int
	restore, rebackup string
	refs              []name.Digest
	tags              []name.Tag // each image is tagged too: oras backs up tags only
	blobs             int        // unique blobs, manifests and configs included
	bytes             int64      // unique bytes
	images            []v1.Image
}

type row struct {
	scenario, tool string
	wall, cpu      time.Duration
	rss            int64 // KiB
	written        int64
	blobs          int
	bytes          int64
	requests       int64 // to the S3 server, for rows that write to it
	registryCPU    time.Duration
}

// recorder keeps every measurement, by scenario and tool in the order first seen.
type recorder struct {
	results map[[2]string][]row
	order   [][2]string
}

// measure runs cmd for tool on scenario s under label and records its figures, with the CPU
// time reg, the registry it reads or writes, spent meanwhile; dir is where it writes. It
// returns the row it recorded.
func (rec *recorder) measure(s *scenario, label, tool, dir string, reg *peers.Registry, cmd *exec.Cmd) (*row, error) {
	before := dirSize(dir)
	cpuBefore, err := reg.CPU()
	if err != nil {
		return nil, err
	}
	r, err := runMeasured(cmd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", label, tool, err)
	}
	cpuAfter, err := reg.CPU()
	if err != nil {
		return nil, err
	}
	r.scenario, r.tool, r.written, r.blobs, r.bytes = label, tool, dirSize(dir)-before, s.blobs, s.bytes
	r.registryCPU = cpuAfter - cpuBefore
	key := [2]string{label, tool}
	if rec.results[key] == nil {
		rec.order = append(rec.order, key)
	}
	rec.results[key] = append(rec.results[key], r)
	log.Printf("%-40s %-12s %8.2fs", label, tool, r.wall.Seconds())
	return &rec.results[key][len(rec.results[key])-1], nil
}

func run(tools peerTools, jobs, rounds int, bigLayer int64, only string) error {
	env := newEnv()
	defer env.cleanup()
	src := peers.StartRegistry(env, peers.NoAuth)
	work := env.TempDir()
	rng := rand.New(rand.NewChaCha8([32]byte{1}))

	layer := func(size int64) v1.Layer {
		b := make([]byte, size)
		for i := 0; i+8 <= len(b); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		return static.NewLayer(b, types.OCILayer)
	}
	image := func(layers ...v1.Layer) v1.Image {
		img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), layers...)
		if err != nil {
			log.Fatal(err)
		}
		return img
	}

	log.Printf("preparing images in %s", src.Host)
	big := make([]v1.Layer, 4)
	for i := range big {
		big[i] = layer(bigLayer)
	}
	small := make([]v1.Layer, 500)
	for i := range small {
		small[i] = layer(64 << 10)
	}
	base := []v1.Layer{layer(8 << 20), layer(8 << 20), layer(8 << 20)}
	var shared []v1.Image
	for range 20 {
		shared = append(shared, image(append(append([]v1.Layer{}, base...), layer(1<<20))...))
	}
	all := []*scenario{
		{name: fmt.Sprintf("(a) 4 x %d MiB layers", bigLayer>>20), images: []v1.Image{image(big...)}, restore: "(e) restore of (a)"},
		{name: "(b) 500 x 64 KiB layers", images: []v1.Image{image(small...)}, restore: "(f) restore of (b)"},
		{name: "(c) 20 images, 3 shared base layers", images: shared, restore: "(g) restore of (c)", rebackup: "(d) re-backup of (c)"},
	}
	var scenarios []*scenario
	for i, s := range all {
		if s.index = i; strings.ContainsRune(only, rune('a'+i)) {
			scenarios = append(scenarios, s)
		}
	}
	for _, s := range scenarios {
		i := s.index
		seen := map[v1.Hash]bool{}
		for j, img := range s.images {
			repo, _ := name.NewRepository(fmt.Sprintf("%s/bench%d/img%d", src.Host, i, j))
			h, _ := img.Digest()
			ref := repo.Digest(h.String())
			if err := remote.Write(ref, img, remote.WithJobs(8)); err != nil {
				return fmt.Errorf("pushing %s: %w", ref, err)
			}
			tag := repo.Tag(fmt.Sprintf("img%d", j))
			if err := remote.Tag(tag, img); err != nil {
				return fmt.Errorf("tagging %s: %w", tag, err)
			}
			s.refs, s.tags = append(s.refs, ref), append(s.tags, tag)
			count := func(h v1.Hash, size int64) {
				if !seen[h] {
					seen[h] = true
					s.blobs++
					s.bytes += size
				}
			}
			m, _ := img.Manifest()
			raw, _ := img.RawManifest()
			count(h, int64(len(raw)))
			count(m.Config.Digest, m.Config.Size)
			for _, l := range m.Layers {
				count(l.Digest, l.Size)
			}
		}
	}

	self, _ := os.Executable()
	refs := func(s *scenario) (out []string) {
		for _, r := range s.refs {
			out = append(out, r.String())
		}
		return out
	}
	// Figures on a 2-core machine wander by 20% from run to run (disk flushes, the registry's
	// own hashing), so every measurement runs `rounds` times, tools taking turns going first,
	// and the table shows each one's median by wall time.
	rec := &recorder{results: map[[2]string][]row{}}
	measure := func(s *scenario, label, tool, dir string, cmd *exec.Cmd) error {
		_, err := rec.measure(s, label, tool, dir, src, cmd)
		return err
	}
	backupTools := newBackupTools(self, jobs, tools, src.Host, refs)
	apart := splitCores()
	for round := range rounds {
		for _, s := range scenarios {
			for k := range backupTools {
				t := backupTools[(k+round)%len(backupTools)]
				dir := filepath.Join(work, fmt.Sprintf("r%d-s%d-%s", round, s.index, strings.Fields(t.name)[0]))
				if err := measure(s, s.name, t.name, dir, t.cmd(s, dir, s.index)); err != nil {
					return err
				}
				if s.rebackup != "" {
					if err := measure(s, s.rebackup, t.name, dir, t.cmd(s, dir, s.index)); err != nil {
						return err
					}
				}
			}
		}
		if err := benchRestores(rec, restoreRun{tools: tools, scenarios: scenarios, self: self, work: work, jobs: jobs, round: round, env: env, apart: apart}); err != nil {
			return err
		}
		// A round of the large layers writes a gibibyte for each backup and restore.
		done, _ := filepath.Glob(filepath.Join(work, fmt.Sprintf("r%d-*", round)))
		for _, dir := range done {
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
		}
	}
	s3, err := startS3(env)
	if err != nil {
		return err
	}
	if err := benchS3(rec, s3Run{s3: s3, src: src, scenarios: scenarios, self: self, jobs: jobs, rounds: rounds, refs: refs, env: env}); err != nil {
		return err
	}
	var rows []row
	for _, key := range rec.order {
		rs := rec.results[key]
		sort.Slice(rs, func(i, j int) bool { return rs[i].wall < rs[j].wall })
		rows = append(rows, rs[len(rs)/2])
	}

	lim, err := measureLimits(work)
	if err != nil {
		return err
	}
	return printTable(rows, lim)
}

// printTable prints the rows, each with its throughput as a share of the machine's limit.
func printTable(rows []row, lim limits) error {
	fmt.Printf("this machine: the bucket's disk writes %.0f MiB/s with fsync; sha256 hashes %.0f MiB/s on one core; a row's limit is the lower, %.0f MiB/s\n",
		lim.disk, lim.sha256, lim.min())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\ttool\tMiB/s\tof limit\tblobs/s\tbytes written\tS3 requests\tper blob\tpeak RSS MiB\tCPU s\tregistry CPU s\twall s\t")
	for _, r := range rows {
		secs := r.wall.Seconds()
		mibs := float64(r.bytes) / (1 << 20) / secs
		share := "-" // a re-backup writes nothing; no limit applies
		if r.written > 0 {
			share = fmt.Sprintf("%.0f%%", 100*mibs/lim.min())
		}
		requests, perBlob := "-", "-"
		if r.requests > 0 {
			requests, perBlob = fmt.Sprint(r.requests), fmt.Sprintf("%.2f", float64(r.requests)/float64(r.blobs))
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%.0f\t%d\t%s\t%s\t%.1f\t%.2f\t%.2f\t%.2f\t\n", r.scenario, r.tool,
			mibs, share, float64(r.blobs)/secs, r.written, requests, perBlob, float64(r.rss)/1024, r.cpu.Seconds(), r.registryCPU.Seconds(), secs)
	}
	return tw.Flush()
}

// tool is a way to back a scenario up into dir.
type tool struct {
	name string
	cmd  func(s *scenario, dir string, i int) *exec.Cmd
}

// newBackupTools are ours (this binary, self) and the peers' backups, from the registry at
// srcHost.
func newBackupTools(self string, jobs int, tools peerTools, srcHost string, refs func(*scenario) []string) []tool {
	backupTools := []tool{
		{"ours", func(s *scenario, dir string, _ int) *exec.Cmd {
			args := append(append([]string{cmdCopy}, bucketFlag(dir)...), jobsFlag(jobs)...)
			// A re-backup writes into the same directory: its profile is named apart.
			if tools.profiles != "" {
				args = append(args, "-cpuprofile", filepath.Join(tools.profiles, fmt.Sprintf("backup-%s-%d.pprof", filepath.Base(dir), time.Now().UnixNano())))
			}
			return exec.Command(self, append(args, refs(s)...)...)
		}},
		{"crane pull", func(s *scenario, dir string, _ int) *exec.Cmd {
			return exec.Command(tools.crane, append(append([]string{"pull", "--format=oci"}, refs(s)...), dir)...)
		}},
		{"skopeo copy", func(s *scenario, dir string, _ int) *exec.Cmd {
			var script strings.Builder
			for j, r := range refs(s) {
				fmt.Fprintf(&script, "%s copy -q --src-tls-verify=false docker://%s oci:%s:img%d || exit 1\n", tools.skopeo, r, dir, j)
			}
			return exec.Command("sh", "-c", script.String())
		}},
	}
	if tools.oras != "" {
		backupTools = append(backupTools, tool{"oras backup", func(s *scenario, dir string, _ int) *exec.Cmd {
			var script strings.Builder
			for _, tag := range s.tags {
				fmt.Fprintf(&script, "%s backup --plain-http --no-tty --output %s %s >/dev/null || exit 1\n", tools.oras, dir, tag)
			}
			return exec.Command("sh", "-c", script.String())
		}})
	}
	if tools.regctl != "" {
		backupTools = append(backupTools, tool{"regctl copy", func(s *scenario, dir string, _ int) *exec.Cmd {
			var script strings.Builder
			for j, r := range s.refs {
				fmt.Fprintf(&script, "%s --host reg=%s,tls=disabled image copy %s ocidir://%s:img%d >/dev/null || exit 1\n", tools.regctl, srcHost, r, dir, j)
			}
			return exec.Command("sh", "-c", script.String())
		}})
	}
	return backupTools
}

// restoreRun is what benchRestores measures in one round.
type restoreRun struct {
	tools       peerTools
	scenarios   []*scenario
	self, work  string
	jobs, round int
	env         *env
	// apart, when set, has the large layers' restore measured a second time with the registry
	// on a core of its own.
	apart *cores
}

// benchRestores restores every scenario, as each tool backed it up in the round, into empty
// registries: ours pushes each image into a repository of its own, as the worker does; crane
// push and oras restore push the images of their layout into one repository (crane as one
// index when there are several).
func benchRestores(rec *recorder, run restoreRun) error {
	for _, s := range run.scenarios {
		i := s.index
		layout := func(tool string) string {
			return filepath.Join(run.work, fmt.Sprintf("r%d-s%d-%s", run.round, i, tool))
		}
		restores := []func(host string) (string, *exec.Cmd){
			func(host string) (string, *exec.Cmd) {
				args := append(append([]string{cmdRestore, "-registry", host}, bucketFlag(layout("ours"))...), jobsFlag(run.jobs)...)
				return "ours", exec.Command(run.self, append(args, run.tools.profileFlag("restore", run.round, i)...)...)
			},
			func(host string) (string, *exec.Cmd) {
				args := []string{"push"}
				if len(s.refs) > 1 {
					args = append(args, "--index")
				}
				return "crane push", exec.Command(run.tools.crane, append(args, layout("crane"), fmt.Sprintf("%s/bench%d/img0:latest", host, i))...)
			},
		}
		if run.tools.oras != "" {
			restores = append(restores, func(host string) (string, *exec.Cmd) {
				tags := make([]string, len(s.tags))
				for j, t := range s.tags {
					tags[j] = t.TagStr()
				}
				return "oras restore", exec.Command("sh", "-c", fmt.Sprintf("%s restore --plain-http --no-tty --input %s %s/bench%d/all:%s >/dev/null",
					run.tools.oras, layout("oras"), host, i, strings.Join(tags, ",")))
			})
		}
		// each restores with every tool into a registry of its own, under label; apart, when
		// set, keeps the registry on one core and the tool on the others.
		each := func(label string, apart *cores) error {
			for k := range restores {
				r := peers.StartRegistry(run.env, peers.NoAuth)
				tool, cmd := restores[(k+run.round)%len(restores)](r.Host)
				if apart != nil {
					if err := r.Pin(&apart.registry); err != nil {
						return err
					}
					cmd = apart.pin(run.self, cmd)
				}
				if _, err := rec.measure(s, label, tool, r.Dir, r, cmd); err != nil {
					return err
				}
				if err := os.RemoveAll(r.Dir); err != nil {
					return err
				}
			}
			return nil
		}
		if err := each(s.restore, nil); err != nil {
			return err
		}
		// On one machine the registry's hashing and the tool's share the cores; in a cluster
		// the registry runs in pods of its own. The large layers' restore, bound by the cores,
		// is measured that way too.
		if i == 0 && run.apart != nil {
			if err := each(strings.Fields(s.restore)[0]+" registry on a core of its own", run.apart); err != nil {
				return err
			}
		}
	}
	return nil
}

// cmdPin is the child command that runs a command on given CPUs.
const cmdPin = "pin"

// cores are the CPUs this process may use, split in two: the last for the registry, the others
// for the tool.
type cores struct{ registry, tool unix.CPUSet }

// splitCores splits the CPUs this process may use; it returns nil with fewer than two.
func splitCores() *cores {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil || all.Count() < 2 {
		return nil
	}
	last := -1
	for cpu := range len(all) * 64 {
		if all.IsSet(cpu) {
			last = cpu
		}
	}
	c := &cores{}
	for cpu := range last {
		if all.IsSet(cpu) {
			c.tool.Set(cpu)
		}
	}
	c.registry.Set(last)
	return c
}

// pin returns cmd run through this binary's pin command on the tool's CPUs.
func (c *cores) pin(self string, cmd *exec.Cmd) *exec.Cmd {
	var cpus []string
	for cpu := range len(c.tool) * 64 {
		if c.tool.IsSet(cpu) {
			cpus = append(cpus, fmt.Sprint(cpu))
		}
	}
	return exec.Command(self, append([]string{cmdPin, strings.Join(cpus, ","), cmd.Path}, cmd.Args[1:]...)...)
}

// runPin runs args[1:] on the CPUs listed in args[0], in this process: execve keeps the
// calling thread's affinity, and the command's threads inherit it.
func runPin(args []string) {
	var set unix.CPUSet
	for f := range strings.SplitSeq(args[0], ",") {
		cpu, err := strconv.Atoi(f)
		if err != nil {
			log.Fatalf("pin: cpu %q: %v", f, err)
		}
		set.Set(cpu)
	}
	runtime.LockOSThread()
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		log.Fatalf("pin: %v", err)
	}
	path, err := exec.LookPath(args[1])
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(syscall.Exec(path, args[1:], os.Environ()))
}

// runMeasured runs cmd under this binary's measure subcommand and reads its resource use.
// The indirection keeps the figures honest: Linux carries a process's peak RSS across exec,
// and this process holds every test image in memory, so a tool started from here directly
// would report this process's peak; started from the small measure process it reports its own.
func runMeasured(cmd *exec.Cmd) (row, error) {
	self, _ := os.Executable()
	m := exec.Command(self, append([]string{"measure", cmd.Path}, cmd.Args[1:]...)...)
	var stderr strings.Builder
	m.Stderr = &stderr
	out, err := m.Output()
	if err != nil {
		return row{}, fmt.Errorf("%v: %s", err, stderr.String())
	}
	var r struct {
		Wall, CPU time.Duration
		RSS       int64
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return row{}, fmt.Errorf("reading measurement %q: %w", out, err)
	}
	return row{wall: r.Wall, cpu: r.CPU, rss: r.RSS}, nil
}

// runMeasure runs a command and prints its wall time, CPU time and peak RSS (KiB) as JSON;
// wait4's figures include the children the command waited for, such as skopeo under sh.
func runMeasure(args []string) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		log.Fatalf("%s: %v", args[0], err)
	}
	wall := time.Since(start)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	_ = json.NewEncoder(os.Stdout).Encode(map[string]int64{"Wall": int64(wall), "CPU": ru.Utime.Nano() + ru.Stime.Nano(), "RSS": ru.Maxrss})
}

func dirSize(dir string) (n int64) {
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// env lets the peers package start servers outside `go test`.
type env struct {
	cleanups []func()
	root     string
}

func newEnv() *env {
	dir, err := os.MkdirTemp("", "bench-")
	if err != nil {
		log.Fatal(err)
	}
	return &env{root: dir}
}

func (e *env) Helper()                           {}
func (e *env) Fatal(args ...any)                 { e.cleanup(); log.Fatal(args...) }
func (e *env) Fatalf(format string, args ...any) { e.cleanup(); log.Fatalf(format, args...) }
func (e *env) Cleanup(f func())                  { e.cleanups = append(e.cleanups, f) }
func (e *env) TempDir() string {
	d, err := os.MkdirTemp(e.root, "")
	if err != nil {
		log.Fatal(err)
	}
	return d
}

func (e *env) cleanup() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = nil
	_ = os.RemoveAll(e.root)
}
