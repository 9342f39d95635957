package copier_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

// TestRegistryTLSIsVerified runs backup and restore against registries that serve TLS with
// certificates from a CA no system root vouches for. Without that CA both directions fail on
// the certificate, and never try plain HTTP instead; with Options.CACert, or with the explicit
// opt-in Options.Insecure, both work.
func TestRegistryTLSIsVerified(t *testing.T) {
	ctx := context.Background()
	src, dst := peers.StartTLSRegistry(t, peers.BasicAuth), peers.StartTLSRegistry(t, peers.BasicAuth)
	// Clients reach the registries through sniffers that see whether a connection starts
	// with a TLS handshake.
	srcSniff, dstSniff := sniff(t, src.Host), sniff(t, dst.Host)
	srcAuth := authn.FromConfig(authn.AuthConfig{Username: src.Username, Password: src.Password})
	dstAuth := authn.FromConfig(authn.AuthConfig{Username: dst.Username, Password: dst.Password})

	img := dockerImage(t)
	repo := must[name.Repository](t)(name.NewRepository(srcSniff.host + "/app/img"))
	if repo.Scheme() != "https" {
		t.Fatalf("go-containerregistry talks %s to %s; the test needs an address it talks HTTPS to", repo.Scheme(), repo.RegistryStr())
	}
	ref := repo.Digest(must[v1.Hash](t)(img.Digest()).String())
	if err := remote.Write(ref, img, remote.WithAuth(srcAuth), remote.WithTransport(trusting(t, src.CACert))); err != nil {
		t.Fatal(err)
	}
	stored := newStore(t)
	desc, err := newCopierWith(t, stored, copier.Options{Auth: srcAuth, CACert: src.CACert}).Copy(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name             string
		srcOpts, dstOpts copier.Options
		wantErr          bool
	}{
		{"the system roots do not verify a private CA", copier.Options{}, copier.Options{}, true},
		{"another CA does not verify it", copier.Options{CACert: dst.CACert}, copier.Options{CACert: src.CACert}, true},
		{"the registry's CA verifies it", copier.Options{CACert: src.CACert}, copier.Options{CACert: dst.CACert}, false},
		{"insecure skips verification when asked to", copier.Options{Insecure: true}, copier.Options{Insecure: true}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srcSniff.reset()
			dstSniff.reset()
			tt.srcOpts.Auth, tt.dstOpts.Auth = srcAuth, dstAuth
			_, copyErr := newCopierWith(t, newStore(t), tt.srcOpts).Copy(ctx, ref)
			p, err := copier.NewPusher(stored.store, tt.dstOpts)
			if err != nil {
				t.Fatal(err)
			}
			to := must[name.Repository](t)(name.NewRepository(dstSniff.host + "/restored/img"))
			pushErr := p.Push(ctx, desc, to, []string{"latest"})

			for _, side := range []struct {
				what string
				err  error
				s    *sniffer
			}{{"backup", copyErr, srcSniff}, {"restore", pushErr, dstSniff}} {
				switch {
				case tt.wantErr && (side.err == nil || !strings.Contains(side.err.Error(), "certificate")):
					t.Errorf("%s error = %v, want one about the certificate", side.what, side.err)
				case tt.wantErr:
					t.Logf("%s: %v", side.what, side.err)
				case side.err != nil:
					t.Errorf("%s: %v", side.what, side.err)
				}
				if n := side.s.plain.Load(); n != 0 {
					t.Errorf("%s opened %d plain HTTP connections to a TLS registry", side.what, n)
				}
				if side.s.tls.Load() == 0 {
					t.Errorf("%s never opened a TLS connection", side.what)
				}
			}
			if tt.wantErr {
				return
			}
			got, err := remote.Get(to.Tag("latest"), remote.WithAuth(dstAuth), remote.WithTransport(trusting(t, dst.CACert)))
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest != desc.Digest {
				t.Errorf("restored digest %s, want %s", got.Digest, desc.Digest)
			}
		})
	}
}

func trusting(t *testing.T, ca []byte) http.RoundTripper {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = must[*tls.Config](t)(bucket.TLSConfig(ca, false))
	return tr
}

// sniffer forwards TCP connections to a server and counts those that begin with a TLS
// handshake record and those that do not.
type sniffer struct {
	host       string
	tls, plain atomic.Int64
}

func (s *sniffer) reset() { s.tls.Store(0); s.plain.Store(0) }

// sniff listens on the same loopback address as target, whose certificate names the address.
func sniff(t *testing.T, target string) *sniffer {
	ip, _, err := net.SplitHostPort(target)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s := &sniffer{host: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.pipe(c, target)
		}
	}()
	return s
}

func (s *sniffer) pipe(c net.Conn, target string) {
	defer c.Close()
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		return
	}
	if first[0] == 0x16 { // TLS handshake record
		s.tls.Add(1)
	} else {
		s.plain.Add(1)
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(up, br); _ = up.(*net.TCPConn).CloseWrite() }()
	_, _ = io.Copy(c, up)
}
