package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BackupLocation says where image content is stored, in the shape of an OADP
// DataProtectionApplication's backupLocations[] entry: a Velero BackupStorageLocation by name,
// or a location described inline under velero (name then only labels it, as in a
// DataProtectionApplication). When both are empty the worker uses the Velero
// BackupStorageLocation marked default.
type BackupLocation struct {
	// name is the name of a Velero BackupStorageLocation in the Velero namespace. When velero is
	// set too, the inline location is used and name only labels it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Name string `json:"name,omitempty"`

	// velero is a location described inline, with the fields of Velero's
	// BackupStorageLocation spec that object storage needs.
	// +optional
	Velero *VeleroLocation `json:"velero,omitempty"`
}

// VeleroLocation is an inline object storage location in the shape of a DataProtectionApplication's
// backupLocations[].velero entry.
type VeleroLocation struct {
	// provider names the object store: aws, gcp, azure, or file for a local directory.
	// The "velero.io/" prefix Velero accepts is allowed.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Provider string `json:"provider"`

	// default marks the location as the default one, as in Velero; the worker does not read it
	// but accepts it so that a DataProtectionApplication's entry can be copied unchanged.
	// +optional
	Default bool `json:"default,omitempty"`

	// objectStorage names the bucket and prefix.
	ObjectStorage ObjectStorageLocation `json:"objectStorage"`

	// config holds the provider's settings under the keys Velero's provider plugins read,
	// for example region, s3Url, s3ForcePathStyle, insecureSkipTLSVerify and profile for aws.
	// +optional
	Config map[string]string `json:"config,omitempty"`

	// credential selects the key of a Secret in the Velero namespace that holds the provider's
	// credentials file. When empty, Velero's default cloud-credentials Secret is used.
	// +optional
	Credential *corev1.SecretKeySelector `json:"credential,omitempty"`
}

// ObjectStorageLocation names a bucket and a prefix within it.
type ObjectStorageLocation struct {
	// bucket is the name of the bucket (or, for the file provider, a directory).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Bucket string `json:"bucket"`

	// prefix is the path inside the bucket under which Velero keeps its data; images are stored
	// under <prefix>/plugins/imagestreams/.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="!self.split('/').exists(p, p == '..' || p == '.')",message="prefix must not contain '.' or '..' path segments"
	// +optional
	Prefix string `json:"prefix,omitempty"`

	// caCert is a PEM bundle used to verify the object store's TLS certificate.
	// +optional
	CACert []byte `json:"caCert,omitempty"`
}

