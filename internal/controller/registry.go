package controller

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openshift/oadp-imagestreams-backup/internal/cluster"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
)

// Registry says how the worker reaches the cluster's internal registry.
type Registry struct {
	// Host overrides the host discovered from image.config.openshift.io/cluster
	// status.internalRegistryHostname.
	Host string
	// CACert verifies the registry's TLS certificate (the service CA on OpenShift).
	CACert []byte
	// Insecure skips TLS verification; an explicit opt-in only.
	Insecure bool
	// TokenFile holds the service account token the registry accepts as a password; read
	// for every copy because projected tokens rotate.
	TokenFile string
	// Username goes with the token; OpenShift's registry ignores it.
	Username string
	// Jobs is how many blobs move at once.
	Jobs int

	// slots are the Jobs transfer slots every backup and restore of the worker shares (see
	// copier.Options.Slots).
	slots chan struct{}
	// smallSlots are the slots of small blobs (copier.Options.SmallSlots).
	smallSlots chan struct{}
}

// host returns the registry host: the override, else the cluster's image config.
func (r *Registry) host(ctx context.Context, c client.Reader) (string, error) {
	if r.Host != "" {
		return r.Host, nil
	}
	return cluster.RegistryHost(ctx, c)
}

// options builds copier options with the current token.
func (r *Registry) options() (copier.Options, error) {
	opts := copier.Options{CACert: r.CACert, Insecure: r.Insecure, Jobs: r.Jobs, Slots: r.slots, SmallSlots: r.smallSlots, Auth: authn.Anonymous}
	if r.TokenFile == "" {
		return opts, nil
	}
	token, err := os.ReadFile(r.TokenFile)
	if err != nil {
		return opts, fmt.Errorf("reading registry token: %w", err)
	}
	user := r.Username
	if user == "" {
		user = "serviceaccount"
	}
	// OpenShift's registry takes a service account token as the password of basic auth and
	// trades it for a bearer token at its /openshift/token endpoint, which go-containerregistry
	// does on the first 401.
	opts.Auth = authn.FromConfig(authn.AuthConfig{Username: user, Password: strings.TrimSpace(string(token))})
	return opts, nil
}
