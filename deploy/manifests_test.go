// Package deploy holds the manifests that install the worker; its test applies them to a real
// API server so that a typo or a field the server does not know fails here, not at install.
package deploy

import (
	"context"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/openshift/oadp-imagestreams-backup/test/testenv"
)

func TestKustomizationAppliesToAnAPIServer(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	ctx := context.Background()
	c := client.WithFieldValidation(env.Client, metav1.FieldValidationStrict)
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "openshift-adp"}}); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Namespace string   `json:"namespace"`
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, file := range k.Resources {
		if strings.HasPrefix(file, "crd/") {
			continue // testenv installed them
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("kustomization names %s: %v", file, err)
		}
		for _, doc := range strings.Split(string(b), "\n---\n") {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if u.GetNamespace() != "" && u.GetNamespace() != k.Namespace {
				t.Errorf("%s: %s %s is in namespace %s, not the kustomization's %s",
					file, u.GetKind(), u.GetName(), u.GetNamespace(), k.Namespace)
			}
			if err := c.Create(ctx, u); err != nil {
				t.Errorf("%s: creating %s %s: %v", file, u.GetKind(), u.GetName(), err)
			}
			kinds[u.GetKind()]++
		}
	}
	for _, kind := range []string{
		"Deployment", "ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap",
	} {
		if kinds[kind] == 0 {
			t.Errorf("the kustomization installs no %s", kind)
		}
	}
}
