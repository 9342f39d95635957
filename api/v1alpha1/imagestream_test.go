package v1alpha1

import "testing"

func TestNamespaceFromReference(t *testing.T) {
	tests := []struct {
		name, ref, want string
	}{
		{"an internal-registry digest reference gives its namespace", "image-registry.openshift-image-registry.svc:5000/openshift/apicast-gateway@sha256:313df5722ddd866d43758af161e5932dfd4648b99a5c57acfddfc2a955669fe8", "openshift"},
		{"a tag reference gives its namespace", "registry:5000/app/web:latest", "app"},
		{"a deeper path gives the component before the name", "quay.io/org/team/image@sha256:abc", "team"},
		{"a reference without namespace gives nothing", "registry:5000/image@sha256:abc", ""},
		{"an empty reference gives nothing", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NamespaceFromReference(tt.ref); got != tt.want {
				t.Errorf("NamespaceFromReference(%q) = %q, want %q", tt.ref, got, tt.want)
			}
		})
	}
}

func TestNamespaceOrDefault(t *testing.T) {
	ref := DockerImageReference{DockerImageReference: "r:5000/from-ref/is@sha256:313df5722ddd866d43758af161e5932dfd4648b99a5c57acfddfc2a955669fe8"}
	tests := []struct {
		name string
		is   ImageStream
		want string
	}{
		{"an explicit namespace wins", ImageStream{Name: "is", Namespace: "explicit", DockerImageReferences: []DockerImageReference{ref}}, "explicit"},
		{"an empty namespace comes from the reference path", ImageStream{Name: "is", DockerImageReferences: []DockerImageReference{ref}}, "from-ref"},
		{"no namespace and no references give nothing", ImageStream{Name: "is"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.is.NamespaceOrDefault(); got != tt.want {
				t.Errorf("NamespaceOrDefault() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBackupName(t *testing.T) {
	tests := []struct {
		name string
		spec ImageStreamsRestoreSpec
		want string
	}{
		{"the design note's capitalised key", ImageStreamsRestoreSpec{ImageStreamsBackupReference: &ImageStreamsBackupReference{Name: "a"}}, "a"},
		{"the conventional spelling", ImageStreamsRestoreSpec{ImageStreamsBackupReferenceAlias: &ImageStreamsBackupReference{Name: "b"}}, "b"},
		{"neither spelling", ImageStreamsRestoreSpec{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.spec.BackupName(); got != tt.want {
				t.Errorf("BackupName() = %q, want %q", got, tt.want)
			}
		})
	}
}
