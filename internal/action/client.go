package action

import (
	"fmt"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openshift/oadp-imagestreams-backup/internal/cluster"
)

// NewClient returns a client for the plugin's kinds from cfg.
func NewClient(cfg *rest.Config) (client.Client, error) {
	s, err := cluster.NewScheme()
	if err != nil {
		return nil, fmt.Errorf("building the scheme: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	return c, nil
}
