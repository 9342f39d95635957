// Command demo shows the product end to end on one machine, for `make demo`: it brings up the
// whole stack on 127.0.0.1 (see package stack), makes an application namespace with sample
// imagestreams, backs it up with `velero backup create`, wipes the namespace and the registry's
// images, restores with `velero restore create`, and prints what happened.
package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	imagev1 "github.com/openshift/api/image/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/test/stack"
)

func main() { stack.Main(&stack.Stack{}, "demo", run) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// shop is the namespace of the sample imagestreams.
const shop = "shop"

// latest is the tag the sample imagestreams have in common.
const latest = "latest"

func step(what string) { fmt.Println("==> " + what) }

func run(s *stack.Stack) {
	ctx := context.Background()
	start := time.Now()
	step("starting kube-apiserver, etcd, S3 server, registry, velero server and the worker")
	stack.Start(s)
	c := s.Env.Client

	step("creating namespace shop with three imagestreams")
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: shop}}); err != nil {
		panic(err)
	}
	base := []v1.Layer{must(random.Layer(4<<20, types.DockerLayer)), must(random.Layer(2<<20, types.DockerLayer))}
	app := func(size int64) v1.Image {
		return must(mutate.AppendLayers(empty.Image, append(append([]v1.Layer{}, base...), must(random.Layer(size, types.DockerLayer)))...))
	}
	images := map[string]map[string]remote.Taggable{
		"frontend": {latest: app(1 << 20), "v1": app(1 << 20)}, // two releases on one base
		"backend":  {latest: app(2 << 20)},                     // the same base again
		"tools":    {latest: must(random.Index(1<<20, 2, 3))},  // three platforms
	}
	var referenced int64
	digests := map[string]string{}
	for is, tags := range images {
		d := must(s.PushImageStream(shop, is, tags, nil))
		for tag, tg := range tags {
			digests["shop/"+is+":"+tag] = d[tag]
			referenced += size(tg)
		}
	}

	step("velero backup create nightly --include-namespaces shop --wait")
	t0 := time.Now()
	s.Run("backup", "create", "nightly", "--include-namespaces", shop, "--wait")
	backupTime := time.Since(t0)
	isb := &oadpv1alpha1.ImageStreamsBackup{}
	check(c.Get(ctx, client.ObjectKey{Namespace: stack.VeleroNamespace, Name: "nightly"}, isb))

	step("wiping namespace shop and its images from the registry")
	check(c.DeleteAllOf(ctx, &imagev1.ImageStream{}, client.InNamespace(shop)))
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: s.Registry.Username, Password: s.Registry.Password}))
	for ref, d := range digests {
		r := must(name.NewTag(s.Registry.Host + "/" + ref))
		_ = remote.Delete(r.Context().Digest(d), auth) // a digest shared by two tags goes once
	}
	check(c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: shop}}))
	s.WaitFor(time.Minute, "namespace shop gone", func() bool {
		return apierrors.IsNotFound(c.Get(ctx, client.ObjectKey{Name: shop}, &corev1.Namespace{}))
	})

	step("velero restore create --from-backup nightly --wait")
	t0 = time.Now()
	s.Run("restore", "create", "morning", "--from-backup", "nightly", "--wait")
	restoreTime := time.Since(t0)

	restored := 0
	for ref, want := range digests {
		got, err := remote.Get(must(name.NewTag(s.Registry.Host+"/"+ref)), auth)
		if err == nil && got.Digest.String() == want {
			restored++
		}
	}
	store := s.Store()
	defer store.Close()
	verify := "passed"
	rep, err := store.Verify(ctx, "nightly")
	if err != nil {
		verify = "FAILED: " + err.Error()
	}

	p := isb.Status.Progress
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "image backup\t%s, %d of %d images\n", isb.Status.Phase, p.ImagesDone, p.ImagesTotal)
	fmt.Fprintf(tw, "bytes referenced by the imagestreams\t%s\n", mib(referenced))
	fmt.Fprintf(tw, "bytes stored (unique blobs)\t%s in %d blobs\n", mib(p.BytesUploaded), p.BlobsUploaded)
	fmt.Fprintf(tw, "deduplication\t%.1fx\n", float64(referenced)/float64(max(p.BytesUploaded, 1)))
	fmt.Fprintf(tw, "velero backup\t%s\n", backupTime.Round(10*time.Millisecond))
	fmt.Fprintf(tw, "velero restore\t%s\n", restoreTime.Round(10*time.Millisecond))
	fmt.Fprintf(tw, "tags back with the same digest\t%d of %d\n", restored, len(digests))
	fmt.Fprintf(tw, "verify of the stored backup\t%s (%d blobs, %s read)\n", verify, rep.Blobs, mib(rep.Bytes))
	fmt.Fprintf(tw, "total time\t%s\n", time.Since(start).Round(100*time.Millisecond))
	tw.Flush()
	if restored != len(digests) || err != nil {
		panic("the restore is incomplete")
	}
}

func size(tg remote.Taggable) (n int64) {
	switch x := tg.(type) {
	case v1.Image:
		n += must(x.Size()) + must(x.Manifest()).Config.Size
		for _, l := range must(x.Layers()) {
			n += must(l.Size())
		}
	case v1.ImageIndex:
		n += must(x.Size())
		for _, d := range must(x.IndexManifest()).Manifests {
			n += size(must(x.Image(d.Digest)))
		}
	}
	return n
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func check(err error) {
	if err != nil {
		panic(err)
	}
}
