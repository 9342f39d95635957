// Package stack runs the whole product the way users do, all on 127.0.0.1: kube-apiserver,
// etcd and kube-controller-manager's garbage collector and namespace controller, every Velero CRD, versitygw with a BackupStorageLocation, the distribution registry with
// auth, a real `velero server` loading its AWS plugin and ours, and the worker binary. Velero and the
// worker can be stopped and started again, as Kubernetes would restart their pods. The end-to-end
// tests and `make demo` use it; both run in a network namespace of their own, because velero's
// manager always listens on *:8080.
package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	configv1 "github.com/openshift/api/config/v1"
	imagev1 "github.com/openshift/api/image/v1"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"gocloud.dev/blob"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
	"github.com/openshift/oadp-imagestreams-backup/test/testenv"
)

// veleroApp names the placeholder Deployment of Velero that its restore actions look up.
const veleroApp = "velero"

// VeleroNamespace is where Velero, its BackupStorageLocation and the worker live.
const VeleroNamespace = "velero"

// DefaultPrefix is the BackupStorageLocation's prefix unless Stack.Prefix says otherwise.
const DefaultPrefix = "cluster-a"

// Bucket is the S3 bucket of the BackupStorageLocation.
const Bucket = "velero"

// Stack is a running product.
type Stack struct {
	// WorkerFlags are added to the worker's command line, after and so over the stack's own.
	WorkerFlags []string
	// S3, when set before Start, is an S3 server another stack runs: a second cluster pointed at
	// the same bucket. Start starts one otherwise.
	S3 *peers.S3
	// Prefix is the BackupStorageLocation's prefix in the bucket; DefaultPrefix when empty.
	Prefix string

	Env        *testenv.Environment
	Registry   *peers.Registry
	kubeconfig string
	home       string
	velero     string
	// CredentialsFile holds the S3 credentials, for the worker's subcommands.
	CredentialsFile string

	cleanups []func()
	dir      string

	veleroServer, worker *process
	s3Meter              *meter
}

// BytesSentToS3 counts the bytes velero and the worker have sent to the S3 server, HTTP
// headers, retries and abandoned uploads included.
func (s *Stack) BytesSentToS3() int64 { return s.s3Meter.sent.Load() }

// The stack is its own peers.TB: failures panic, cleanups run at Stop.
func (s *Stack) Helper()                           {}
func (s *Stack) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (s *Stack) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (s *Stack) Cleanup(f func())                  { s.cleanups = append(s.cleanups, f) }
func (s *Stack) TempDir() string {
	d, err := os.MkdirTemp(s.dir, "")
	if err != nil {
		panic(err)
	}
	return d
}

// Stop ends every process the stack started and removes its files.
func (s *Stack) Stop() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
	os.RemoveAll(s.dir)
}

func check(err error) {
	if err != nil {
		panic(err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Start brings the stack up; it panics when a part does not start. Call Stop at the end,
// also when Start panics halfway.
func Start(s *Stack) {
	ctx := context.Background()
	t := s
	s.dir = must(os.MkdirTemp("", "imagestreams-backup-"))
	s.home = t.TempDir()
	// The garbage collector and namespace controller run as in a cluster: deletion and
	// ownership behave as they do for users.
	s.Env = must(testenv.StartWith(testenv.Options{ControllerManager: true}))
	t.Cleanup(func() { _ = s.Env.Stop() })
	s.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	check(os.WriteFile(s.kubeconfig, must(s.Env.AdminKubeconfig()), 0o600))
	s.velero = peers.Binary(t, "VELERO", "velero-v*")
	c := s.Env.Client

	// Every CRD before velero starts: its discovery refreshes only every 5 minutes, and a
	// backup silently skips kinds it has not discovered.
	list := &unstructured.UnstructuredList{}
	check(list.UnmarshalJSON(must(yaml.YAMLToJSON([]byte(s.Run("install", "--crds-only", "--dry-run", "-o", "yaml"))))))
	check(list.EachListItem(func(o runtime.Object) error {
		if err := c.Create(ctx, o.(*unstructured.Unstructured)); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		return nil
	}))
	if len(list.Items) < 10 {
		panic(fmt.Sprintf("velero install --crds-only listed %d CRDs", len(list.Items)))
	}
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: VeleroNamespace}},
		// Velero's restore actions look this Deployment up on every restore.
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: VeleroNamespace, Name: veleroApp}, Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": veleroApp}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": veleroApp}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: veleroApp, Image: veleroApp}}}},
		}},
	} {
		check(c.Create(ctx, o))
	}

	s.Registry = peers.StartRegistry(t, peers.TokenAuth(5*time.Minute))
	img := &configv1.Image{ObjectMeta: metav1.ObjectMeta{Name: "cluster"}}
	check(c.Create(ctx, img))
	img.Status.InternalRegistryHostname = s.Registry.Host
	check(c.Status().Update(ctx, img))

	if s.S3 == nil {
		s.S3 = peers.StartS3(t, Bucket)
	}
	if s.Prefix == "" {
		s.Prefix = DefaultPrefix
	}
	// Velero and the worker reach S3 through a meter that counts what they upload.
	s.s3Meter = must(startMeter(strings.TrimPrefix(s.S3.URL, "http://")))
	t.Cleanup(s.s3Meter.close)
	s.CredentialsFile = filepath.Join(t.TempDir(), "cloud")
	check(os.WriteFile(s.CredentialsFile, s.S3.CredentialsFile("default"), 0o600))
	check(c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: VeleroNamespace, Name: credentialsSecret},
		Data: map[string][]byte{credentialsKey: s.S3.CredentialsFile("default")}}))
	bsl := s.location("default", s.Prefix, "http://"+s.s3Meter.addr())
	bsl.Spec.Default = true
	check(c.Create(ctx, bsl))

	s.StartVelero(true)
	s.StartWorker()

	s.WaitForLocation()
}

