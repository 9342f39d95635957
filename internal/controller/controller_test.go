package controller_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	configv1 "github.com/openshift/api/config/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

// must unwraps fixture-building calls that only fail on a bug in the test.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func layer(t *testing.T, size int64) v1.Layer {
	t.Helper()
	return must(random.Layer(size, types.DockerLayer))
}

func layerList(t *testing.T, n int) []v1.Layer {
	var out []v1.Layer
	for range n {
		out = append(out, layer(t, 32<<10))
	}
	return out
}

func imageOn(t *testing.T, base []v1.Layer) v1.Image {
	return must(mutate.AppendLayers(empty.Image, append(append([]v1.Layer{}, base...), layer(t, 4096))...))
}

// unique sums the distinct blobs (manifests, configs, layers) of images and indexes.
func unique(t *testing.T, tgs ...remote.Taggable) (blobs int64, bytes int64) {
	t.Helper()
	seen := map[v1.Hash]bool{}
	add := func(h v1.Hash, size int64) {
		if !seen[h] {
			seen[h] = true
			blobs++
			bytes += size
		}
	}
	addImage := func(img v1.Image) {
		m := must(img.Manifest())
		add(must(img.Digest()), must(img.Size()))
		add(m.Config.Digest, m.Config.Size)
		for _, l := range m.Layers {
			add(l.Digest, l.Size)
		}
	}
	for _, tg := range tgs {
		switch x := tg.(type) {
		case v1.Image:
			addImage(x)
		case v1.ImageIndex:
			add(must(x.Digest()), must(x.Size()))
			for _, d := range must(x.IndexManifest()).Manifests {
				addImage(must(x.Image(d.Digest)))
			}
		}
	}
	return blobs, bytes
}

func ref(r string, tags ...string) oadpv1alpha1.DockerImageReference {
	return oadpv1alpha1.DockerImageReference{DockerImageReference: r, Tags: tags}
}

func newBackup(ns, backup string, streams ...oadpv1alpha1.ImageStream) *oadpv1alpha1.ImageStreamsBackup {
	return &oadpv1alpha1.ImageStreamsBackup{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: backup},
		Spec:       oadpv1alpha1.ImageStreamsBackupSpec{StartBackup: true, ImageStreams: streams},
	}
}

func digestOf(t *testing.T, r string) string {
	t.Helper()
	return must(name.NewDigest(r)).DigestStr()
}

func TestBackupAndRestoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)

	// The worker finds the registry as it does on OpenShift, from the cluster's image config.
	img := &configv1.Image{ObjectMeta: metav1.ObjectMeta{Name: "cluster"}}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(img), img); apierrors.IsNotFound(err) {
		c.create(img)
	}
	img.Status.InternalRegistryHostname = c.registry.Host
	if err := env.Client.Status().Update(ctx, img); err != nil {
		t.Fatal(err)
	}

	base := []v1.Layer{layer(t, 64<<10), layer(t, 64<<10)}
	multi := must(random.Index(1024, 2, 3))
	webOld, webNew, api := imageOn(t, base), imageOn(t, base), imageOn(t, base)
	refs := map[string]string{
		"multi":   c.push("app/multiarch", multi, c.registry.Host),
		"web-old": c.push("app/web", webOld, c.registry.Host),
		"web-new": c.push("app/web", webNew, c.registry.Host),
		"api":     c.push("app/api", api, c.registry.Host),
	}
	o := c.workerOptions()
	o.Registry.Host = ""
	stop := c.startWorker(o)

	isb := newBackup(c.ns, "b1",
		oadpv1alpha1.ImageStream{Name: "multiarch", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(refs["multi"], "latest")}},
		// Newest first, as imagestream history lists them; latest moved from old to new.
		oadpv1alpha1.ImageStream{Name: "web", Namespace: "app", DockerImageReferences: []oadpv1alpha1.DockerImageReference{
			ref(refs["web-new"], "latest", "v2"), ref(refs["web-old"], "latest", "v1")}},
		oadpv1alpha1.ImageStream{Name: "api", DockerImageReferences: []oadpv1alpha1.DockerImageReference{ref(refs["api"], "latest")}},
	)
	c.create(isb)
	waitFor(t, isb, time.Minute, "backup Completed", backupPhase(oadpv1alpha1.BackupPhaseCompleted))

	wantBlobs, wantBytes := unique(t, multi, webOld, webNew, api)
	p := isb.Status.Progress
	if p.ImagesTotal != 4 || p.ImagesDone != 4 || p.ImagesFailed != 0 || p.BytesUploaded != wantBytes || p.BlobsUploaded != wantBlobs {
		t.Errorf("progress %+v, want 4 images and %d unique blobs of %d bytes uploaded", p, wantBlobs, wantBytes)
	}
	if isb.Status.StartTimestamp == nil || isb.Status.CompletionTimestamp == nil || isb.Status.ObservedGeneration != isb.Generation ||
		!meta.IsStatusConditionTrue(isb.Status.Conditions, oadpv1alpha1.ConditionReady) {
		t.Errorf("status %+v, want timestamps, observedGeneration and Ready", isb.Status)
	}
	entries := must(c.store().ReadIndex(ctx, "b1"))
	if len(entries) != 4 {
		t.Fatalf("index has %d entries, want 4", len(entries))
	}
	stop()

	// Restore into another, empty registry: a fresh cluster's.
	target := peers.StartRegistry(t, peers.BasicAuth)
	o = c.workerOptions()
	o.Registry.Host = target.Host
	c.startWorker(o)
	isr := &oadpv1alpha1.ImageStreamsRestore{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "r1"},
		Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
			ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: "b1"},
			NamespaceMapping:            map[string]string{"app": "app2"},
		},
	}
	c.create(isr)
	waitFor(t, isr, time.Minute, "restore Completed", restorePhase(oadpv1alpha1.RestorePhaseCompleted))
	if rp := isr.Status.Progress; rp.ImagesTotal != 4 || rp.ImagesDone != 4 || rp.ImagesFailed != 0 {
		t.Errorf("restore progress %+v, want 4 of 4 images", rp)
	}

	tags := map[string]string{
		"app2/multiarch:latest": refs["multi"], "app2/web:latest": refs["web-new"], "app2/web:v2": refs["web-new"],
		"app2/web:v1": refs["web-old"], "app2/api:latest": refs["api"],
	}
	for tag, want := range tags {
		got, err := remote.Get(must(name.NewTag(target.Host+"/"+tag)), c.auth())
		if err != nil {
			t.Errorf("%s after restore: %v", tag, err)
			continue
		}
		if got.Digest.String() != digestOf(t, want) {
			t.Errorf("%s points at %s, want %s", tag, got.Digest, digestOf(t, want))
		}
	}
	for _, d := range must(multi.IndexManifest()).Manifests {
		if _, err := remote.Image(must(name.NewDigest(target.Host+"/app2/multiarch@"+d.Digest.String())), c.auth()); err != nil {
			t.Errorf("platform %s missing after restore: %v", d.Digest, err)
		}
	}
	c.assertNoSecrets(isb, isr)

	// The counters reach the manager's metrics endpoint.
	for _, m := range []struct {
		name, kind string
		atLeast    int64
	}{
		{"imagestreams_backup_bytes_copied_total", "backup", wantBytes},
		{"imagestreams_backup_bytes_copied_total", "restore", 1},
		{"imagestreams_backup_images_total", "backup", 4},
	} {
		if got := counterValue(t, m.name, m.kind); got < float64(m.atLeast) {
			t.Errorf("metric %s{kind=%q} = %v, want at least %d", m.name, m.kind, got, m.atLeast)
		}
	}
}

func counterValue(t *testing.T, metric, kind string) float64 {
	return labeledCounter(t, metric, "kind", kind)
}

// labeledCounter sums the counters of metric name whose label has value.
func labeledCounter(t *testing.T, metric, label, value string) (sum float64) {
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// assertNoSecrets checks that no credential appears in the worker's log, the events, or the
// status of objs.
func (c *cluster) assertNoSecrets(objs ...client.Object) {
	c.t.Helper()
	var texts []string
	texts = append(texts, c.logs.String())
	events := &eventsList{}
	if err := env.Client.List(context.Background(), events.list(), client.InNamespace(c.ns)); err != nil {
		c.t.Fatal(err)
	}
	texts = append(texts, events.text())
	for _, o := range objs {
		b, _ := json.Marshal(o)
		texts = append(texts, string(b))
	}
	secrets.Range(func(k, _ any) bool {
		for _, text := range texts {
			if strings.Contains(text, k.(string)) {
				c.t.Errorf("a credential appears in logs, events or status")
			}
		}
		return true
	})
	if !strings.Contains(events.text(), "Started") {
		c.t.Errorf("no Started event was recorded: %s", events.text())
	}
}
