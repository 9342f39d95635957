package controller_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/test/faults"
)

func TestOneMissingImagePartiallyFails(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	good := []string{c.push("app/web", imageOn(t, nil), c.registry.Host), c.push("app/api", imageOn(t, nil), c.registry.Host)}
	gone := fmt.Sprintf("%s/app/web@sha256:%064x", c.registry.Host, 42)
	c.startWorker(c.workerOptions())
	isb := newBackup(c.ns, "partial",
		oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(good[0], "latest"), ref(gone, "old")}},
		oadpv1alpha1.ImageStream{Name: "api", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(good[1], "latest")}})
	c.create(isb)
	waitFor(t, isb, 30*time.Second, "backup PartiallyFailed", backupPhase(oadpv1alpha1.BackupPhasePartiallyFailed))

	if p := isb.Status.Progress; p.ImagesDone != 2 || p.ImagesFailed != 1 {
		t.Errorf("progress %+v, want 2 done and 1 failed", p)
	}
	if len(isb.Status.Failures) != 1 || isb.Status.Failures[0].DockerImageReference != gone ||
		isb.Status.Failures[0].Reason != oadpv1alpha1.ReasonImageNotFound || isb.Status.Failures[0].ImageStream != "web" {
		t.Errorf("failures %+v, want %s ImageNotFound", isb.Status.Failures, gone)
	}
	entries := must(c.store().ReadIndex(ctx, "partial"))
	if len(entries) != 2 {
		t.Errorf("index holds %d images, want the 2 good ones", len(entries))
	}
}

func TestLocationAndRegistryProblemsShowAsConditions(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	r := c.push("app/web", imageOn(t, nil), c.registry.Host)
	streams := []oadpv1alpha1.ImageStream{{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r, "latest")}}}
	c.startWorker(c.workerOptions())

	inline := func(secret string) *oadpv1alpha1.BackupLocation {
		return &oadpv1alpha1.BackupLocation{Velero: &oadpv1alpha1.VeleroLocation{
			Provider:      "aws",
			ObjectStorage: oadpv1alpha1.ObjectStorageLocation{Bucket: "velero", Prefix: "inline"},
			Config:        map[string]string{"region": c.s3.Region, "s3Url": c.s3.URL, "s3ForcePathStyle": "true"},
			Credential:    &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "cloud"},
		}}
	}
	tests := []struct {
		name       string
		location   *oadpv1alpha1.BackupLocation
		wantReason string
		wantText   string
	}{
		{"a BackupStorageLocation that does not exist", &oadpv1alpha1.BackupLocation{Name: "missing"}, oadpv1alpha1.ReasonLocationNotFound, "BackupStorageLocation " + c.ns + "/missing not found"},
		{"a credentials Secret that does not exist", inline("no-such-secret"), oadpv1alpha1.ReasonCredentialsNotFound, "no-such-secret"},
		{"a credentials Secret that is not an AWS credentials file", inline("malformed"), oadpv1alpha1.ReasonInvalidLocation, "loading AWS credentials"},
	}
	secrets.Store("AKIA-SECRET-KEY-ID", true)
	c.vouchFor("no-such-secret", c.s3.URL)
	c.vouchFor("malformed", c.s3.URL)
	c.create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "malformed", Namespace: c.ns},
		Data: map[string][]byte{"cloud": []byte("[default\naws_access_key_id = AKIA-SECRET-KEY-ID\n")}})
	var objs []*oadpv1alpha1.ImageStreamsBackup
	for i, tt := range tests {
		isb := newBackup(c.ns, fmt.Sprintf("bad-%d", i), streams...)
		isb.Spec.BackupLocation = tt.location
		c.create(isb)
		objs = append(objs, isb)
	}
	// A good backup beside them completes: one resource's trouble stops no other.
	good := newBackup(c.ns, "good", streams...)
	c.create(good)
	waitFor(t, good, 30*time.Second, "good backup Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))

	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isb := waitFor(t, objs[i], 30*time.Second, "a Ready condition", func(b *oadpv1alpha1.ImageStreamsBackup) bool {
				reason, _ := readyReason(b.Status.Conditions)
				return reason == tt.wantReason
			})
			if _, msg := readyReason(isb.Status.Conditions); !strings.Contains(msg, tt.wantText) {
				t.Errorf("message %q does not mention %q", msg, tt.wantText)
			}
			if isb.Status.Phase != oadpv1alpha1.BackupPhaseNew {
				t.Errorf("phase %s, want New: the backup waits for its location, it has not failed", isb.Status.Phase)
			}
		})
	}

	// Fixing the input lets the waiting backup go on: nothing was lost.
	c.create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "no-such-secret", Namespace: c.ns}, Data: map[string][]byte{"cloud": c.s3.CredentialsFile("default")}})
	waitFor(t, objs[1], 30*time.Second, "backup Completed once its Secret exists", backupPhase(oadpv1alpha1.BackupPhaseCompleted))
	_ = ctx
	c.assertNoSecrets(objs[0], objs[1], good)
}

