package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImageStreamsRestoreSpec says which stored backup to push back into the internal registry.
// There is no start flag: a restore starts as soon as it is created.
//
// +kubebuilder:validation:XValidation:rule="has(self.ImageStreamsBackupReference) || has(self.imageStreamsBackupReference)",message="ImageStreamsBackupReference is required: it names the backup to restore"
// +kubebuilder:validation:XValidation:rule="!has(self.ImageStreamsBackupReference) || !has(self.imageStreamsBackupReference) || self.ImageStreamsBackupReference.name == self.imageStreamsBackupReference.name",message="ImageStreamsBackupReference and imageStreamsBackupReference are one field spelled two ways and must name the same backup"
type ImageStreamsRestoreSpec struct {
	// ImageStreamsBackupReference names the backup to restore. The key is capitalised as in the
	// original design; imageStreamsBackupReference is accepted as the same field. Use
	// BackupName to read it.
	// +optional
	ImageStreamsBackupReference *ImageStreamsBackupReference `json:"ImageStreamsBackupReference,omitempty"`

	// imageStreamsBackupReference is ImageStreamsBackupReference in the usual Kubernetes
	// spelling. When both are set they must agree.
	// +optional
	ImageStreamsBackupReferenceAlias *ImageStreamsBackupReference `json:"imageStreamsBackupReference,omitempty"`

	// backupLocation is where the backup is stored.
	// +optional
	BackupLocation *BackupLocation `json:"backupLocation,omitempty"`

	// imageStreams selects the imagestreams to restore; every imagestream in the backup when
	// empty. Images are looked up by digest only: the registry host and path of a reference are
	// those of the cluster that was backed up.
	// +listType=map
	// +listMapKey=namespace
	// +listMapKey=name
	// +optional
	ImageStreams []ImageStream `json:"imageStreams,omitempty"`

	// namespaceMapping maps a backed-up namespace to the namespace to restore its imagestreams'
	// images into, as Velero's restore namespaceMapping does.
	// +optional
	NamespaceMapping map[string]string `json:"namespaceMapping,omitempty"`

	// cancel asks the worker to stop; the restore then ends in phase Canceled.
	// +optional
	Cancel bool `json:"cancel,omitempty"`
}

// ImageStreamsBackupReference names a stored image backup.
type ImageStreamsBackupReference struct {
	// name is the backup's name in the backup location: an ImageStreamsBackup's name, so a
	// DNS subdomain, which keeps it one path segment in the bucket.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="the backup a restore reads cannot change; create another ImageStreamsRestore"
	Name string `json:"name"`
}

// BackupName is the name of the backup to restore, under whichever spelling it was given.
func (s *ImageStreamsRestoreSpec) BackupName() string {
	switch {
	case s.ImageStreamsBackupReference != nil:
		return s.ImageStreamsBackupReference.Name
	case s.ImageStreamsBackupReferenceAlias != nil:
		return s.ImageStreamsBackupReferenceAlias.Name
	}
	return ""
}

// RestorePhase is where an ImageStreamsRestore is in its life.
// +kubebuilder:validation:Enum=New;InProgress;Completed;PartiallyFailed;Failed;Canceled
type RestorePhase string

// Phases of an ImageStreamsRestore.
const (
	RestorePhaseNew             RestorePhase = "New"
	RestorePhaseInProgress      RestorePhase = "InProgress"
	RestorePhaseCompleted       RestorePhase = "Completed"
	RestorePhasePartiallyFailed RestorePhase = "PartiallyFailed"
	RestorePhaseFailed          RestorePhase = "Failed"
	RestorePhaseCanceled        RestorePhase = "Canceled"
)

// ImageStreamsRestoreStatus reports what the worker did.
type ImageStreamsRestoreStatus struct {
	// phase is where the restore is in its life.
	// +optional
	Phase RestorePhase `json:"phase,omitempty"`

	CommonStatus `json:",inline"`
}

// ImageStreamsRestore pushes the images of a stored ImageStreamsBackup back into the internal
// registry, before Velero restores the imagestreams that point at them.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=isr,categories=velero
// +kubebuilder:printcolumn:name="Backup",type=string,JSONPath=`.spec.ImageStreamsBackupReference.name`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Images",type=integer,JSONPath=`.status.progress.imagesDone`,description="Images pushed"
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.progress.imagesTotal`,description="Images to push"
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.progress.imagesFailed`,description="Images that failed"
// +kubebuilder:printcolumn:name="Bytes",type=integer,JSONPath=`.status.progress.bytesUploaded`,description="Bytes pushed to the registry"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ImageStreamsRestore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ImageStreamsRestoreSpec   `json:"spec,omitempty"`
	Status ImageStreamsRestoreStatus `json:"status,omitempty"`
}

// ImageStreamsRestoreList is a list of ImageStreamsRestores.
//
// +kubebuilder:object:root=true
type ImageStreamsRestoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageStreamsRestore `json:"items"`
}
