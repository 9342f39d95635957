package transfer

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

func TestOutcome(t *testing.T) {
	tests := map[string]struct {
		total, failed         int64
		reason                string
		partial, allFailedOut bool
	}{
		"no failure completes":            {4, 0, oadpv1alpha1.ReasonCompleted, false, false},
		"an empty backup completes":       {0, 0, oadpv1alpha1.ReasonCompleted, false, false},
		"some failures partially fail":    {4, 1, oadpv1alpha1.ReasonPartiallyFailed, true, false},
		"every image failing fails it":    {4, 4, oadpv1alpha1.ReasonFailed, false, true},
		"the only image failing fails it": {1, 1, oadpv1alpha1.ReasonFailed, false, true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			o := outcomeOf(tt.total, tt.failed)
			reason, partial, all := reasonOf(o), o == PartiallyFailed, o == Failed
			if reason != tt.reason || partial != tt.partial || all != tt.allFailedOut {
				t.Errorf("outcome(%d, %d) = %s, %v, %v", tt.total, tt.failed, reason, partial, all)
			}
		})
	}
}

func TestFailureReason(t *testing.T) {
	tests := map[string]struct {
		err  error
		want string
	}{
		"an unknown manifest":  {&transport.Error{StatusCode: 404, Errors: []transport.Diagnostic{{Code: transport.ManifestUnknownErrorCode}}}, oadpv1alpha1.ReasonImageNotFound},
		"a plain 404":          {fmt.Errorf("fetching: %w", &transport.Error{StatusCode: 404}), oadpv1alpha1.ReasonImageNotFound},
		"a denied pull":        {&transport.Error{StatusCode: 403, Errors: []transport.Diagnostic{{Code: transport.DeniedErrorCode}}}, oadpv1alpha1.ReasonUnauthorized},
		"a failing registry":   {&transport.Error{StatusCode: 503}, oadpv1alpha1.ReasonRegistryUnavailable},
		"a connection refused": {&net.OpError{Op: "dial", Err: errors.New("refused")}, oadpv1alpha1.ReasonRegistryUnavailable},
		"a corrupt blob":       {&imagestore.DigestMismatchError{Digest: v1.Hash{Algorithm: "sha256", Hex: "00"}}, oadpv1alpha1.ReasonDigestMismatch},
		"anything else":        {errors.New("odd"), oadpv1alpha1.ReasonCopyFailed},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := FailureReason(tt.err); got != tt.want {
				t.Errorf("FailureReason(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}

func TestFailuresAreBounded(t *testing.T) {
	var f failures
	for i := range oadpv1alpha1.MaxFailures + 10 {
		f.add("ns", "is", fmt.Sprintf("r/ns/is@sha256:%064x", i), errors.New(string(make([]byte, 2000))))
	}
	if f.count != oadpv1alpha1.MaxFailures+10 || len(f.list) != oadpv1alpha1.MaxFailures || len(f.list[0].Message) > 1024 {
		t.Errorf("failures kept %d of %d, first message %d bytes", len(f.list), f.count, len(f.list[0].Message))
	}
}

func TestSelectImages(t *testing.T) {
	d := func(n int) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", n)} }
	entry := func(ns, is string, n int, tags ...string) imagestore.Entry {
		return imagestore.Entry{Namespace: ns, ImageStream: is, Tags: tags, Descriptor: v1.Descriptor{Digest: d(n)}}
	}
	// Newest first, as recorded.
	entries := []imagestore.Entry{entry("app", "web", 2, "latest", "v2"), entry("app", "web", 1, "latest", "v1"), entry("app", "api", 3, "latest")}
	digests := func(items []restoreItem) (out []string) {
		for _, it := range items {
			if it.missing != nil {
				out = append(out, "missing")
				continue
			}
			out = append(out, it.entry.Descriptor.Digest.Hex[62:]+":"+fmt.Sprint(it.tags))
		}
		return out
	}
	tests := map[string]struct {
		spec oadpv1alpha1.ImageStreamsRestoreSpec
		want map[[2]string][]string
	}{
		"everything, oldest first within an imagestream": {spec: oadpv1alpha1.ImageStreamsRestoreSpec{}, want: map[[2]string][]string{
			{"app", "web"}: {"01:[latest v1]", "02:[latest v2]"}, {"app", "api"}: {"03:[latest]"}}},
		"one imagestream by name": {spec: oadpv1alpha1.ImageStreamsRestoreSpec{ImageStreams: []oadpv1alpha1.ImageStream{{Name: "api", Namespace: "app"}}},
			want: map[[2]string][]string{{"app", "api"}: {"03:[latest]"}}},
		"one image by digest with its own tags": {spec: oadpv1alpha1.ImageStreamsRestoreSpec{ImageStreams: []oadpv1alpha1.ImageStream{{Name: "web",
			DockerImageReferences: []oadpv1alpha1.DockerImageReference{{DockerImageReference: "other-cluster:5000/app/web@" + d(1).String(), Tags: []string{"restored"}}}}}},
			want: map[[2]string][]string{{"app", "web"}: {"01:[restored]"}}},
		"an imagestream the backup lacks": {spec: oadpv1alpha1.ImageStreamsRestoreSpec{ImageStreams: []oadpv1alpha1.ImageStream{{Name: "nope", Namespace: "app"}}},
			want: map[[2]string][]string{{"app", "nope"}: {"missing"}}},
		"an image the backup lacks": {spec: oadpv1alpha1.ImageStreamsRestoreSpec{ImageStreams: []oadpv1alpha1.ImageStream{{Name: "web", Namespace: "app",
			DockerImageReferences: []oadpv1alpha1.DockerImageReference{{DockerImageReference: "r/app/web@" + d(9).String()}}}}},
			want: map[[2]string][]string{{"app", "web"}: {"missing"}}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := map[[2]string][]string{}
			for k, items := range selectImages(&tt.spec, entries) {
				got[k] = digests(items)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("selectImages() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMergeReferences(t *testing.T) {
	a, b := "r/ns/is@sha256:"+strings.Repeat("a", 64), "r/ns/is@sha256:"+strings.Repeat("b", 64)
	tests := []struct {
		name string
		in   []oadpv1alpha1.DockerImageReference
		want []oadpv1alpha1.DockerImageReference
	}{
		{"none", nil, []oadpv1alpha1.DockerImageReference{}},
		{"distinct", []oadpv1alpha1.DockerImageReference{{DockerImageReference: a, Tags: []string{"x"}}, {DockerImageReference: b}},
			[]oadpv1alpha1.DockerImageReference{{DockerImageReference: a, Tags: []string{"x"}}, {DockerImageReference: b}}},
		{"twice, tags joined in order", []oadpv1alpha1.DockerImageReference{{DockerImageReference: a, Tags: []string{"x", "y"}}, {DockerImageReference: b}, {DockerImageReference: a, Tags: []string{"y", "z"}}},
			[]oadpv1alpha1.DockerImageReference{{DockerImageReference: a, Tags: []string{"x", "y", "z"}}, {DockerImageReference: b}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergeReferences(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("mergeReferences = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFailedImageStreamsAreBounded(t *testing.T) {
	var f failures
	for i := range oadpv1alpha1.MaxFailedImageStreams + 10 {
		f.add("ns", fmt.Sprintf("is-%04d", i), "r/ns/is@sha256:0", errors.New("gone"))
	}
	var r Result
	f.into(&r)
	s := oadpv1alpha1.CommonStatus{FailedImageStreams: r.FailedImageStreams, Progress: oadpv1alpha1.Progress{ImagesFailed: f.count}}
	if len(r.FailedImageStreams) != oadpv1alpha1.MaxFailedImageStreams || !s.FailedImageStreamsLeftOut() {
		t.Errorf("%d imagestreams counted of %d; left out reported %v", len(r.FailedImageStreams), f.count, s.FailedImageStreamsLeftOut())
	}
}
