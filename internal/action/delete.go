package action

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/label"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// DeleteActionName is the DeleteItemAction's name in Velero.
const DeleteActionName = "oadp.openshift.io/imagestreamsbackups-delete"

// DeleteAction asks the worker to delete a Velero backup's stored images when the backup is
// deleted (`velero backup delete`, or its TTL expiring). Velero calls it for every
// ImageStreamsBackup in the backup's tarball, and a backup of the Velero namespace holds those
// of every earlier backup: only the backup's own parts are acted on, the others are records.
// For each own part it sets spec.deleteStoredImages on the ImageStreamsBackup in the cluster,
// and where the cluster has none (a backup synced from object storage into a new cluster) it
// creates one that only stands in for the original, for the worker to delete what it stored.
type DeleteAction struct {
	log    logrus.FieldLogger
	client client.Client
}

// NewDeleteAction returns the action.
func NewDeleteAction(log logrus.FieldLogger, c client.Client) *DeleteAction {
	return &DeleteAction{log: log, client: c}
}

// AppliesTo selects the ImageStreamsBackups stored in a Velero backup.
func (a *DeleteAction) AppliesTo() (velero.ResourceSelector, error) {
	return velero.ResourceSelector{IncludedResources: []string{"imagestreamsbackups.oadp.openshift.io"}}, nil
}

// Execute asks the worker to delete the stored images of the ImageStreamsBackup, when it is
// one of the deleted Velero backup's own.
func (a *DeleteAction) Execute(input *velero.DeleteItemActionExecuteInput) error {
	stored := &oadpv1alpha1.ImageStreamsBackup{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(input.Item.UnstructuredContent(), stored); err != nil {
		return fmt.Errorf("reading ImageStreamsBackup: %w", err)
	}
	log := a.log.WithField("imagestreamsbackup", input.Backup.Namespace+"/"+stored.Name)
	if !partOf(stored, input.Backup) {
		log.Debug("Kept: a record of another backup")
		return nil
	}
	// Velero asks once: a request that does not reach the API server is never made again, and
	// the images would stay. An API server that is busy for a while is waited for.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	again := func(err error) bool {
		// A stand-in that exists already was created meanwhile: the next attempt finds it.
		return transientAPIError(err) || apierrors.IsAlreadyExists(err)
	}
	return retry.OnError(recordBackoff, again, func() error { return a.request(ctx, log, input.Backup, stored) })
}

// request asks for the deletion of stored's images through the ImageStreamsBackup of its name
// in the cluster, or through a stand-in where the cluster has none.
func (a *DeleteAction) request(ctx context.Context, log logrus.FieldLogger, backup *velerov1.Backup, stored *oadpv1alpha1.ImageStreamsBackup) error {
	key := client.ObjectKey{Namespace: backup.Namespace, Name: stored.Name}
	live := &oadpv1alpha1.ImageStreamsBackup{}
	err := a.client.Get(ctx, key, live)
	if apierrors.IsNotFound(err) {
		return a.createStandIn(ctx, log, key, backup, stored)
	}
	if err != nil {
		return fmt.Errorf("finding ImageStreamsBackup %s: %w", key, err)
	}
	if veleroBackupUID(live) != veleroBackupUID(stored) {
		// Made since by another Velero backup of the same name: not this one's to delete.
		log.Warn("Kept: the ImageStreamsBackup of this name in the cluster belongs to another backup; the deleted backup's stored images stay in the location")
		return nil
	}
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"deleteStoredImages":true}}`))
	if err := a.client.Patch(ctx, live, patch, client.FieldOwner("imagestreams-backup-plugin")); err != nil {
		return fmt.Errorf("asking for the deletion of ImageStreamsBackup %s: %w", key, err)
	}
	log.Info("Asked the worker to delete the stored images")
	return nil
}

// createStandIn creates an ImageStreamsBackup that stands in for stored, a part of the deleted
// backup that this cluster has none for, only to have the worker delete what stored wrote. It
// names the location as this cluster knows the backup's: Velero's sync sets the Backup's
// storage location to this cluster's own name for it, which the old cluster's may not be.
func (a *DeleteAction) createStandIn(ctx context.Context, log logrus.FieldLogger, key client.ObjectKey, backup *velerov1.Backup, stored *oadpv1alpha1.ImageStreamsBackup) error {
	standIn := &oadpv1alpha1.ImageStreamsBackup{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: stored.Labels,
			Annotations: map[string]string{oadpv1alpha1.AnnotationOriginalUID: string(stored.UID)}},
		Spec: oadpv1alpha1.ImageStreamsBackupSpec{BackupLocation: &oadpv1alpha1.BackupLocation{Name: backup.Spec.StorageLocation}, DeleteStoredImages: true},
	}
	if stored.UID == "" {
		return fmt.Errorf("ImageStreamsBackup %s in the backup has no uid, so its stored index cannot be told apart from another's; it is kept", key)
	}
	if err := a.client.Create(ctx, standIn); err != nil {
		return fmt.Errorf("creating ImageStreamsBackup %s to delete the stored images: %w", key, err)
	}
	log.Info("Asked the worker to delete the stored images, through a stand-in for the original ImageStreamsBackup")
	return nil
}

// partOf reports whether the ImageStreamsBackup stored in a Velero backup's tarball is one of
// the parts the plugin made for that backup: made for it, labeled with its name, and linked
// to a Velero backup's uid. A person's ImageStreamsBackup, and the parts of other backups, are
// not.
func partOf(isb *oadpv1alpha1.ImageStreamsBackup, backup *velerov1.Backup) bool {
	ref := isb.Spec.VeleroBackupReference
	return ref != nil && ref.Name == backup.Name && (ref.Namespace == "" || ref.Namespace == backup.Namespace) &&
		isb.Labels[LabelBackupName] == label.GetValidName(backup.Name) && veleroBackupUID(isb) != ""
}

// veleroBackupUID is the uid of the Velero backup the plugin made isb for: its label, or the
// owner reference earlier versions set.
func veleroBackupUID(isb *oadpv1alpha1.ImageStreamsBackup) string {
	if uid := isb.Labels[LabelBackupUID]; uid != "" {
		return uid
	}
	for _, o := range isb.OwnerReferences {
		if o.Kind == "Backup" && o.APIVersion == velerov1.SchemeGroupVersion.String() {
			return string(o.UID)
		}
	}
	return ""
}
