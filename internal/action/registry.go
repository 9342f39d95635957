package action

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	configv1 "github.com/openshift/api/config/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RegistryHostEnv overrides the internal registry's host.
const RegistryHostEnv = "IMAGESTREAMS_BACKUP_REGISTRY_HOST"

// RegistryHost returns a function that tells the internal registry's host: $RegistryHostEnv, or
// image.config.openshift.io/cluster status.internalRegistryHostname, read once.
func RegistryHost(c client.Reader) func(context.Context) (string, error) {
	var mu sync.Mutex
	var host string
	return func(ctx context.Context) (string, error) {
		if h := os.Getenv(RegistryHostEnv); h != "" {
			return h, nil
		}
		mu.Lock()
		defer mu.Unlock()
		if host != "" {
			return host, nil
		}
		cfg := &configv1.Image{}
		if err := c.Get(ctx, client.ObjectKey{Name: "cluster"}, cfg); err != nil {
			return "", fmt.Errorf("finding the internal registry: reading image.config.openshift.io/cluster: %w", err)
		}
		if cfg.Status.InternalRegistryHostname == "" {
			return "", errors.New("finding the internal registry: image.config.openshift.io/cluster has no status.internalRegistryHostname")
		}
		host = cfg.Status.InternalRegistryHostname
		return host, nil
	}
}
