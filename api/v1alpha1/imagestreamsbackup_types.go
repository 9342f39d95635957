package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImageStreamsBackupSpec says which images to back up, where to, and when to start.
//
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.deleteStoredImages) || !oldSelf.deleteStoredImages || (has(self.deleteStoredImages) && self.deleteStoredImages)",message="deleteStoredImages cannot be unset: the deletion may have begun"
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

	// parts names the ImageStreamsBackups that hold the rest of this backup. The Velero plugin
	// spreads a large Velero backup over several ImageStreamsBackups, each stored as a backup
	// of its own, and lists the others here in the first one, the head, named after the Velero
	// backup. The worker records them in the head's stored index, so that restoring the head
	// restores every part, and names a part the location lacks.
	// +listType=set
	// +kubebuilder:validation:MaxItems=1023
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	Parts []string `json:"parts,omitempty"`

	// deleteStoredImages asks the worker to delete what this backup stored: its index, then
	// every blob that no other backup in the location uses, and then this ImageStreamsBackup.
	// It is the only way stored images are removed. Deleting an ImageStreamsBackup, its
	// namespace or the Velero Backup it was made for keeps them, as Velero keeps a backup's
	// data when its Backup object is deleted. `velero backup delete` and Velero's expiry of a
	// backup's TTL set it on that backup's own ImageStreamsBackups. An index this
	// ImageStreamsBackup did not write is kept.
	// +optional
	DeleteStoredImages bool `json:"deleteStoredImages,omitempty"`
}

// Annotations on ImageStreamsBackups.
const (
	// AnnotationParts on an ImageStreamsBackup (the head) says over how many objects the Velero
	// plugin spreads the Velero backup's references, because one object could not hold them
	// all; spec.parts names those that hold imagestreams. On a head the plugin did not make
	// (no velero.io/backup-uid label) with no spec.parts, the parts are named <name>.1 ...
	// <name>.<parts-1>, as earlier versions named them.
	AnnotationParts = "oadp.openshift.io/parts"
	// AnnotationOriginalUID on an ImageStreamsBackup made only to delete a stored backup
	// (the Velero plugin makes one when `velero backup delete` runs on a cluster that lacks the
	// original, such as a new cluster after the old one was lost) is the uid of the original
	// one, which wrote the stored index.
	AnnotationOriginalUID = "oadp.openshift.io/original-uid"
	// AnnotationRecordedByPrefix followed by the id of a Velero plugin process is set by that
	// process's writes of a whole ImageStreamsBackup that carry imagestreams (its first, and
	// those that retry it), to the number of imagestreams the write carried. The operation the
	// plugin returns to Velero for the part covers the imagestreams queued before its first
	// write, which every such write carries; it is done once the annotation is there.
	AnnotationRecordedByPrefix = "oadp.openshift.io/recorded-by-"
)

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
// +kubebuilder:validation:Enum=New;WaitingForVeleroBackup;InProgress;Completed;PartiallyFailed;Failed;Canceled;Deleting
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
	// BackupPhaseDeleting: spec.deleteStoredImages is set and the worker is deleting what the
	// backup stored; the ImageStreamsBackup goes once that is done.
	BackupPhaseDeleting BackupPhase = "Deleting"
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
