package v1alpha1

import (
	"strings"
	"testing"
)

// References come from imagestream statuses and ImageStreamsBackup specs: whatever the text,
// the namespace read from one is a single path component of it, never a path.
func FuzzNamespaceFromReference(f *testing.F) {
	f.Add("image-registry.openshift-image-registry.svc:5000/app/web@sha256:0123")
	f.Add("quay.io/org/team/web:latest")
	f.Add("web@sha256:x/y/z")
	f.Add("a/../b/c@d/e")
	f.Add("//@")
	f.Fuzz(func(t *testing.T, ref string) {
		ns := NamespaceFromReference(ref)
		if strings.ContainsAny(ns, "/@") {
			t.Fatalf("NamespaceFromReference(%q) = %q, not one path component", ref, ns)
		}
		path, _, _ := strings.Cut(ref, "@")
		parts := strings.Split(path, "/")
		if len(parts) < 3 {
			if ns != "" {
				t.Fatalf("NamespaceFromReference(%q) = %q from a path of %d components", ref, ns, len(parts))
			}
			return
		}
		if ns != parts[len(parts)-2] {
			t.Fatalf("NamespaceFromReference(%q) = %q, want %q", ref, ns, parts[len(parts)-2])
		}
	})
}
