package copier_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

func layerBytes(t *testing.T, ls ...v1.Layer) (n int64) {
	for _, l := range ls {
		n += must[int64](t)(l.Size())
	}
	return n
}

// TestRestoreIntoTheDistributionRegistry runs backup and restore against the real
// distribution registry with basic auth: blobs the target repository has are not sent, blobs
// pushed to another repository in the same restore are mounted, digests are kept.
func TestRestoreIntoTheDistributionRegistry(t *testing.T) {
	ctx := context.Background()
	src, dst := peers.StartRegistry(t, true), peers.StartRegistry(t, true)
	srcAuth := authn.FromConfig(authn.AuthConfig{Username: src.Username, Password: src.Password})
	dstAuth := authn.FromConfig(authn.AuthConfig{Username: dst.Username, Password: dst.Password})
	f := newStore(t)

	base := []v1.Layer{must[v1.Layer](t)(random.Layer(64<<10, types.DockerLayer)), must[v1.Layer](t)(random.Layer(64<<10, types.DockerLayer))}
	images := sharingImages(t, base, 2)
	var refs []name.Digest
	for i, img := range images {
		repo := must[name.Repository](t)(name.NewRepository(src.Host + "/app/img" + string(rune('a'+i))))
		ref := repo.Digest(must[v1.Hash](t)(img.Digest()).String())
		if err := remote.Write(ref, img, remote.WithAuth(srcAuth)); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}

	if _, err := newCopierWith(t, f, copier.Options{}).Copy(ctx, refs[0]); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Fatalf("anonymous copy from a registry that requires auth = %v, want UNAUTHORIZED", err)
	}
	c := newCopierWith(t, f, copier.Options{Auth: srcAuth})
	var descs []v1.Descriptor
	for _, ref := range refs {
		d, err := c.Copy(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		descs = append(descs, d)
	}

	p, err := copier.NewPusher(ctx, f.store, copier.Options{Auth: dstAuth})
	if err != nil {
		t.Fatal(err)
	}
	own := func(i int) v1.Layer { ls := must[[]v1.Layer](t)(images[i].Layers()); return ls[len(ls)-1] }
	steps := []struct {
		name         string
		image        int
		repo         string
		wantUploaded int64 // layer and manifest bytes sent in this step
	}{
		{"the first image is uploaded whole", 0, "restored/imga", layerBytes(t, append(base, own(0))...) + descs[0].Size},
		{"the second image mounts the shared base from the first repository", 1, "restored/imgb", layerBytes(t, own(1)) + descs[1].Size},
		{"pushing the first image again sends nothing", 0, "restored/imga", 0},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := p.Stats().BytesUploaded
			repo := must[name.Repository](t)(name.NewRepository(dst.Host + "/" + s.repo))
			if err := p.Push(ctx, descs[s.image], repo, []string{"latest"}); err != nil {
				t.Fatal(err)
			}
			if got := p.Stats().BytesUploaded - before; got != s.wantUploaded {
				t.Errorf("layer bytes sent = %d, want %d", got, s.wantUploaded)
			}
			got, err := remote.Get(repo.Tag("latest"), remote.WithAuth(dstAuth))
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest != descs[s.image].Digest {
				t.Errorf("restored digest %s, want %s", got.Digest, descs[s.image].Digest)
			}
			if _, err := remote.Image(repo.Tag("latest"), remote.WithAuth(dstAuth)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func newCopierWith(t *testing.T, f fixture, opts copier.Options) *copier.Copier {
	c, err := copier.New(f.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
