package action

import (
	"context"
	"fmt"
	"os"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openshift/oadp-imagestreams-backup/internal/cluster"
)

// RegistryHostEnv overrides the internal registry's host.
const RegistryHostEnv = "IMAGESTREAMS_BACKUP_REGISTRY_HOST"

// RegistryHost returns a function that tells the internal registry's host: $RegistryHostEnv, or
// what cluster.RegistryHost reads from image.config.openshift.io/cluster, read once. A failed
// read is not kept: the next call reads again.
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
		h, err := cluster.RegistryHost(ctx, c)
		if err != nil {
			return "", fmt.Errorf("finding the internal registry: %w", err)
		}
		host = h
		return host, nil
	}
}
