package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImageStreamsBackupSpec says which images to back up, where to, and when to start.
type ImageStreamsBackupSpec struct {
	// startBackup starts the backup when true. Leave it false while references are still being
	// added, for example while a Velero backup is scanning imagestreams.
	// +optional
	StartBackup bool `json:"startBackup,omitempty"`

	// veleroBackupReference names the Velero Backup this image backup belongs to.
	// +optional
	VeleroBackupReference *VeleroBackupReference `json:"veleroBackupReference,omitempty"`

	// backupLocation is where image content is stored.
	// +optional
	BackupLocation *BackupLocation `json:"backupLocation,omitempty"`

	// imageStreams lists the images to back up, per imagestream. Several writers can add
	// imagestreams with server-side apply without overwriting each other.
	// +listType=map
	// +listMapKey=namespace
	// +listMapKey=name
	// +optional
	ImageStreams []ImageStream `json:"imageStreams,omitempty"`

	// cancel asks the worker to stop; the backup then ends in phase Canceled and writes no index.
	// +optional
	Cancel bool `json:"cancel,omitempty"`
}

// AnnotationParts on an ImageStreamsBackup says that the Velero plugin spread the Velero
// backup's references over this object and the ImageStreamsBackups named <name>.1 ...
// <name>.<parts-1>, because one object could not hold them all. Each part is backed up on its
// own; the worker records the count in the head's stored index so that restoring <name>
// restores every part.
const AnnotationParts = "oadp.openshift.io/parts"

// VeleroBackupReference names a Velero Backup.
type VeleroBackupReference struct {
	// name is the Velero Backup's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// namespace is the Velero Backup's namespace; the image backup's own namespace when empty.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`

	// startOnCompletion starts the image backup once the Velero Backup has collected every item
	// (its phase has moved past InProgress). The Velero Backup itself completes only after the
	// image backup, so waiting for its Completed phase would never end.
	// +optional
	StartOnCompletion bool `json:"startOnCompletion,omitempty"`
}

// BackupPhase is where an ImageStreamsBackup is in its life.
// +kubebuilder:validation:Enum=New;WaitingForVeleroBackup;InProgress;Completed;PartiallyFailed;Failed;Canceled
type BackupPhase string

// Phases of an ImageStreamsBackup.
const (
	BackupPhaseNew                    BackupPhase = "New"
	BackupPhaseWaitingForVeleroBackup BackupPhase = "WaitingForVeleroBackup"
	BackupPhaseInProgress             BackupPhase = "InProgress"
	BackupPhaseCompleted              BackupPhase = "Completed"
	BackupPhasePartiallyFailed        BackupPhase = "PartiallyFailed"
	BackupPhaseFailed                 BackupPhase = "Failed"
	BackupPhaseCanceled               BackupPhase = "Canceled"
)

// ImageStreamsBackupStatus reports what the worker did.
type ImageStreamsBackupStatus struct {
	// phase is where the backup is in its life.
	// +optional
	Phase BackupPhase `json:"phase,omitempty"`

	CommonStatus `json:",inline"`
}

// ImageStreamsBackup records the images behind a set of imagestreams and copies them, each blob
// once, into object storage.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=isb,categories=velero
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Images",type=integer,JSONPath=`.status.progress.imagesDone`,description="Images copied"
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.progress.imagesTotal`,description="Images to copy"
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.progress.imagesFailed`,description="Images that failed"
// +kubebuilder:printcolumn:name="Bytes",type=integer,JSONPath=`.status.progress.bytesUploaded`,description="Bytes written to object storage"
// +kubebuilder:printcolumn:name="Skipped",type=integer,JSONPath=`.status.progress.bytesSkipped`,description="Bytes already stored",priority=1
// +kubebuilder:printcolumn:name="Velero Backup",type=string,JSONPath=`.spec.veleroBackupReference.name`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ImageStreamsBackup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ImageStreamsBackupSpec   `json:"spec,omitempty"`
	Status ImageStreamsBackupStatus `json:"status,omitempty"`
}

// ImageStreamsBackupList is a list of ImageStreamsBackups.
//
// +kubebuilder:object:root=true
type ImageStreamsBackupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageStreamsBackup `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ImageStreamsBackup{}, &ImageStreamsBackupList{})
}
