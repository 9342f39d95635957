package action

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	imagev1 "github.com/openshift/api/image/v1"
	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/label"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// BackupActionName is the BackupItemAction's name in Velero.
const BackupActionName = "oadp.openshift.io/imagestreams-backup"

var imageStreamsBackupsResource = schema.GroupResource{Group: oadpv1alpha1.GroupVersion.Group, Resource: "imagestreamsbackups"}

// BackupAction is a Velero BackupItemAction (v2) on imagestreams: it records each
// imagestream's internal images in the ImageStreamsBackup of the Velero backup and returns an
// operation that completes when the worker has stored them. It returns the item unchanged.
type BackupAction struct {
	log          logrus.FieldLogger
	client       client.Client
	recorder     *recorder
	parts        *snapshots[*oadpv1alpha1.ImageStreamsBackup]
	registryHost func(context.Context) (string, error)

	mu      sync.Mutex
	backups map[types.UID]*backupParts // item-block workers share the process
}

// backupParts is what the action knows of one Velero backup's parts.
type backupParts struct {
	count int
	// named are the parts already returned as post-operation items: those that hold
	// imagestreams.
	named map[string]bool
}

// NewBackupAction returns the action; registryHost tells the internal registry's host.
func NewBackupAction(log logrus.FieldLogger, c client.Client, registryHost func(context.Context) (string, error)) *BackupAction {
	a := &BackupAction{log: log, client: c, recorder: newRecorder(c, log, "imagestreams-backup-plugin"), registryHost: registryHost,
		parts:   newSnapshots(c, func() *oadpv1alpha1.ImageStreamsBackup { return &oadpv1alpha1.ImageStreamsBackup{} }),
		backups: map[types.UID]*backupParts{}}
	a.recorder.holdUntilFlush = true // see Progress
	// Progress, right after the flush, answers from what the writes returned instead of
	// reading every part again.
	a.recorder.written = func(u *unstructured.Unstructured) {
		isb := &oadpv1alpha1.ImageStreamsBackup{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, isb); err == nil {
			a.parts.put(isb)
		}
	}
	return a
}

// Name implements the BackupItemAction interface.
func (a *BackupAction) Name() string { return BackupActionName }

// AppliesTo selects imagestreams only: an action on every resource is called over gRPC for
// every item and slows every backup.
func (a *BackupAction) AppliesTo() (velero.ResourceSelector, error) {
	return velero.ResourceSelector{IncludedResources: []string{"imagestreams.image.openshift.io"}}, nil
}