func TestUnreachableRegistryShowsAsACondition(t *testing.T) {
	c := newCluster(t)
	o := c.workerOptions()
	o.Registry.Host = "127.0.0.1:1" // nothing listens there
	c.startWorker(o)
	isb := newBackup(c.ns, "unreachable", oadpv1alpha1.ImageStream{Name: "web", Namespace: "app",
		DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(fmt.Sprintf("127.0.0.1:1/app/web@sha256:%064x", 1))}})
	c.create(isb)
	waitFor(t, isb, 60*time.Second, "a RegistryUnavailable condition", func(b *oadpv1alpha1.ImageStreamsBackup) bool {
		reason, msg := readyReason(b.Status.Conditions)
		return reason == oadpv1alpha1.ReasonRegistryUnavailable && strings.Contains(msg, "127.0.0.1:1")
	})
}

func TestResourcesInOtherNamespacesAreIgnored(t *testing.T) {
	c := newCluster(t)
	r := c.push("app/web", imageOn(t, nil), c.registry.Host)
	c.startWorker(c.workerOptions())
	other := env.Namespace(t)
	foreign := newBackup(other, "foreign", oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r)}})
	c.create(foreign)
	mine := newBackup(c.ns, "mine", foreign.Spec.ImageStreams...)
	c.create(mine)
	waitFor(t, mine, 30*time.Second, "own backup Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))
	time.Sleep(300 * time.Millisecond)
	waitFor(t, foreign, time.Second, "the foreign backup untouched", func(b *oadpv1alpha1.ImageStreamsBackup) bool {
		return b.Status.Phase == "" && len(b.Finalizers) == 0
	})
}

func TestBackupToAFileLocation(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	r := c.push("app/web", imageOn(t, nil), c.registry.Host)
	c.startWorker(c.workerOptions())
	dir := t.TempDir()
	isb := newBackup(c.ns, "local", oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r, "latest")}})
	isb.Spec.BackupLocation = &oadpv1alpha1.BackupLocation{Velero: &oadpv1alpha1.VeleroLocation{Provider: "file", ObjectStorage: oadpv1alpha1.ObjectStorageLocation{Bucket: dir, Prefix: "velero"}}}
	c.create(isb)
	waitFor(t, isb, 30*time.Second, "backup Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))
	b, err := bucket.Open(ctx, bucket.Config{Provider: "file", Bucket: dir})
	if err != nil {
		t.Fatal(err)
	}
	store := imagestore.New(b, "velero")
	defer store.Close()
	if rep, err := store.Verify(ctx, "local"); err != nil || rep.Images != 1 {
		t.Errorf("Verify of the file location = %+v, %v", rep, err)
	}
}

