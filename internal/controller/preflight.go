package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/internal/location"
	"github.com/openshift/oadp-imagestreams-backup/internal/transfer"
)

// openStore resolves a backupLocation and opens its store. The reason names what is wrong
// for a condition; errors never carry credentials.
func (c *Config) openStore(ctx context.Context, reader client.Reader, loc *oadpv1alpha1.BackupLocation) (*imagestore.Store, string, error) {
	l, reason, err := c.resolveLocation(ctx, reader, loc)
	if err != nil {
		return nil, reason, err
	}
	store, err := transfer.OpenStore(ctx, l)
	if err != nil {
		return nil, oadpv1alpha1.ReasonInvalidLocation, err
	}
	return store, "", nil
}

// resolveLocation resolves a backupLocation, with the condition reason of what is wrong.
func (c *Config) resolveLocation(ctx context.Context, reader client.Reader, loc *oadpv1alpha1.BackupLocation) (*location.Location, string, error) {
	l, err := location.Resolve(ctx, reader, c.VeleroNamespace, loc)
	if err != nil {
		return nil, location.Reason(err, oadpv1alpha1.ReasonStoreUnavailable), err
	}
	return l, "", nil
}

// prepared is what a copy needs, checked by preflight.
type prepared struct {
	store *imagestore.Store
	opts  copier.Options
	// host is the internal registry's host.
	host string
}

// preflight checks everything a copy needs before it starts, so that a missing Secret or an
// unreachable registry shows as a condition and is retried, instead of failing every image.
// The reason names what is wrong for a condition.
func (c *Config) preflight(ctx context.Context, reader client.Reader, loc *oadpv1alpha1.BackupLocation) (*prepared, string, error) {
	opts, err := c.Registry.options()
	if err != nil {
		return nil, oadpv1alpha1.ReasonRegistryNotConfigured, err
	}
	host, err := c.Registry.host(ctx, reader)
	if err != nil {
		return nil, oadpv1alpha1.ReasonRegistryNotConfigured, err
	}
	reg, err := name.NewRegistry(host, opts.NameOptions()...)
	if err != nil {
		return nil, oadpv1alpha1.ReasonRegistryNotConfigured, fmt.Errorf("registry host %q: %w", host, err)
	}
	opts.AuthHost = reg.RegistryStr()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := copier.Ping(pctx, reg, opts); err != nil {
		return nil, oadpv1alpha1.ReasonRegistryUnavailable, fmt.Errorf("registry %s: %w", host, err)
	}
	store, reason, err := c.openStore(ctx, reader, loc)
	if err != nil {
		return nil, reason, err
	}
	return &prepared{store: store, opts: opts, host: host}, "", nil
}
