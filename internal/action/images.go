package action

import (
	"slices"
	"strings"

	imagev1 "github.com/openshift/api/image/v1"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// internalImages lists an imagestream's images that live in the internal registry host, in
// history order (each tag's newest first, tags in status order), each once, recorded under the
// imagestream's own repository: <host>/<namespace>/<name>@<digest>. An image promoted from
// another namespace keeps that namespace in its stored reference, but the registry serves it
// through this imagestream's repository, and the source may be pruned. Each image carries the
// tags whose current image it is, so a restore puts every tag back where it pointed.
func internalImages(is *imagev1.ImageStream, host string) []oadpv1alpha1.DockerImageReference {
	var out []oadpv1alpha1.DockerImageReference
	index := map[string]int{}
	for _, tag := range is.Status.Tags {
		for i, item := range tag.Items {
			if !strings.HasPrefix(item.DockerImageReference, host+"/") || !strings.HasPrefix(item.Image, "sha256:") {
				continue
			}
			ref := host + "/" + is.Namespace + "/" + is.Name + "@" + item.Image
			j, seen := index[ref]
			if !seen {
				j = len(out)
				index[ref] = j
				out = append(out, oadpv1alpha1.DockerImageReference{DockerImageReference: ref})
			}
			if i == 0 && !slices.Contains(out[j].Tags, tag.Tag) {
				out[j].Tags = append(out[j].Tags, tag.Tag)
			}
		}
	}
	return out
}
