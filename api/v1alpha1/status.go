package v1alpha1

// The worker writes the status of both kinds through one set of functions; these accessors are
// what those functions need of each.

// GetCommonStatus returns the status both kinds share.
func (b *ImageStreamsBackup) GetCommonStatus() *CommonStatus { return &b.Status.CommonStatus }

// GetPhase returns the phase.
func (b *ImageStreamsBackup) GetPhase() string { return string(b.Status.Phase) }

// SetPhase sets the phase; the phases of both kinds share their names.
func (b *ImageStreamsBackup) SetPhase(p string) { b.Status.Phase = BackupPhase(p) }

// CancelRequested reports spec.cancel.
func (b *ImageStreamsBackup) CancelRequested() bool { return b.Spec.Cancel }

// GetCommonStatus returns the status both kinds share.
func (r *ImageStreamsRestore) GetCommonStatus() *CommonStatus { return &r.Status.CommonStatus }

// GetPhase returns the phase.
func (r *ImageStreamsRestore) GetPhase() string { return string(r.Status.Phase) }

// SetPhase sets the phase; the phases of both kinds share their names.
func (r *ImageStreamsRestore) SetPhase(p string) { r.Status.Phase = RestorePhase(p) }

// CancelRequested reports spec.cancel.
func (r *ImageStreamsRestore) CancelRequested() bool { return r.Spec.Cancel }