// Execute records the imagestream's internal images.
func (a *BackupAction) Execute(item runtime.Unstructured, backup *velerov1.Backup) (runtime.Unstructured, []velero.ResourceIdentifier, string, []velero.ResourceIdentifier, error) {
	// Velero runs no new operations while finalizing.
	if p := backup.Status.Phase; p == velerov1.BackupPhaseFinalizing || p == velerov1.BackupPhaseFinalizingPartiallyFailed {
		return item, nil, "", nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	is := &imagev1.ImageStream{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(item.UnstructuredContent(), is); err != nil {
		return nil, nil, "", nil, fmt.Errorf("reading imagestream: %w", err)
	}
	log := a.log.WithFields(logrus.Fields{"imagestream": is.Namespace + "/" + is.Name, "backup": backup.Namespace + "/" + backup.Name})
	host, err := a.registryHost(ctx)
	if err != nil {
		return nil, nil, "", nil, err
	}
	refs := internalImages(is, host)
	if len(refs) == 0 {
		log.Debug("No internal images")
		return item, nil, "", nil, nil
	}
	parts, err := a.partCount(ctx, backup)
	if err != nil {
		return nil, nil, "", nil, err
	}
	part := partName(backup, parts, is.Namespace, is.Name)
	a.recorder.add(backup.Namespace+"/"+part, a.builder(backup, part), oadpv1alpha1.ImageStream{Name: is.Name, Namespace: is.Namespace, DockerImageReferences: refs})
	// Velero logs every item itself, and the recorder logs each write; a line per imagestream
	// from the plugin would go through Velero's log pipe a thousand times a backup.
	log.WithFields(logrus.Fields{"images": len(refs), "imagestreamsbackup": part}).Debug("Queued internal images")
	// Velero backs up every operation's post-operation items again when the operations end,
	// one by one, reading each from the API server: the part is named once, with its first
	// imagestream, not two thousand times.
	var postOperation []velero.ResourceIdentifier
	if a.firstOf(backup.UID, part) {
		postOperation = append(postOperation, velero.ResourceIdentifier{GroupResource: imageStreamsBackupsResource, Namespace: backup.Namespace, Name: part})
		if part != backup.Name {
			// The head lists the parts: it is written with them, and backed up again with
			// the parts, even when it holds no imagestream of its own; `velero backup
			// delete` finds it in the backup that way.
			a.recorder.touch(backup.Namespace+"/"+backup.Name, a.builder(backup, backup.Name))
			if a.firstOf(backup.UID, backup.Name) {
				postOperation = append(postOperation, velero.ResourceIdentifier{GroupResource: imageStreamsBackupsResource, Namespace: backup.Namespace, Name: backup.Name})
			}
		}
	}
	return item, nil, operationID(part, is.Namespace, is.Name, time.Now()), postOperation, nil
}

// builder makes part of backup, with entries, for the recorder; the head names the parts
// that hold imagestreams so far.
func (a *BackupAction) builder(backup *velerov1.Backup, part string) func([]any) *unstructured.Unstructured {
	return func(entries []any) *unstructured.Unstructured {
		var parts []string
		if part == backup.Name {
			parts = a.partNames(backup)
		}
		return partObject(backup, part, parts, entries)
	}
}

// firstOf reports whether this is the first imagestream of part that this process sees.
func (a *BackupAction) firstOf(backup types.UID, part string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.backups[backup]
	if b.named[part] {
		return false
	}
	b.named[part] = true
	return true
}

// partNames lists the parts of backup other than the head that hold imagestreams, in order.
func (a *BackupAction) partNames(backup *velerov1.Backup) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var names []string
	for name := range a.backups[backup.UID].named {
		if name != backup.Name {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Flush writes every imagestream Execute has queued.
func (a *BackupAction) Flush(ctx context.Context) error { return a.recorder.flush(ctx) }

// partCount creates the head ImageStreamsBackup on first use, fixing the number of parts, or
// reads it from the head another writer created. A head of the name that belongs to no part
// of this Velero backup (another one's, of the same name made earlier, or a person's) is
// refused: the backup's images would otherwise land in another backup.
func (a *BackupAction) partCount(ctx context.Context, backup *velerov1.Backup) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if b, ok := a.backups[backup.UID]; ok {
		return b.count, nil
	}
	total := 0
	if backup.Status.Progress != nil {
		total = backup.Status.Progress.TotalItems
	}
	head := newPart(backup, backup.Name)
	head.Annotations = map[string]string{AnnotationParts: strconv.Itoa(partsFor(total))}
	err := a.client.Create(ctx, head)
	if apierrors.IsAlreadyExists(err) {
		if err = a.client.Get(ctx, client.ObjectKeyFromObject(head), head); err == nil {
			err = ofBackup(head, backup)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("creating ImageStreamsBackup %s/%s: %w", head.Namespace, head.Name, err)
	}
	a.recorder.exists(head.Namespace + "/" + head.Name)
	n, err := strconv.Atoi(head.Annotations[AnnotationParts])
	if err != nil || n < 1 {
		n = 1 // a head made by a person records everything itself
	}
	a.backups[backup.UID] = &backupParts{count: n, named: map[string]bool{}}
	return n, nil
}

// ofBackup returns nil when the ImageStreamsBackup isb was made for the Velero backup, and an
// error that says whose it is otherwise.
func ofBackup(isb *oadpv1alpha1.ImageStreamsBackup, backup *velerov1.Backup) error {
	switch uid := veleroBackupUID(isb); {
	case isb.Spec.DeleteStoredImages:
		return fmt.Errorf("it is being deleted with its stored images; back up under another name, or once it is gone")
	case uid == string(backup.UID):
		return nil
	case uid != "":
		return fmt.Errorf("it belongs to an earlier Velero backup of the same name (uid %s), whose images it keeps; back up under another name", uid)
	}
	return fmt.Errorf("it was not made for this Velero backup, and its images are kept; back up under another name")
}

// newPart is an ImageStreamsBackup of the Velero backup: not started, started by the worker
// once Velero has collected every item, stored where the Velero backup is. It is linked to the
// Velero backup by labels, not owned by it: Velero keeps a backup's data when only its Backup
// object is deleted, and brings the object back from object storage, so the images stay too.
func newPart(backup *velerov1.Backup, name string) *oadpv1alpha1.ImageStreamsBackup {
	return &oadpv1alpha1.ImageStreamsBackup{
		TypeMeta: metav1.TypeMeta{APIVersion: oadpv1alpha1.GroupVersion.String(), Kind: "ImageStreamsBackup"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: backup.Namespace, Name: name,
			Labels: map[string]string{LabelBackupName: label.GetValidName(backup.Name), LabelBackupUID: string(backup.UID)},
		},
		Spec: oadpv1alpha1.ImageStreamsBackupSpec{
			VeleroBackupReference: &oadpv1alpha1.VeleroBackupReference{Name: backup.Name, Namespace: backup.Namespace, StartOnCompletion: true},
			BackupLocation:        &oadpv1alpha1.BackupLocation{Name: backup.Spec.StorageLocation},
		},
	}
}

// partObject is a part holding entries, for server-side apply; a head with parts lists them.
// imageStreams is a map keyed by namespace and name, so concurrent writers (Velero's item-block
// workers, several backups) never overwrite each other.
func partObject(backup *velerov1.Backup, part string, parts []string, entries []any) *unstructured.Unstructured {
	obj := newPart(backup, part)
	obj.Spec.Parts = parts
	for _, e := range entries {
		obj.Spec.ImageStreams = append(obj.Spec.ImageStreams, e.(oadpv1alpha1.ImageStream))
	}
	u := forApply(obj)
	// startBackup: false is part of what every writer applies, so it stays false until Velero
	// has collected every item; omitempty would drop it.
	_ = unstructured.SetNestedField(u.Object, false, "spec", "startBackup")
	return u
}

const imagesNotBackedUp = "its images are not backed up"

// Progress reports the operation of one imagestream from its ImageStreamsBackup's status.
func (a *BackupAction) Progress(operationID string, backup *velerov1.Backup) (velero.OperationProgress, error) {
	op, err := parseOperationID(operationID)
	if err != nil {
		return velero.OperationProgress{}, err
	}
	// Execute only queues. Velero asks for the progress of every operation as soon as it has
	// collected every item, in the same plugin process, and the worker starts no sooner: what
	// is queued is written now, each part whole and once, while Velero waits. Writing during
	// item collection made the API server rewrite growing parts hundreds of times: item
	// collection of 1,000 imagestreams took 11 s instead of 5.
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), time.Minute)
	if err := a.recorder.flushHeld(flushCtx); err != nil {
		// The operations of what is not written fail by name after recordDeadline.
		a.log.WithError(err).Warn("Not every imagestream is written into its ImageStreamsBackup yet")
	}
	cancelFlush()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	isb, err := a.parts.get(ctx, client.ObjectKey{Namespace: backup.Namespace, Name: op.object})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return op.unwritten(time.Now(), "ImageStreamsBackup", backup.Namespace, false, imagesNotBackedUp), nil
		}
		return velero.OperationProgress{}, err
	}
	p := progressOf(isb, op, time.Now())
	if !p.Completed || p.Err != "" || op.object == backup.Name {
		return p, nil
	}
	head, err := a.parts.get(ctx, client.ObjectKey{Namespace: backup.Namespace, Name: backup.Name})
	if apierrors.IsNotFound(err) {
		p.Err = fmt.Sprintf("ImageStreamsBackup %s, the head of the backup, no longer exists; restoring the backup needs it", backup.Name)
		return p, nil
	}
	if err != nil {
		return velero.OperationProgress{}, err
	}
	return throughHead(p, head, op, time.Now()), nil
}

