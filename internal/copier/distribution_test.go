package copier_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/test/faults"
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

	p, err := copier.NewPusher(f.store, copier.Options{Auth: dstAuth})
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
	p, err := copier.NewPusher(f.store, copier.Options{Auth: auth})
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

// TestRepositoriesAuthenticateAtOnce backs up and restores images of several repositories at
// once against registries whose token servers are slow, as a loaded one is: each repository's
// handshake, a ping and a token request, goes while the other repositories' do, not after them.
func TestRepositoriesAuthenticateAtOnce(t *testing.T) {
	ctx := context.Background()
	slow := peers.TokenAuth(time.Hour).SlowTokens(300 * time.Millisecond)
	src, dst := peers.StartRegistry(t, slow), peers.StartRegistry(t, slow)
	srcAuth := authn.FromConfig(authn.AuthConfig{Username: src.Username, Password: src.Password})
	dstAuth := authn.FromConfig(authn.AuthConfig{Username: dst.Username, Password: dst.Password})
	f := newStore(t)
	const n = 4
	var refs []name.Digest
	for i := range n {
		img := dockerImage(t)
		ref := must[name.Repository](t)(name.NewRepository(fmt.Sprintf("%s/app/img%d", src.Host, i))).Digest(must[v1.Hash](t)(img.Digest()).String())
		if err := remote.Write(ref, img, remote.WithAuth(srcAuth)); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	if got := src.TokenRequestsAtOnce(); got != 1 {
		t.Fatalf("token requests at once while the images were written one by one = %d, want 1", got)
	}

	c := newCopierWith(t, f, copier.Options{Auth: srcAuth})
	descs := make([]v1.Descriptor, n)
	var g errgroup.Group
	for i, ref := range refs {
		g.Go(func() (err error) {
			descs[i], err = c.Copy(ctx, ref)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := src.TokenRequestsAtOnce(); got < 2 {
		t.Errorf("backup of %d repositories at once: token requests at once = %d, want at least 2", n, got)
	}

	p, err := copier.NewPusher(f.store, copier.Options{Auth: dstAuth})
	if err != nil {
		t.Fatal(err)
	}
	for i, desc := range descs {
		repo := must[name.Repository](t)(name.NewRepository(fmt.Sprintf("%s/restored/img%d", dst.Host, i)))
		g.Go(func() error { return p.Push(ctx, desc, repo, []string{"latest"}) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := dst.TokenRequestsAtOnce(); got < 2 {
		t.Errorf("restore of %d repositories at once: token requests at once = %d, want at least 2", n, got)
	}
	// One handshake a repository: a token for each.
	if got := dst.TokensIssued(); got != n {
		t.Errorf("restore of %d repositories took %d tokens, want %d", n, got, n)
	}
}

// TestAHandshakeGivenUpByOneCallerIsNotGivenUpByAnother backs up two images of one repository
// at once from a registry whose token server is slow: the first copy starts the repository's
// handshake and is canceled while it waits for the token; the second, which shares that
// handshake, must not fail with the first one's cancellation.
func TestAHandshakeGivenUpByOneCallerIsNotGivenUpByAnother(t *testing.T) {
	ctx := context.Background()
	reg := peers.StartRegistry(t, peers.TokenAuth(time.Hour).SlowTokens(500*time.Millisecond))
	auth := authn.FromConfig(authn.AuthConfig{Username: reg.Username, Password: reg.Password})
	repo := must[name.Repository](t)(name.NewRepository(reg.Host + "/app/img"))
	var refs []name.Digest
	for range 2 {
		img := dockerImage(t)
		ref := repo.Digest(must[v1.Hash](t)(img.Digest()).String())
		if err := remote.Write(ref, img, remote.WithAuth(auth)); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	c := newCopierWith(t, newStore(t), copier.Options{Auth: auth})

	issued := reg.TokensIssued()
	first, cancel := context.WithCancel(ctx)
	firstDone := make(chan error, 1)
	go func() { _, err := c.Copy(first, refs[0]); firstDone <- err }()
	// The first copy is waiting for its token when the second joins its handshake, and is
	// canceled before the token comes.
	for reg.TokenRequestsInFlight() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	secondDone := make(chan error, 1)
	go func() { _, err := c.Copy(ctx, refs[1]); secondDone <- err }()
	time.Sleep(100 * time.Millisecond)
	if got, inFlight := reg.TokensIssued()-issued, reg.TokenRequestsInFlight(); got != 0 || inFlight != 1 {
		t.Fatalf("the second copy did not join the first one's handshake: %d tokens issued, %d requests in flight", got, inFlight)
	}
	cancel()
	if err := <-firstDone; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled copy = %v, want context.Canceled", err)
	}
	if err := <-secondDone; err != nil {
		t.Fatalf("copy sharing a canceled handshake: %v", err)
	}
}

// TestARestoreGivesARepositoryOnlyItsRecordedTags restores an image whose manifest refers to a
// subject (a signature or an attestation does) into a registry without the referrers API:
// the repository gets the tag the backup recorded and no referrers fallback tag beside it. In
// OpenShift's registry every tag pushed becomes an imagestream tag.
func TestARestoreGivesARepositoryOnlyItsRecordedTags(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry(t)
	dst := peers.StartRegistry(t, peers.NoAuth)
	f := newStore(t)
	subject := ociImage(t)
	subjectDesc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: must[v1.Hash](t)(subject.Digest()), Size: must[int64](t)(subject.Size())}
	img := mutate.Subject(ociImage(t), subjectDesc).(v1.Image)
	desc, err := newCopier(t, f.store).Copy(ctx, reg.push(t, "app/signed", img))
	if err != nil {
		t.Fatal(err)
	}
	repo := must[name.Repository](t)(name.NewRepository(dst.Host + "/restored/signed"))
	if err := newPusher(t, f.store).Push(ctx, desc, repo, []string{"v1"}); err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(repo)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tags, []string{"v1"}) {
		t.Errorf("restored repository's tags = %q, want [v1]", tags)
	}
	if got := must[*remote.Descriptor](t)(remote.Get(repo.Tag("v1"))); got.Digest != desc.Digest {
		t.Errorf("v1 is %s, want %s", got.Digest, desc.Digest)
	}
}

// TestAPushTurnedAwayForAnExpiredTokenGoesAgain restores an image into a registry that takes
// bearer tokens, through a proxy that answers the first PUT of every blob and of the manifest
// with the registry's own 401 challenge, as the registry does when a token expires between two
// requests. go-containerregistry's bearer transport then renews the token and sends the request
// again, with a body its first send read: a manifest's is opened anew, and a blob goes again in
// a new upload. The image must arrive whole.
func TestAPushTurnedAwayForAnExpiredTokenGoesAgain(t *testing.T) {
	ctx := context.Background()
	reg := peers.StartRegistry(t, peers.TokenAuth(time.Hour))
	auth := authn.FromConfig(authn.AuthConfig{Username: reg.Username, Password: reg.Password})
	resp, err := http.Get("http://" + reg.Host + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	challenge := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != http.StatusUnauthorized || challenge == "" {
		t.Fatalf("registry's answer to an anonymous ping: %s, challenge %q", resp.Status, challenge)
	}
	var turnedAway sync.Map
	proxy := faults.Start(t, reg.Host, faults.Config{Intercept: func(r *http.Request, _ faults.Counts) *faults.Reply {
		if r.Method != http.MethodPut {
			return nil
		}
		key := r.URL.Path
		if d := r.URL.Query().Get("digest"); d != "" {
			key = d
		}
		if _, seen := turnedAway.LoadOrStore(key, true); seen {
			return nil
		}
		return &faults.Reply{Status: http.StatusUnauthorized, Header: http.Header{"WWW-Authenticate": {challenge}, "Content-Type": {"application/json"}},
			Body: `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`}
	}})
	f := newStore(t)
	large := must[v1.Layer](t)(random.Layer(4*copier.SmallBlobSize, types.DockerLayer))
	img := must[v1.Image](t)(mutate.AppendLayers(dockerImage(t), large))
	desc := storeImage(t, f, newRegistry(t), img)
	p, err := copier.NewPusher(f.store, copier.Options{Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Push(ctx, desc, must[name.Repository](t)(name.NewRepository(proxy.Host+"/restored/app")), []string{"latest"}); err != nil {
		t.Fatalf("restore through %s: %v", proxy.Counts(), err)
	}
	// Four layers, a config and the manifest were each turned away once.
	if got, want := proxy.Counts().Intercepted, int64(len(must[[]v1.Layer](t)(img.Layers()))+2); got != want {
		t.Errorf("requests turned away = %d, want %d", got, want)
	}
	got := must[v1.Image](t)(remote.Image(must[name.Repository](t)(name.NewRepository(reg.Host+"/restored/app")).Tag("latest"), remote.WithAuth(auth)))
	if d := must[v1.Hash](t)(got.Digest()); d != desc.Digest {
		t.Errorf("restored digest %s, want %s", d, desc.Digest)
	}
	if err := readAll(got); err != nil {
		t.Error(err)
	}
}
