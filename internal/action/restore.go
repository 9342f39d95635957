package action

import (
	"context"
	"fmt"
	"sync"
	"time"

	imagev1 "github.com/openshift/api/image/v1"
	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// RestoreActionName is the imagestream RestoreItemAction's name in Velero.
const RestoreActionName = "oadp.openshift.io/imagestreams-restore"

// LabelRestoreName marks the ImageStreamsRestores the plugin creates for a Velero restore.
const LabelRestoreName = "velero.io/restore-name"

// RestoreAction is a Velero RestoreItemAction (v2) on imagestreams. It points the imagestream's
// internal-registry references at this cluster's registry and the restore's namespaces, and
// brings its images back through an ImageStreamsRestore: one a person made for the backup, or
// else one the action creates for the Velero restore and extends with each imagestream. The
// returned operation completes when the images are in the registry.
type RestoreAction struct {
	recording
	restores *snapshots[*oadpv1alpha1.ImageStreamsRestore]

	mu      sync.Mutex
	persons map[types.UID]personsRestores // per Velero restore
	// existing are, per Velero restore and target namespace, the imagestreams that were
	// there before the restore, listed once.
	existing map[types.UID]map[string]map[string]bool
	// locations are, per Velero restore, the storage location of the restored backup.
	locations map[types.UID]string
}

// personsRestores are the ImageStreamsRestores people made, listed at a time: a restore of
// thousands of imagestreams lists them once every personsTTL, not once per imagestream.
type personsRestores struct {
	listed time.Time
	items  []oadpv1alpha1.ImageStreamsRestore
}

const personsTTL = 10 * time.Second

// NewRestoreAction returns the action; registryHost tells the internal registry's host. Its
// creator calls Flush before the process exits.
func NewRestoreAction(log logrus.FieldLogger, c client.Client, registryHost func(context.Context) (string, error)) *RestoreAction {
	a := &RestoreAction{recording: newRecording(log, c, registryHost, "imagestreams-restore-plugin"),
		restores: newSnapshots(c, restoreKind, func() *oadpv1alpha1.ImageStreamsRestore { return &oadpv1alpha1.ImageStreamsRestore{} }),
		persons:  map[types.UID]personsRestores{}, existing: map[types.UID]map[string]map[string]bool{}, locations: map[types.UID]string{}}
	a.recorder.spacing = restoreWriteSpacing
	return a
}

// restoreWriteSpacing is the least time between two writes of a Velero restore's
// ImageStreamsRestore: Velero restores imagestreams one after the other, many a second.
const restoreWriteSpacing = time.Second

// Name implements the RestoreItemAction interface.
func (a *RestoreAction) Name() string { return RestoreActionName }

// AppliesTo selects imagestreams only.
func (a *RestoreAction) AppliesTo() (velero.ResourceSelector, error) {
	return velero.ResourceSelector{IncludedResources: []string{"imagestreams.image.openshift.io"}}, nil
}

// Execute rewrites the imagestream and starts, or joins, the restore of its images.
func (a *RestoreAction) Execute(input *velero.RestoreItemActionExecuteInput) (*velero.RestoreItemActionExecuteOutput, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	orig := &imagev1.ImageStream{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(input.ItemFromBackup.UnstructuredContent(), orig); err != nil {
		return nil, fmt.Errorf("reading backed-up imagestream: %w", err)
	}
	is := &imagev1.ImageStream{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(input.Item.UnstructuredContent(), is); err != nil {
		return nil, fmt.Errorf("reading imagestream: %w", err)
	}
	host, err := a.registryHost(ctx)
	if err != nil {
		return nil, err
	}
	rw := rewriter{oldHost: hostOf(orig.Status.DockerImageRepository), newHost: host, mapping: input.Restore.Spec.NamespaceMapping}
	rewriteImageStream(is, rw)
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(is)
	if err != nil {
		return nil, err
	}
	out := velero.NewRestoreItemActionExecuteOutput(&unstructured.Unstructured{Object: raw})
	if len(internalImages(orig, rw.oldHost)) == 0 {
		return out, nil // nothing of this imagestream lives in the registry
	}
	// Velero maps the item's namespace after the actions ran.
	target := mapped(input.Restore.Spec.NamespaceMapping, orig.Namespace)
	if input.Restore.Spec.ExistingResourcePolicy != velerov1.PolicyTypeUpdate {
		exists, err := a.exists(ctx, input.Restore, target, orig.Name)
		if err != nil {
			return nil, err
		}
		if exists {
			// Velero leaves an existing imagestream as it is unless told to update it; its
			// images do the same, so that no tag moves back to an older image.
			a.log.WithField("imagestream", target+"/"+orig.Name).Info("Imagestream exists; like Velero, the restore leaves it and its images as they are (restore with --existing-resource-policy update to bring the backed-up tags back)")
			return out, nil
		}
	}
	isr, err := a.restoreFor(ctx, input.Restore, orig, target)
	if err != nil {
		return nil, err
	}
	a.log.WithFields(logrus.Fields{"imagestream": orig.Namespace + "/" + orig.Name, "imagestreamsrestore": isr}).Info("Images restored through ImageStreamsRestore")
	return out.WithOperationID(operationID(isr, orig.Namespace, orig.Name, time.Now())), nil
}

// rewriteImageStream points internal references at this cluster and its namespaces.
func rewriteImageStream(is *imagev1.ImageStream, rw rewriter) {
	for i := range is.Spec.Tags {
		from := is.Spec.Tags[i].From
		if from == nil {
			continue
		}
		switch from.Kind {
		case "DockerImage":
			from.Name = rw.reference(from.Name)
		case kindImageStreamTag, kindImageStreamImage:
			if from.Namespace != "" {
				from.Namespace = rw.namespace(from.Namespace)
			}
		}
	}
	if is.Status.DockerImageRepository != "" {
		is.Status.DockerImageRepository = rw.newHost + "/" + rw.namespace(is.Namespace) + "/" + is.Name
	}
	is.Status.PublicDockerImageRepository = ""
	for i := range is.Status.Tags {
		for j := range is.Status.Tags[i].Items {
			item := &is.Status.Tags[i].Items[j]
			item.DockerImageReference = rw.reference(item.DockerImageReference)
		}
	}
}

// restoreFor returns the ImageStreamsRestore that brings back orig's images into namespace
// target: one a person made for the backup that is still to run or running, reads the Velero
// backup's location and pushes into target too, else the Velero restore's own, created or
// extended with orig. A person's restore that has finished (last week, perhaps, into other
// namespaces) is not this one's.
func (a *RestoreAction) restoreFor(ctx context.Context, restore *velerov1.Restore, orig *imagev1.ImageStream, target string) (string, error) {
	persons, err := a.personsRestores(ctx, restore)
	if err != nil {
		return "", err
	}
	location, err := a.locationOf(ctx, restore)
	if err != nil {
		return "", err
	}
	for _, r := range persons {
		if r.Spec.BackupName() == restore.Spec.BackupName && covers(&r.Spec, orig) && !finished(&r) &&
			mapped(r.Spec.NamespaceMapping, orig.Namespace) == target && reads(r.Spec.BackupLocation, location) {
			return r.Name, nil
		}
	}
	a.recorder.add(restore.Namespace+"/"+restore.Name, func(entries []oadpv1alpha1.ImageStream) *unstructured.Unstructured {
		return restoreObject(restore, location, entries)
	}, oadpv1alpha1.ImageStream{Name: orig.Name, Namespace: orig.Namespace})
	return restore.Name, nil
}

// reads reports whether an ImageStreamsRestore's backupLocation is the Velero location name:
// that one named, or none named (the default location, where most backups are).
func reads(loc *oadpv1alpha1.BackupLocation, name string) bool {
	return loc == nil || loc.Velero == nil && (loc.Name == "" || loc.Name == name)
}

// finished reports whether an ImageStreamsRestore has ended for its current spec.
func finished(r *oadpv1alpha1.ImageStreamsRestore) bool {
	switch r.Status.Phase {
	case oadpv1alpha1.RestorePhaseCompleted, oadpv1alpha1.RestorePhasePartiallyFailed, oadpv1alpha1.RestorePhaseFailed, oadpv1alpha1.RestorePhaseCanceled:
		return r.Status.ObservedGeneration == r.Generation
	}
	return false
}

// mapped is where a namespace mapping sends namespace ns.
func mapped(mapping map[string]string, ns string) string {
	if to := mapping[ns]; to != "" {
		return to
	}
	return ns
}

// exists reports whether imagestream namespace/name was in the cluster before the restore:
// each target namespace is listed once per restore, before Velero creates anything in it.
func (a *RestoreAction) exists(ctx context.Context, restore *velerov1.Restore, namespace, name string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	byNamespace := a.existing[restore.UID]
	if byNamespace == nil {
		byNamespace = map[string]map[string]bool{}
		a.existing[restore.UID] = byNamespace
	}
	names, ok := byNamespace[namespace]
	if !ok {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(imagev1.GroupVersion.WithKind("ImageStreamList"))
		if err := a.client.List(ctx, list, client.InNamespace(namespace)); err != nil {
			return false, fmt.Errorf("listing the imagestreams of namespace %s: %w", namespace, err)
		}
		names = make(map[string]bool, len(list.Items))
		for _, is := range list.Items {
			names[is.Name] = true
		}
		byNamespace[namespace] = names
	}
	return names[name], nil
}

// locationOf is the storage location of the Velero backup restore restores, read once per
// restore: its images are stored there, which need not be the default location.
func (a *RestoreAction) locationOf(ctx context.Context, restore *velerov1.Restore) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if loc, ok := a.locations[restore.UID]; ok {
		return loc, nil
	}
	backup := &velerov1.Backup{}
	err := a.client.Get(ctx, client.ObjectKey{Namespace: restore.Namespace, Name: restore.Spec.BackupName}, backup)
	if apierrors.IsNotFound(err) {
		// Velero restores only from a Backup it has; without one, the default location.
		a.log.WithField("backup", restore.Spec.BackupName).Warn("Velero backup not found; its images are looked for in the default location")
		err = nil
	}
	if err != nil {
		return "", fmt.Errorf("reading Velero backup %s/%s: %w", restore.Namespace, restore.Spec.BackupName, err)
	}
	a.locations[restore.UID] = backup.Spec.StorageLocation
	return backup.Spec.StorageLocation, nil
}

func (a *RestoreAction) personsRestores(ctx context.Context, restore *velerov1.Restore) ([]oadpv1alpha1.ImageStreamsRestore, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.persons[restore.UID]; ok && time.Since(p.listed) < personsTTL {
		return p.items, nil
	}
	list := &oadpv1alpha1.ImageStreamsRestoreList{}
	if err := a.client.List(ctx, list, client.InNamespace(restore.Namespace)); err != nil {
		return nil, fmt.Errorf("listing ImageStreamsRestores: %w", err)
	}
	var items []oadpv1alpha1.ImageStreamsRestore
	for _, r := range list.Items {
		if r.Labels[LabelRestoreName] == "" {
			items = append(items, r)
		}
	}
	a.persons[restore.UID] = personsRestores{listed: time.Now(), items: items}
	return items, nil
}

// restoreObject is the Velero restore's own ImageStreamsRestore holding entries, for
// server-side apply: it reads the backup from location, the Velero backup's own.
func restoreObject(restore *velerov1.Restore, location string, entries []oadpv1alpha1.ImageStream) *unstructured.Unstructured {
	obj := &oadpv1alpha1.ImageStreamsRestore{
		TypeMeta: metav1.TypeMeta{APIVersion: oadpv1alpha1.GroupVersion.String(), Kind: "ImageStreamsRestore"},
		ObjectMeta: metav1.ObjectMeta{Namespace: restore.Namespace, Name: restore.Name,
			Labels: map[string]string{LabelRestoreName: restore.Name},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: velerov1.SchemeGroupVersion.String(), Kind: "Restore", Name: restore.Name, UID: restore.UID,
			}},
		},
		Spec: oadpv1alpha1.ImageStreamsRestoreSpec{
			ImageStreamsBackupReference: &oadpv1alpha1.ImageStreamsBackupReference{Name: restore.Spec.BackupName},
			NamespaceMapping:            restore.Spec.NamespaceMapping,
		},
	}
	if location != "" {
		obj.Spec.BackupLocation = &oadpv1alpha1.BackupLocation{Name: location}
	}
	obj.Spec.ImageStreams = entries
	return forApply(obj)
}

