package v1alpha1

import "strings"

// NamespaceOrDefault is the imagestream's namespace: Namespace when set, else the namespace in
// the path of its first image reference (<registry>/<namespace>/<name>@sha256:...), else "".
func (s *ImageStream) NamespaceOrDefault() string {
	if s.Namespace != "" {
		return s.Namespace
	}
	for _, r := range s.DockerImageReferences {
		if ns := NamespaceFromReference(r.DockerImageReference); ns != "" {
			return ns
		}
	}
	return ""
}

// NamespaceFromReference returns the namespace in the path of an internal-registry reference,
// <registry>/<namespace>/<name>[@digest|:tag], or "" when the path has fewer components.
func NamespaceFromReference(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	parts := strings.Split(ref, "/")
	if len(parts) < 3 {
		return ""
	}
	return parts[len(parts)-2]
}
