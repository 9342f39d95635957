package testenv_test

import (
	"testing"
	"time"

	"github.com/openshift/oadp-imagestreams-backup/test/testenv"
)

// The controller manager starts only once its garbage collector and namespace controller have
// each done their work once (see startControllerManager), and stops with the control plane.
func TestControllerManagerCollectsAndRemovesNamespaces(t *testing.T) {
	start := time.Now()
	env, err := testenv.StartWith(testenv.Options{ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("control plane with kube-controller-manager ready in %v", time.Since(start).Round(100*time.Millisecond))
	if err := env.Stop(); err != nil {
		t.Fatal(err)
	}
}
