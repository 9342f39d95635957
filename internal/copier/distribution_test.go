package copier_test

import (
	"context"
	"strings"
	"testing"
	"time"

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
// distribution registry, with basic auth and with bearer tokens: blobs the target repository
// has are not sent, blobs pushed to another repository in the same restore are mounted, digests
// are kept.
func TestRestoreIntoTheDistributionRegistry(t *testing.T) {
	for _, auth := range []struct {
		name string
		auth peers.Auth
	}{{"basic auth", peers.BasicAuth}, {"bearer tokens", peers.TokenAuth(time.Hour)}} {
		t.Run(auth.name, func(t *testing.T) { testRestoreIntoTheDistributionRegistry(t, auth.auth) })
	}
}

func testRestoreIntoTheDistributionRegistry(t *testing.T, auth peers.Auth) {
	ctx := context.Background()
	src, dst := peers.StartRegistry(t, auth), peers.StartRegistry(t, auth)
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

// TestACopyOutlivesItsBearerToken backs up and restores across the expiry of the registry's
// tokens: the copier and the pusher keep one authenticated transport per repository for as long
// as they run, so a long backup sends a token the registry now refuses, and must get a new one.
func TestACopyOutlivesItsBearerToken(t *testing.T) {
	ctx := context.Background()
	const ttl = 2 * time.Second
	reg := peers.StartRegistry(t, peers.TokenAuth(ttl))
	auth := authn.FromConfig(authn.AuthConfig{Username: reg.Username, Password: reg.Password})
	f := newStore(t)
	repo := must[name.Repository](t)(name.NewRepository(reg.Host + "/app/img"))
	images := sharingImages(t, []v1.Layer{must[v1.Layer](t)(random.Layer(32<<10, types.DockerLayer))}, 2)
	for _, img := range images {
		if err := remote.Write(repo.Digest(must[v1.Hash](t)(img.Digest()).String()), img, remote.WithAuth(auth)); err != nil {
			t.Fatal(err)
		}
	}
	c := newCopierWith(t, f, copier.Options{Auth: auth})
	p, err := copier.NewPusher(ctx, f.store, copier.Options{Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	targets := []name.Repository{
		must[name.Repository](t)(name.NewRepository(reg.Host + "/restored/one")),
		must[name.Repository](t)(name.NewRepository(reg.Host + "/restored/two")),
	}
	for i, img := range images {
		if i > 0 {
			time.Sleep(ttl + 500*time.Millisecond) // every token issued so far is refused now
		}
		before := reg.TokensIssued()
		desc, err := c.Copy(ctx, repo.Digest(must[v1.Hash](t)(img.Digest()).String()))
		if err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
		// The second image's shared layer is mounted from the first target: the token must
		// grant pull on that repository as well as push on this one.
		if err := p.Push(ctx, desc, targets[i], []string{"latest"}); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
		if i > 0 && reg.TokensIssued() == before {
			t.Errorf("copy and push %d after the tokens expired got no new token", i)
		}
		got, err := remote.Get(targets[i].Tag("latest"), remote.WithAuth(auth))
		if err != nil {
			t.Fatal(err)
		}
		if got.Digest != desc.Digest {
			t.Errorf("restored digest %s, want %s", got.Digest, desc.Digest)
		}
	}
}
