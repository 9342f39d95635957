// Package cluster holds what the worker and the Velero plugin both read from the cluster: the
// kinds they know and the internal registry's host.
package cluster

import (
	"context"
	"errors"
	"fmt"

	configv1 "github.com/openshift/api/config/v1"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// NewScheme returns a scheme with every kind the worker and the plugin read or write.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, oadpv1alpha1.AddToScheme, velerov1.AddToScheme, configv1.Install} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// ErrRegistryNotConfigured says the internal registry's host is unknown.
var ErrRegistryNotConfigured = errors.New("the internal registry's host is unknown: image.config.openshift.io/cluster has no status.internalRegistryHostname")

// RegistryHost returns the internal registry's host from image.config.openshift.io/cluster
// status.internalRegistryHostname. Every error wraps ErrRegistryNotConfigured.
func RegistryHost(ctx context.Context, c client.Reader) (string, error) {
	cfg := &configv1.Image{}
	if err := c.Get(ctx, client.ObjectKey{Name: "cluster"}, cfg); err != nil {
		return "", fmt.Errorf("%w (reading image.config.openshift.io/cluster: %v)", ErrRegistryNotConfigured, err)
	}
	if cfg.Status.InternalRegistryHostname == "" {
		return "", ErrRegistryNotConfigured
	}
	return cfg.Status.InternalRegistryHostname, nil
}