// WaitForLocation waits until Velero has found its BackupStorageLocation Available, as after a
// start: Velero refuses backups to a location it has not validated.
func (s *Stack) WaitForLocation() {
	s.WaitFor(time.Minute, "the BackupStorageLocation Available", func() bool {
		bsl := &velerov1.BackupStorageLocation{}
		return s.Env.Client.Get(context.Background(), client.ObjectKey{Namespace: VeleroNamespace, Name: "default"}, bsl) == nil &&
			bsl.Status.Phase == velerov1.BackupStorageLocationPhaseAvailable
	})
}

// StartVelero starts `velero server` with velero-plugin-for-aws, and with our plugin when
// withPlugin is true. It appends to velero-server.log.
func (s *Stack) StartVelero(withPlugin bool) {
	if withPlugin {
		s.StartVeleroWith(peers.Binary(s, "IMAGESTREAMS_BACKUP_PLUGIN", "imagestreams-backup-plugin"))
		return
	}
	s.StartVeleroWith()
}

// StartVeleroWith starts `velero server` with velero-plugin-for-aws and the plugin binaries
// given. It appends to velero-server.log.
func (s *Stack) StartVeleroWith(plugins ...string) {
	if s.veleroServer != nil {
		panic("velero server already running")
	}
	dir := s.TempDir()
	for _, src := range append(plugins, peers.Binary(s, "VELERO_PLUGIN_AWS", "velero-plugin-for-aws-v*")) {
		check(os.Symlink(src, filepath.Join(dir, filepath.Base(src))))
	}
	s.veleroServer = s.startProcess("velero-server.log", s.velero, "server", "--kubeconfig", s.kubeconfig, "--namespace", VeleroNamespace,
		"--plugin-dir", dir, "--metrics-address", "127.0.0.1:0", "--profiler-address", "127.0.0.1:0",
		"--item-operation-sync-frequency", "1s", "--store-validation-frequency", "5s", "--log-level", "info",
		// Backups synced from object storage, and expired ones deleted, within seconds; two
		// backups, and four item blocks each, at once.
		"--backup-sync-period", "5s", "--garbage-collection-frequency", "5s",
		"--concurrent-backups", "2", "--item-block-worker-count", "4")
}

// StopVelero stops the velero server the way Kubernetes stops its pod: SIGTERM, then SIGKILL
// after a grace period.
func (s *Stack) StopVelero() {
	s.veleroServer.stop(syscall.SIGTERM, 30*time.Second)
	s.veleroServer = nil
}

