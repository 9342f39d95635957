package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/controller"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/internal/location"
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
		isb.Status.Failures[0].Reason != controller.ReasonImageNotFound || isb.Status.Failures[0].ImageStream != "web" {
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
		{"a BackupStorageLocation that does not exist", &oadpv1alpha1.BackupLocation{Name: "missing"}, location.ReasonLocationNotFound, "BackupStorageLocation " + c.ns + "/missing not found"},
		{"a credentials Secret that does not exist", inline("no-such-secret"), location.ReasonCredentialsNotFound, "no-such-secret"},
	}
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
		return reason == controller.ReasonRegistryUnavailable && strings.Contains(msg, "127.0.0.1:1")
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
