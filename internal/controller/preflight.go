package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/internal/location"
)

// openStore resolves a backupLocation and opens its store. The reason names what is wrong
// for a condition; errors never carry credentials.
func (c *Config) openStore(ctx context.Context, reader client.Reader, loc *oadpv1alpha1.BackupLocation) (*imagestore.Store, string, error) {
	l, reason, err := c.resolveLocation(ctx, reader, loc)
	if err != nil {
		return nil, reason, err
	}
	store, err := openLocation(ctx, l)
	if err != nil {
		return nil, location.ReasonInvalidLocation, err
	}
	return store, "", nil
}

// resolveLocation resolves a backupLocation, with the condition reason of what is wrong.
func (c *Config) resolveLocation(ctx context.Context, reader client.Reader, loc *oadpv1alpha1.BackupLocation) (*location.Location, string, error) {
	l, err := location.Resolve(ctx, reader, c.VeleroNamespace, loc)
	if err != nil {
		return nil, location.Reason(err, ReasonStoreUnavailable), err
	}
	return l, "", nil
}

// openLocation opens a resolved location's store.
func openLocation(ctx context.Context, l *location.Location) (*imagestore.Store, error) {
	b, err := bucket.Open(ctx, l.Bucket)
	if err != nil {
		return nil, fmt.Errorf("opening backup location %s: %w", l.Describe(), err)
	}
	return imagestore.New(b, l.Prefix), nil
}

// preflight checks everything a copy needs before it starts, so that a missing Secret or an
// unreachable registry shows as a condition and is retried, instead of failing every image.
func (c *Config) preflight(ctx context.Context, reader client.Reader, loc *oadpv1alpha1.BackupLocation) (*imagestore.Store, copier.Options, string, string, error) {
	opts, err := c.Registry.options()
	if err != nil {
		return nil, opts, "", ReasonRegistryNotConfigured, err
	}
	host, err := c.Registry.host(ctx, reader)
	if err != nil {
		return nil, opts, "", ReasonRegistryNotConfigured, err
	}
	reg, err := name.NewRegistry(host, nameOpts(opts)...)
	if err != nil {
		return nil, opts, "", ReasonRegistryNotConfigured, fmt.Errorf("registry host %q: %w", host, err)
	}
	opts.AuthHost = reg.RegistryStr()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := copier.Ping(pctx, reg, opts); err != nil {
		return nil, opts, "", ReasonRegistryUnavailable, fmt.Errorf("registry %s: %w", host, err)
	}
	store, reason, err := c.openStore(ctx, reader, loc)
	if err != nil {
		return nil, opts, "", reason, err
	}
	return store, opts, host, "", nil
}