// StartWorker starts the worker binary as the Deployment runs it, with the registry's password
// as its service account token. It appends to worker.log.
func (s *Stack) StartWorker() {
	if s.worker != nil {
		panic("worker already running")
	}
	token := filepath.Join(s.home, "registry-token")
	check(os.WriteFile(token, []byte(s.Registry.Password), 0o600))
	args := append([]string{"--kubeconfig", s.kubeconfig, "--namespace", VeleroNamespace, "--registry-token-file", token,
		"--registry-username", s.Registry.Username, "--jobs", "4", "--progress-interval", "200ms", "--retry-interval", "1s",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0"}, s.WorkerFlags...)
	s.worker = s.startProcess("worker.log", peers.Binary(s, "IMAGESTREAMS_BACKUP_WORKER", "imagestreams-backup-worker"), args...)
}

// KillWorker ends the worker with SIGKILL, as a node failure or the OOM killer would, and
// returns its peak resident memory in bytes.
func (s *Stack) KillWorker() int64 {
	peak := s.worker.peakRSS()
	s.worker.stop(syscall.SIGKILL, 0)
	s.worker = nil
	return peak
}

// WorkerPeakRSS is the running worker's peak resident memory in bytes.
func (s *Stack) WorkerPeakRSS() int64 { return s.worker.peakRSS() }

// process is a server the stack can stop and start again.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File
}

func (s *Stack) startProcess(logName, bin string, args ...string) *process {
	cmd := exec.Command(bin, args...)
	cmd.Env = s.environ()
	log := must(os.OpenFile(filepath.Join(s.home, logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644))
	cmd.Stdout, cmd.Stderr = log, log
	check(cmd.Start())
	p := &process{cmd: cmd, exited: make(chan struct{}), log: log}
	go func() { _ = cmd.Wait(); log.Close(); close(p.exited) }()
	s.Cleanup(func() { p.stop(syscall.SIGKILL, 0) })
	return p
}

func (p *process) stop(sig syscall.Signal, grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// peakRSS reads VmHWM, the process's peak resident set size, from /proc.
func (p *process) peakRSS() int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kib int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kib); err != nil {
				return 0
			}
			return kib << 10
		}
	}
	return 0
}

func (s *Stack) environ() []string {
	return append(os.Environ(), "KUBECONFIG="+s.kubeconfig, "HOME="+s.home, "TMPDIR="+s.home)
}

// Run runs the velero CLI and returns its output.
func (s *Stack) Run(args ...string) string {
	cmd := exec.Command(s.velero, append(args, "--kubeconfig", s.kubeconfig, "--namespace", VeleroNamespace)...)
	cmd.Env = s.environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		panic(fmt.Sprintf("velero %v: %v\n%s", args, err, out))
	}
	return string(out)
}

// WaitFor polls cond; it panics on timeout with what the stack's resources say and the tails
// of velero's and the worker's logs.
func (s *Stack) WaitFor(timeout time.Duration, what string, cond func() bool) {
	if err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return cond(), nil
	}); err != nil {
		panic(fmt.Sprintf("waiting for %s: %v\n%s\nvelero server log tail:\n%s\nworker log tail:\n%s", what, err,
			s.describeResources(), tailOf(filepath.Join(s.home, "velero-server.log"), 8000, veleroChatter), tailOf(filepath.Join(s.home, "worker.log"), 4000, nil)))
	}
}

// veleroChatter matches the lines velero's server logs every few seconds whatever happens.
var veleroChatter = regexp.MustCompile(`Validating BackupStorageLocation|BackupStorageLocations is valid|msg="plugin process exited"|Checking for existing backup locations ready to be verified`)

// tailOf returns the last max bytes of the file's lines that skip does not match.
func tailOf(file string, maxBytes int, skip *regexp.Regexp) string {
	raw, _ := os.ReadFile(file)
	var kept []string
	for line := range strings.SplitSeq(string(raw), "\n") {
		if skip == nil || !skip.MatchString(line) {
			kept = append(kept, line)
		}
	}
	tail := strings.Join(kept, "\n")
	if len(tail) > maxBytes {
		tail = tail[len(tail)-maxBytes:]
	}
	return tail
}

// describeResources lists the ImageStreamsBackups and ImageStreamsRestores of the Velero
// namespace with their phase and Ready condition.
func (s *Stack) describeResources() string {
	ctx := context.Background()
	var b strings.Builder
	isbs := &oadpv1alpha1.ImageStreamsBackupList{}
	if err := s.Env.Client.List(ctx, isbs, client.InNamespace(VeleroNamespace)); err != nil {
		fmt.Fprintf(&b, "listing ImageStreamsBackups: %v\n", err)
	}
	for i := range isbs.Items {
		isb := &isbs.Items[i]
		fmt.Fprintf(&b, "ImageStreamsBackup %s uid=%s generation=%d phase=%s deleteStoredImages=%v deleting=%v%s\n", isb.Name, isb.UID, isb.Generation,
			isb.Status.Phase, isb.Spec.DeleteStoredImages, !isb.DeletionTimestamp.IsZero(), readyOf(isb.Status.Conditions))
	}
	isrs := &oadpv1alpha1.ImageStreamsRestoreList{}
	if err := s.Env.Client.List(ctx, isrs, client.InNamespace(VeleroNamespace)); err != nil {
		fmt.Fprintf(&b, "listing ImageStreamsRestores: %v\n", err)
	}
	for i := range isrs.Items {
		isr := &isrs.Items[i]
		fmt.Fprintf(&b, "ImageStreamsRestore %s phase=%s%s\n", isr.Name, isr.Status.Phase, readyOf(isr.Status.Conditions))
	}
	return b.String()
}