// A location that turns read-only or fills up in the middle of a backup fails it with a reason
// that says so, writes no index, and leaves nothing a garbage collection does not remove.
func TestALocationThatStopsTakingWritesFailsTheBackup(t *testing.T) {
	for _, tt := range []struct {
		name, reason string
		reply        *faults.Reply
	}{
		{"read-only", oadpv1alpha1.ReasonStoreDenied, faults.S3Error(http.StatusForbidden, "AccessDenied", "Access Denied")},
		{"full", oadpv1alpha1.ReasonStoreFull, faults.S3Error(http.StatusInsufficientStorage, "XMinioStorageFull", "Storage backend has reached its minimum free drive threshold.")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := newCluster(t)
			var streams []oadpv1alpha1.ImageStream
			for i := range 6 {
				r := c.push(fmt.Sprintf("app/web-%d", i), must(random.Image(256<<10, 2)), c.registry.Host)
				streams = append(streams, oadpv1alpha1.ImageStream{Name: fmt.Sprintf("web-%d", i), Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r, "latest")}})
			}
			// Writes pass for the first megabyte, then the store refuses every PUT and POST.
			proxy := faults.Start(t, strings.TrimPrefix(c.s3.URL, "http://"), faults.Config{
				Intercept: func(r *http.Request, so faults.Counts) *faults.Reply {
					if (r.Method == http.MethodPut || r.Method == http.MethodPost) && so.BytesUp > 1<<20 {
						return tt.reply
					}
					return nil
				},
			})
			c.create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: c.ns}, Data: map[string][]byte{"cloud": c.s3.CredentialsFile("default")}})
			c.vouchFor("creds", proxy.URL)
			isb := newBackup(c.ns, "refused", streams...)
			isb.Spec.BackupLocation = &oadpv1alpha1.BackupLocation{Velero: &oadpv1alpha1.VeleroLocation{
				Provider:      "aws",
				ObjectStorage: oadpv1alpha1.ObjectStorageLocation{Bucket: "velero", Prefix: "refused"},
				Config:        map[string]string{"region": c.s3.Region, "s3Url": proxy.URL, "s3ForcePathStyle": "true"},
				Credential:    &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "cloud"},
			}}
			c.create(isb)
			c.startWorker(c.workerOptions())
			isb = waitFor(t, isb, time.Minute, "backup Failed", backupPhase(oadpv1alpha1.BackupPhaseFailed))
			if reason, msg := readyReason(isb.Status.Conditions); reason != tt.reason || !strings.Contains(msg, "no index was written") {
				t.Errorf("Ready condition %s: %q; want %s saying no index was written", reason, msg, tt.reason)
			}
			if n := proxy.Counts().Intercepted; n == 0 {
				t.Fatal("the store never refused a write")
			}
			b, err := bucket.Open(ctx, bucket.Config{Provider: "aws", Bucket: "velero", Credentials: c.s3.CredentialsFile("default"),
				Config: map[string]string{"region": c.s3.Region, "s3Url": c.s3.URL, "s3ForcePathStyle": "true"}})
			if err != nil {
				t.Fatal(err)
			}
			store := imagestore.New(b, "refused")
			defer store.Close()
			if ok, err := store.HasIndex(ctx, "refused"); err != nil || ok {
				t.Errorf("index written: %v, %v", ok, err)
			}
			rep, err := store.GC(ctx, 0)
			if err != nil || rep.Deferred || rep.Kept != 0 || rep.Deleted == 0 {
				t.Errorf("GC after the failed backup: %+v, %v; want every stored blob removed", rep, err)
			}
			c.assertNoSecrets(isb)
		})
	}
}

// The worker runs under its generated role; with a right taken away it says which, on the
// resource, and goes on once the right is back.
func TestAWorkerMissingARightSaysWhich(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	r := c.push("app/web", imageOn(t, nil), c.registry.Host)
	role := &rbacv1.Role{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: "imagestreams-backup-worker"}, role); err != nil {
		t.Fatal(err)
	}
	full := role.DeepCopy()
	var kept []rbacv1.PolicyRule
	for _, rule := range role.Rules {
		if !slices.Contains(rule.Resources, "secrets") {
			kept = append(kept, rule)
		}
	}
	role.Rules = kept
	if err := env.Client.Update(ctx, role); err != nil {
		t.Fatal(err)
	}
	c.startWorker(c.workerOptions())
	c.create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: c.ns}, Data: map[string][]byte{"cloud": c.s3.CredentialsFile("default")}})
	c.vouchFor("creds", c.s3.URL)
	isb := newBackup(c.ns, "no-secrets", oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(r, "latest")}})
	isb.Spec.BackupLocation = &oadpv1alpha1.BackupLocation{Velero: &oadpv1alpha1.VeleroLocation{
		Provider:      "aws",
		ObjectStorage: oadpv1alpha1.ObjectStorageLocation{Bucket: "velero", Prefix: "rights"},
		Config:        map[string]string{"region": c.s3.Region, "s3Url": c.s3.URL, "s3ForcePathStyle": "true"},
		Credential:    &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "cloud"},
	}}
	c.create(isb)
	isb = waitFor(t, isb, 30*time.Second, "a Forbidden condition", func(b *oadpv1alpha1.ImageStreamsBackup) bool {
		reason, _ := readyReason(b.Status.Conditions)
		return reason == oadpv1alpha1.ReasonForbidden
	})
	if _, msg := readyReason(isb.Status.Conditions); !strings.Contains(msg, "may not read credentials Secret "+c.ns+"/creds") {
		t.Errorf("message %q does not say which right is missing", msg)
	}
	if isb.Status.Phase != oadpv1alpha1.BackupPhaseNew {
		t.Errorf("phase %s, want New: the backup waits for the right", isb.Status.Phase)
	}
	role.Rules = full.Rules
	if err := env.Client.Update(ctx, role); err != nil {
		t.Fatal(err)
	}
	waitFor(t, isb, 30*time.Second, "backup Completed once the right is back", backupPhase(oadpv1alpha1.BackupPhaseCompleted))
}