// lists reports whether a restore names imagestream ns/name.
func lists(spec *oadpv1alpha1.ImageStreamsRestoreSpec, ns, name string) bool {
	for i := range spec.ImageStreams {
		if spec.ImageStreams[i].Name == name && spec.ImageStreams[i].NamespaceOrDefault() == ns {
			return true
		}
	}
	return false
}

// covers reports whether a restore's selection includes the imagestream: all of the backup
// when it lists none.
func covers(spec *oadpv1alpha1.ImageStreamsRestoreSpec, is *imagev1.ImageStream) bool {
	if len(spec.ImageStreams) == 0 {
		return true
	}
	for i := range spec.ImageStreams {
		if spec.ImageStreams[i].Name == is.Name && spec.ImageStreams[i].NamespaceOrDefault() == is.Namespace {
			return true
		}
	}
	return false
}

// Progress reports the imagestream's images from its ImageStreamsRestore; it only reads.
func (a *RestoreAction) Progress(operationID string, restore *velerov1.Restore) (velero.OperationProgress, error) {
	op, err := parseOperationID(operationID)
	if err != nil {
		return velero.OperationProgress{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return a.restores.progress(ctx, restore.Namespace, op, func(isr *oadpv1alpha1.ImageStreamsRestore, op operation, now time.Time) velero.OperationProgress {
		return restoreProgressOf(isr, op, restore.Name, now)
	})
}

// restoreProgressOf maps an ImageStreamsRestore's status onto the operation of one imagestream
// of the Velero restore restoreName. The restore counts images of the whole object, not per
// imagestream, so the operation counts those.
func restoreProgressOf(isr *oadpv1alpha1.ImageStreamsRestore, op operation, restoreName string, now time.Time) velero.OperationProgress {
	if isr.Labels[LabelRestoreName] == restoreName && !lists(&isr.Spec, op.namespace, op.name) {
		return op.unwritten(now, restoreKind, isr.Namespace, true)
	}
	st := isr.Status
	p, _ := restoreReport(isr).progress(op, fmt.Sprintf(", %d bytes sent", st.Progress.BytesUploaded), now)
	p.NTotal, p.NCompleted = st.Progress.ImagesTotal, st.Progress.ImagesDone
	return p
}

// restoreReport is what Progress reads of an ImageStreamsRestore's status. A restore extended
// after it finished runs again, so only an end of the current spec counts.
func restoreReport(isr *oadpv1alpha1.ImageStreamsRestore) statusReport {
	st := &isr.Status
	r := statusReport{kind: restoreKind.name, name: isr.Name, phase: string(st.Phase), status: &st.CommonStatus}
	if st.ObservedGeneration != isr.Generation {
		return r
	}
	switch st.Phase {
	case oadpv1alpha1.RestorePhaseCompleted, oadpv1alpha1.RestorePhasePartiallyFailed:
		r.end = ranThrough
	case oadpv1alpha1.RestorePhaseFailed, oadpv1alpha1.RestorePhaseCanceled:
		r.end = stopped
	}
	return r
}

// Cancel stops the Velero restore's own ImageStreamsRestore; one a person made is theirs to stop.
func (a *RestoreAction) Cancel(operationID string, restore *velerov1.Restore) error {
	return withOperation(operationID, func(ctx context.Context, op operation) error {
		isr := &oadpv1alpha1.ImageStreamsRestore{}
		if err := a.client.Get(ctx, client.ObjectKey{Namespace: restore.Namespace, Name: op.object}, isr); err != nil {
			return client.IgnoreNotFound(err)
		}
		if isr.Labels[LabelRestoreName] != restore.Name {
			return nil
		}
		return a.client.Patch(ctx, isr, cancelRun)
	})
}

// AreAdditionalItemsReady implements the RestoreItemAction interface; the action returns no
// additional items.
func (a *RestoreAction) AreAdditionalItemsReady([]velero.ResourceIdentifier, *velerov1.Restore) (bool, error) {
	return true, nil
}