// ImageStream lists the images of one imagestream.
type ImageStream struct {
	// name is the imagestream's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*$`
	Name string `json:"name"`

	// namespace is the imagestream's namespace. When empty it is taken from the path of the
	// image references (<registry>/<namespace>/<name>@sha256:...).
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$`
	// +kubebuilder:default=""
	// +optional
	Namespace string `json:"namespace"`

	// dockerImageReferences are the imagestream's images, each by digest, with the tags that
	// point at it. A reference listed twice is one image with the tags of both entries.
	// The list is atomic: one writer owns an imagestream's references, and server-side apply
	// keeps no per-reference ownership record, which would double the size of large backups.
	// +listType=atomic
	// +optional
	DockerImageReferences []DockerImageReference `json:"dockerImageReferences,omitempty"`
}

// DockerImageReference is one image, named by digest, and the tags to create for it on restore.
type DockerImageReference struct {
	// dockerImageReference is the image's digest reference,
	// <registry>/<namespace>/<name>@sha256:<64 lowercase hex>. Tag references are refused:
	// a tag can move, a digest names exactly the bytes that were backed up.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?(/[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*)+@sha256:[a-f0-9]{64}$`
	DockerImageReference string `json:"dockerImageReference"`

	// tags are the imagestream tags that point at this image, in history order: on restore
	// they are created in this order.
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`
	// +optional
	Tags []string `json:"tags,omitempty"`
}

// Progress counts the work of a backup or restore. It holds counts, never one entry per image
// or blob, so that status stays small for backups of tens of thousands of images.
type Progress struct {
	// imagesTotal is the number of images to copy.
	// +optional
	ImagesTotal int64 `json:"imagesTotal,omitempty"`
	// imagesDone is the number of images copied, including those found already stored.
	// +optional
	ImagesDone int64 `json:"imagesDone,omitempty"`
	// imagesFailed is the number of images that could not be copied.
	// +optional
	ImagesFailed int64 `json:"imagesFailed,omitempty"`

	// blobsTotal is the number of distinct blobs (layers, configs and manifests) seen so far.
	// +optional
	BlobsTotal int64 `json:"blobsTotal,omitempty"`
	// blobsUploaded is the number of blobs written.
	// +optional
	BlobsUploaded int64 `json:"blobsUploaded,omitempty"`
	// blobsSkipped is the number of blobs not written because the destination already held them.
	// +optional
	BlobsSkipped int64 `json:"blobsSkipped,omitempty"`

	// bytesTotal is the size of the distinct blobs seen so far.
	// +optional
	BytesTotal int64 `json:"bytesTotal,omitempty"`
	// bytesUploaded is the number of bytes written.
	// +optional
	BytesUploaded int64 `json:"bytesUploaded,omitempty"`
	// bytesSkipped is the number of bytes not written because the destination already held them.
	// +optional
	BytesSkipped int64 `json:"bytesSkipped,omitempty"`
}

// MaxFailures bounds status.failures; status.progress.imagesFailed keeps the full count.
const MaxFailures = 50

// MaxFailedImageStreams bounds status.failedImageStreams, so that the status of a restore of
// every imagestream of a large backup still fits in one object.
const MaxFailedImageStreams = 1000

// ImageFailure records why one image could not be copied.
type ImageFailure struct {
	// namespace is the imagestream's namespace.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// imageStream is the imagestream's name.
	// +optional
	ImageStream string `json:"imageStream,omitempty"`
	// dockerImageReference is the image that failed.
	DockerImageReference string `json:"dockerImageReference"`
	// reason is a CamelCase word for the kind of failure, such as ManifestUnknown or Unauthorized.
	Reason string `json:"reason"`
	// message says what went wrong.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Message string `json:"message,omitempty"`
}

// Condition types shared by both kinds.
const (
	// ConditionReady is True once the work completed, and False with the reason when it ended
	// otherwise or cannot start.
	ConditionReady = "Ready"
	// ConditionProgressing is True while images are being copied.
	ConditionProgressing = "Progressing"
)

// CommonStatus is what both kinds report, shaped like Velero's DataUpload status.
type CommonStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions say what the worker knows, most importantly Ready with the reason for any
	// failure.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// startTimestamp is when copying started.
	// +optional
	StartTimestamp *metav1.Time `json:"startTimestamp,omitempty"`

	// completionTimestamp is when the work reached a terminal phase.
	// +optional
	CompletionTimestamp *metav1.Time `json:"completionTimestamp,omitempty"`

	// progress counts images, blobs and bytes.
	// +optional
	Progress Progress `json:"progress,omitempty"`

	// failures lists images that could not be copied, at most MaxFailures of them;
	// progress.imagesFailed has the full count.
	// +kubebuilder:validation:MaxItems=50
	// +listType=atomic
	// +optional
	Failures []ImageFailure `json:"failures,omitempty"`

	// failedImageStreams counts the failed images of every imagestream that has any, including
	// those whose failures status.failures has no room for, for up to MaxFailedImageStreams
	// imagestreams; progress.imagesFailed beyond what they count says some are left out.
	// +kubebuilder:validation:MaxItems=1000
	// +listType=atomic
	// +optional
	FailedImageStreams []ImageStreamFailures `json:"failedImageStreams,omitempty"`
}

// ImageStreamFailures counts the images of one imagestream that could not be copied.
type ImageStreamFailures struct {
	// namespace is the imagestream's namespace.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// name is the imagestream's name.
	Name string `json:"name"`
	// imagesFailed is how many of its images failed.
	ImagesFailed int64 `json:"imagesFailed"`
}

// FailedImageStreamsLeftOut reports whether status.failedImageStreams had no room for every
// imagestream with failed images: one it does not list may then have failed too.
func (s *CommonStatus) FailedImageStreamsLeftOut() bool {
	if len(s.FailedImageStreams) < MaxFailedImageStreams {
		return false
	}
	var counted int64
	for _, f := range s.FailedImageStreams {
		counted += f.ImagesFailed
	}
	return counted < s.Progress.ImagesFailed
}

// ImagesFailedOf returns how many images of imagestream namespace/name failed.
func (s *CommonStatus) ImagesFailedOf(namespace, name string) int64 {
	for _, f := range s.FailedImageStreams {
		if f.Namespace == namespace && f.Name == name {
			return f.ImagesFailed
		}
	}
	return 0
}
