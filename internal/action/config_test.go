package action_test

import (
	"context"
	"testing"

	configv1 "github.com/openshift/api/config/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

type configClusterImage struct{}

// ensure sets image.config.openshift.io/cluster status.internalRegistryHostname.
func (configClusterImage) ensure(t *testing.T, host string) {
	ctx := context.Background()
	img := &configv1.Image{ObjectMeta: metav1.ObjectMeta{Name: "cluster"}}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(img), img); apierrors.IsNotFound(err) {
		if err := env.Client.Create(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	img.Status.InternalRegistryHostname = host
	if err := env.Client.Status().Update(ctx, img); err != nil {
		t.Fatal(err)
	}
}