func readyOf(conditions []metav1.Condition) string {
	c := meta.FindStatusCondition(conditions, oadpv1alpha1.ConditionReady)
	if c == nil {
		return ""
	}
	return fmt.Sprintf(" ready=%s/%s: %s", c.Status, c.Reason, c.Message)
}

// Store opens the location the way an administrator would.
func (s *Stack) Store() *imagestore.Store { return s.StoreAt(s.Prefix) }

// StoreAt opens the store under prefix in the stack's bucket.
func (s *Stack) StoreAt(prefix string) *imagestore.Store { return imagestore.New(s.Bucket(), prefix) }

// AddLocation adds a BackupStorageLocation beside the default one, in the same bucket under
// prefix, and waits until Velero finds it Available.
func (s *Stack) AddLocation(locationName, prefix string) {
	ctx := context.Background()
	bsl := s.location(locationName, prefix, s.S3.URL)
	check(s.Env.Client.Create(ctx, bsl))
	s.WaitFor(time.Minute, "BackupStorageLocation "+locationName+" Available", func() bool {
		return s.Env.Client.Get(ctx, client.ObjectKeyFromObject(bsl), bsl) == nil && bsl.Status.Phase == velerov1.BackupStorageLocationPhaseAvailable
	})
}

// The Secret, and its key, that hold the S3 credentials every location of the stack uses.
const (
	credentialsSecret = "cloud-credentials"
	credentialsKey    = "cloud"
)

// location is a BackupStorageLocation in the stack's bucket under prefix, reached at s3URL.
func (s *Stack) location(locationName, prefix, s3URL string) *velerov1.BackupStorageLocation {
	return &velerov1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Namespace: VeleroNamespace, Name: locationName},
		Spec: velerov1.BackupStorageLocationSpec{Provider: "aws",
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: Bucket, Prefix: prefix}},
			Credential:  &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: credentialsSecret}, Key: credentialsKey},
			Config:      s.s3Config(s3URL)}}
}

func (s *Stack) s3Config(s3URL string) map[string]string {
	return map[string]string{"region": s.S3.Region, "s3Url": s3URL, "s3ForcePathStyle": "true"}
}

// Bucket opens the BackupStorageLocation's bucket.
func (s *Stack) Bucket() *blob.Bucket {
	return must(bucket.Open(context.Background(), bucket.Config{Provider: "aws", Bucket: Bucket, Credentials: s.S3.CredentialsFile("default"),
		Config: s.s3Config(s.S3.URL)}))
}

// Home is the directory that holds velero's and the worker's logs.
func (s *Stack) Home() string { return s.home }

// PushImageStream pushes img to the registry as <ns>/<name>:<tag> and creates the imagestream
// pointing at it. On OpenShift the registry fills the imagestream's status on push; here the
// harness writes that status itself.
func (s *Stack) PushImageStream(ns, isName string, tags map[string]remote.Taggable, external map[string]string) (map[string]string, error) {
	ctx := context.Background()
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: s.Registry.Username, Password: s.Registry.Password}))
	repo := must(name.NewRepository(s.Registry.Host + "/" + ns + "/" + isName))
	is := &imagev1.ImageStream{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: isName}}
	if err := s.Env.Client.Create(ctx, is); err != nil {
		return nil, err
	}
	digests := map[string]string{}
	is.Status.DockerImageRepository = repo.String()
	for tag, tg := range tags {
		var h v1.Hash
		switch x := tg.(type) {
		case v1.Image:
			h = must(x.Digest())
			if err := remote.Write(repo.Tag(tag), x, auth); err != nil {
				return nil, err
			}
		case v1.ImageIndex:
			h = must(x.Digest())
			if err := remote.WriteIndex(repo.Tag(tag), x, auth); err != nil {
				return nil, err
			}
		}
		digests[tag] = h.String()
		is.Status.Tags = append(is.Status.Tags, imagev1.NamedTagEventList{Tag: tag, Items: []imagev1.TagEvent{
			{DockerImageReference: repo.String() + "@" + h.String(), Image: h.String(), Created: metav1.Now()}}})
	}
	for tag, ref := range external {
		is.Status.Tags = append(is.Status.Tags, imagev1.NamedTagEventList{Tag: tag, Items: []imagev1.TagEvent{
			{DockerImageReference: ref, Image: ref[strings.Index(ref, "@")+1:], Created: metav1.Now()}}})
	}
	if err := s.Env.Client.Status().Update(ctx, is); err != nil {
		return nil, err
	}
	return digests, nil
}