// throughHead is the completed progress p of an imagestream in a part other than the head, as
// the head decides it: a part's images are restored through the head's stored index, so the
// operation is done once the head has stored a spec that lists the part.
func throughHead(p velero.OperationProgress, head *oadpv1alpha1.ImageStreamsBackup, op operation, now time.Time) velero.OperationProgress {
	st := head.Status
	current := st.ObservedGeneration == head.Generation
	switch {
	case !slices.Contains(head.Spec.Parts, op.object) && op.waitingToBeRecorded(now):
		p.Completed = false
		p.Description += fmt.Sprintf("; waiting for ImageStreamsBackup %s, the head of the backup, to list %s", head.Name, op.object)
	case !slices.Contains(head.Spec.Parts, op.object):
		p.Err = fmt.Sprintf("ImageStreamsBackup %s, the head of the backup, does not list %s (the plugin could not write it: see the velero log), "+
			"so restoring the backup would miss these images", head.Name, op.object)
	case current && (st.Phase == oadpv1alpha1.BackupPhaseFailed || st.Phase == oadpv1alpha1.BackupPhaseCanceled):
		p.Err = fmt.Sprintf("ImageStreamsBackup %s, the head of the backup, %s; restoring the backup needs its index", head.Name, st.Phase)
		if c := meta.FindStatusCondition(st.Conditions, oadpv1alpha1.ConditionReady); c != nil {
			p.Err += ": " + c.Message
		}
	case !current || st.Phase != oadpv1alpha1.BackupPhaseCompleted && st.Phase != oadpv1alpha1.BackupPhasePartiallyFailed:
		p.Completed = false
		p.Description += fmt.Sprintf("; waiting for ImageStreamsBackup %s, the head of the backup, to store its index", head.Name)
	}
	return p
}

