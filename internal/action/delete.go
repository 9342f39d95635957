package action

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// DeleteActionName is the DeleteItemAction's name in Velero.
const DeleteActionName = "oadp.openshift.io/imagestreamsbackups-delete"

// workerFinalizer is the worker's finalizer: an ImageStreamsBackup carrying it is only gone
// once the worker has removed its index and collected unused blobs.
const workerFinalizer = "oadp.openshift.io/imagestreams-backup"

// DeleteAction removes a Velero backup's images when the backup is deleted: for each
// ImageStreamsBackup in the Velero backup it deletes the one in the cluster, and where the
// cluster has none (a backup synced from object storage into another cluster) it creates an
// inert copy, never started, only for the worker to delete its content.
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

// Execute deletes the ImageStreamsBackup, through the worker.
func (a *DeleteAction) Execute(input *velero.DeleteItemActionExecuteInput) error {
	stored := &oadpv1alpha1.ImageStreamsBackup{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(input.Item.UnstructuredContent(), stored); err != nil {
		return fmt.Errorf("reading ImageStreamsBackup: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := client.ObjectKey{Namespace: input.Backup.Namespace, Name: stored.Name}
	live := &oadpv1alpha1.ImageStreamsBackup{}
	err := a.client.Get(ctx, key, live)
	if apierrors.IsNotFound(err) {
		live = &oadpv1alpha1.ImageStreamsBackup{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{LabelBackupName: input.Backup.Name},
				Finalizers: []string{workerFinalizer}},
			Spec: oadpv1alpha1.ImageStreamsBackupSpec{BackupLocation: stored.Spec.BackupLocation},
		}
		err = a.client.Create(ctx, live)
	}
	if err != nil {
		return fmt.Errorf("finding ImageStreamsBackup %s: %w", key, err)
	}
	if err := a.client.Delete(ctx, live); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting ImageStreamsBackup %s: %w", key, err)
	}
	a.log.WithField("imagestreamsbackup", key.String()).Info("Deleted; the worker removes its stored images")
	return nil
}
