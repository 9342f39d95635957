package v1alpha1

// Reasons on the Ready and Progressing conditions of both kinds. The worker sets them and the
// Velero plugin reads them; they are part of the API.
const (
	ReasonNotStarted             = "NotStarted"
	ReasonWaitingForVeleroBackup = "WaitingForVeleroBackup"
	ReasonVeleroBackupNotFound   = "VeleroBackupNotFound"
	ReasonVeleroBackupFailed     = "VeleroBackupFailed"
	ReasonCopying                = "Copying"
	ReasonCompleted              = "Completed"
	ReasonPartiallyFailed        = "PartiallyFailed"
	ReasonFailed                 = "Failed"
	ReasonCanceled               = "Canceled"
	ReasonBackupNotFound         = "BackupNotFound"
	// ReasonBackupPartMissing: a split backup lists a part the location does not hold.
	ReasonBackupPartMissing = "BackupPartMissing"
	// ReasonInvalidBackup: a stored backup's index cannot be read as it is.
	ReasonInvalidBackup = "InvalidBackup"
	// ReasonBackupExists: the location holds a backup of this name that another
	// ImageStreamsBackup wrote; it is not overwritten.
	ReasonBackupExists          = "BackupExists"
	ReasonStoreUnavailable      = "StoreUnavailable"
	ReasonStoreFull             = "StoreFull"
	ReasonStoreDenied           = "StoreDenied"
	ReasonRegistryNotConfigured = "RegistryNotConfigured"
	// ReasonDeleting: spec.deleteStoredImages is being carried out.
	ReasonDeleting = "Deleting"

	// Reasons about the backup location.
	ReasonLocationNotFound    = "BackupLocationNotFound"
	ReasonCredentialsNotFound = "CredentialsNotFound"
	ReasonInvalidLocation     = "InvalidBackupLocation"
	// ReasonForbidden: the worker may not read what the location needs.
	ReasonForbidden = "Forbidden"
	// ReasonCredentialsNotAllowed: inline credentials would go to an endpoint no
	// BackupStorageLocation uses them with.
	ReasonCredentialsNotAllowed = "CredentialsNotAllowed"
)

// Reasons for one image's failure, in status.failures.
const (
	ReasonImageNotFound       = "ImageNotFound"
	ReasonUnauthorized        = "Unauthorized"
	ReasonDigestMismatch      = "DigestMismatch"
	ReasonRegistryUnavailable = "RegistryUnavailable"
	ReasonInvalidReference    = "InvalidReference"
	ReasonCopyFailed          = "CopyFailed"
	// ReasonExternalImage: the image is not in the internal registry. Only the cluster's own
	// images are backed up, and the worker's credentials go to no other registry.
	ReasonExternalImage = "ExternalImage"
)

// LegacyFinalizer is the finalizer earlier versions put on ImageStreamsBackups to delete their
// stored images with them. Deleting an ImageStreamsBackup keeps its images now (see
// spec.deleteStoredImages), and a finalizer would hold up the deletion of its namespace while no
// worker runs: the worker removes it wherever it finds it.
const LegacyFinalizer = "oadp.openshift.io/imagestreams-backup"

// MaxParts bounds the number of parts of one Velero backup (AnnotationParts), both as the
// plugin splits a backup and as the worker reads a stored index, which the bucket could
// otherwise make declare any number.
const MaxParts = 1024