// progressOf maps an ImageStreamsBackup's status onto the operation of one imagestream.
func progressOf(isb *oadpv1alpha1.ImageStreamsBackup, op operation, now time.Time) velero.OperationProgress {
	st := isb.Status
	ns, name := op.namespace, op.name
	var total int64
	found := false
	for _, is := range isb.Spec.ImageStreams {
		if is.NamespaceOrDefault() == ns && is.Name == name {
			total, found = int64(len(is.DockerImageReferences)), true
		}
	}
	if !found {
		return op.unwritten(now, "ImageStreamsBackup", isb.Namespace, true, imagesNotBackedUp)
	}
	var failed []string
	for _, f := range st.Failures {
		if f.Namespace == ns && f.ImageStream == name {
			failed = append(failed, fmt.Sprintf("%s: %s", f.DockerImageReference, f.Reason))
		}
	}
	p := velero.OperationProgress{
		NTotal: total, OperationUnits: imageUnits,
		Description: fmt.Sprintf("ImageStreamsBackup %s %s: %d of %d images, %d bytes uploaded, %d bytes already stored",
			isb.Name, orDefault(string(st.Phase), "New"), st.Progress.ImagesDone, st.Progress.ImagesTotal, st.Progress.BytesUploaded, st.Progress.BytesSkipped),
		Updated: time.Now(),
	}
	if st.StartTimestamp != nil {
		p.Started = st.StartTimestamp.Time
	}
	if st.CompletionTimestamp != nil {
		p.Updated = st.CompletionTimestamp.Time
	}
	switch st.Phase {
	case oadpv1alpha1.BackupPhaseCompleted, oadpv1alpha1.BackupPhasePartiallyFailed:
		// An imagestream written after the worker started is copied by another run; only a
		// finish of the current spec counts.
		if st.ObservedGeneration != isb.Generation {
			break
		}
		p.Completed = true
		p.NCompleted = total - int64(len(failed))
		if len(failed) > 0 {
			p.Err = fmt.Sprintf("%d images failed: %s", len(failed), strings.Join(failed, "; "))
		}
	case oadpv1alpha1.BackupPhaseFailed, oadpv1alpha1.BackupPhaseCanceled:
		p.Completed = true
		p.Err = fmt.Sprintf("ImageStreamsBackup %s %s", isb.Name, st.Phase)
		if c := meta.FindStatusCondition(st.Conditions, oadpv1alpha1.ConditionReady); c != nil {
			p.Err += ": " + c.Message
		}
	}
	return p
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Cancel asks the worker to stop the part that holds the imagestream.
func (a *BackupAction) Cancel(operationID string, backup *velerov1.Backup) error {
	op, err := parseOperationID(operationID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	isb := &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: backup.Namespace, Name: op.object}}
	err = a.client.Patch(ctx, isb, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"cancel":true}}`)))
	return client.IgnoreNotFound(err)
}
