package action

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	imagev1 "github.com/openshift/api/image/v1"
	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/label"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
	recording
	parts *snapshots[*oadpv1alpha1.ImageStreamsBackup]

	mu      sync.Mutex
	backups map[types.UID]*backupParts // item-block workers share the process
}

// backupParts is what the action knows of one Velero backup's parts.
type backupParts struct {
	count int
	// listed are the parts other than the head that hold imagestreams, which the head lists.
	listed map[string]bool
	// unattached are the listed parts not yet returned as post-operation items, and
	// headAttached says whether the head was.
	unattached   []string
	headAttached bool
	// opened are the parts whose shared operation an Execute has taken, and returned those
	// whose Execute has returned it (see claim).
	opened, returned map[string]bool
	// filling is the part Execute fills now (1 ... count-1, then count once they are all
	// full), and held how many imagestreams it has; inHead is how many the head has.
	filling, held, inHead int
}

// place returns the part that takes imagestream namespace/name of the backup, and whether it
// fills it. Parts other than the head take itemsPerPart imagestreams each, one part after the
// other in the order Velero hands out imagestreams, so that each can be written as soon as it
// is full, while Velero still collects items, instead of all of them after. The head, written
// once item collection has ended, takes what they leave, which is less than a part unless the
// backup has more items than MaxParts parts take: then the imagestreams left over are spread
// over every part by the hash of their namespace and name, as evenly as the parts allow, and a
// part already written is written again with them.
func (b *backupParts) place(backup *velerov1.Backup, namespace, name string) (part string, full bool) {
	if b.filling >= b.count {
		if b.inHead < itemsPerPart || b.count == 1 {
			b.inHead++
			return backup.Name, false
		}
		return spreadPart(backup, b.count, namespace, name), false
	}
	part = partK(backup, b.filling)
	if b.held++; b.held < itemsPerPart {
		return part, false
	}
	b.filling, b.held = b.filling+1, 0
	return part, true
}

// NewBackupAction returns the action; registryHost tells the internal registry's host. Its
// creator calls Flush before the process exits.
func NewBackupAction(log logrus.FieldLogger, c client.Client, registryHost func(context.Context) (string, error)) *BackupAction {
	a := &BackupAction{recording: newRecording(log, c, registryHost, "imagestreams-backup-plugin"),
		parts:   newSnapshots(c, backupKind, func() *oadpv1alpha1.ImageStreamsBackup { return &oadpv1alpha1.ImageStreamsBackup{} }),
		backups: map[types.UID]*backupParts{}}
	a.recorder.holdUntilFlush = true // written when item collection has ended: see itemCollectionEnded
	// Progress, right after those writes, answers from what they returned instead of reading
	// every part again.
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
	// Velero drops an item that carries this annotation after its actions ran, with the
	// operation they returned: its images are not recorded, as the imagestream is not stored.
	if _, skip := is.Annotations[velerov1.SkipFromBackupAnnotation]; skip {
		return item, nil, "", nil, nil
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
	part, firstWrite, err := a.record(ctx, backup, oadpv1alpha1.ImageStream{Name: is.Name, Namespace: is.Namespace, DockerImageReferences: refs})
	if err != nil {
		return nil, nil, "", nil, err
	}
	// Velero logs every item itself, and the recorder logs each write; a line per imagestream
	// from the plugin would go through Velero's log pipe once per item besides.
	log.WithFields(logrus.Fields{"images": len(refs), "imagestreamsbackup": part}).Debug("Queued internal images")
	op, post, shared := a.claim(backup, part, is, firstWrite)
	if shared {
		a.returnedShared(backup.UID, part)
	}
	return item, nil, op, post, nil
}

// claim is the operation Execute returns for imagestream is, recorded in part, and the
// post-operation items that go with it.
//
// The operation:
//   - the imagestreams in the first write of the part by this process share one operation:
//     the first of them returns it, and those whose Execute starts after that one returned
//     return none. Velero asks every operation's progress over gRPC, one after the other,
//     before the backup leaves InProgress and then every few seconds, so a thousand
//     imagestreams made a thousand calls where their parts make a few dozen. The operation is
//     done when the write is (the part carries AnnotationRecordedByPrefix with this process's
//     id) and the worker has stored the part; it fails with the part's failed images.
//   - one that joins a part after a write of it started, or before the Execute that took the
//     shared operation has returned (several item-block workers), has an operation of its
//     own, done when the imagestream is in the part. Velero must keep some operation for every
//     imagestream it stores; a plugin that dies after that Execute returned and before Velero
//     has its answer fails that item, and with it the backup, loudly.
//
// Velero backs up every operation's post-operation items again when the operations end, one
// by one, reading each from the API server, and keeps post-operation items only with an
// operation: each part, and the head, which lists the parts and which `velero backup delete`
// finds in the backup that way, goes with the first operation this process returns for the
// backup after the part appears. A part found already written by an earlier process of the
// plugin goes with this one's first operation too.
func (a *BackupAction) claim(backup *velerov1.Backup, part string, is *imagev1.ImageStream, firstWrite bool) (op string, post []velero.ResourceIdentifier, shared bool) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.backups[backup.UID]
	switch {
	case firstWrite && !b.opened[part]:
		b.opened[part], shared = true, true
		op = partOperationID(part, a.recorder.id, now)
	case firstWrite && b.returned[part]:
		return "", nil, false
	default:
		op = operationID(part, is.Namespace, is.Name, now)
	}
	if part != backup.Name && !b.listed[part] {
		b.list(part)
		// The head lists the parts: it is written with them, even when it holds no
		// imagestream of its own.
		a.recorder.touch(backup.Namespace+"/"+backup.Name, a.builder(backup, backup.Name))
	}
	names := slices.Sorted(slices.Values(b.unattached))
	if !b.headAttached {
		names = append(names, backup.Name)
	}
	for _, name := range names {
		post = append(post, velero.ResourceIdentifier{GroupResource: imageStreamsBackupsResource, Namespace: backup.Namespace, Name: name})
	}
	b.unattached, b.headAttached = nil, true
	return op, post, shared
}

// list has the head list part, and the next operation take it as a post-operation item.
func (b *backupParts) list(part string) {
	b.listed[part] = true
	b.unattached = append(b.unattached, part)
}

// returnedShared notes that the Execute that took part's shared operation returns it.
func (a *BackupAction) returnedShared(backup types.UID, part string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.backups[backup].returned[part] = true
}

// builder makes part of backup, with entries, for the recorder; the head names the parts
// that hold imagestreams so far.
func (a *BackupAction) builder(backup *velerov1.Backup, part string) func([]oadpv1alpha1.ImageStream) *unstructured.Unstructured {
	return func(entries []oadpv1alpha1.ImageStream) *unstructured.Unstructured {
		var parts []string
		if part == backup.Name {
			parts = a.partNames(backup)
		}
		u := partObject(backup, part, parts, entries)
		if len(entries) > 0 {
			// Only a write of the whole object carries annotations (see entriesOnly): this
			// process's first, and those that retry it, each of which holds every
			// imagestream whose part operation this process returned.
			annotations := u.GetAnnotations()
			if annotations == nil {
				annotations = map[string]string{}
			}
			annotations[oadpv1alpha1.AnnotationRecordedByPrefix+a.recorder.id] = strconv.Itoa(len(entries))
			u.SetAnnotations(annotations)
		}
		return u
	}
}

// partNames lists the parts of backup other than the head that hold imagestreams, in order.
func (a *BackupAction) partNames(backup *velerov1.Backup) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(maps.Keys(a.backups[backup.UID].listed))
}

// record queues entry for the part of backup that takes it (see backupParts.place), and has
// the part written if it is full with it. Both happen under one lock, so that a part is
// released after the last entry it takes: a part is written once. It also reports whether the
// entry goes in the part's first write by this process.
func (a *BackupAction) record(ctx context.Context, backup *velerov1.Backup, entry oadpv1alpha1.ImageStream) (part string, firstWrite bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.backups[backup.UID]
	if !ok {
		if b, err = a.newBackupParts(ctx, backup); err != nil {
			return "", false, err
		}
		a.backups[backup.UID] = b
	}
	part, full := b.place(backup, entry.Namespace, entry.Name)
	key := backup.Namespace + "/" + part
	firstWrite = a.recorder.add(key, a.builder(backup, part), entry)
	if full {
		a.recorder.release(key)
	}
	return part, firstWrite, nil
}

// newBackupParts creates the head ImageStreamsBackup on first use, fixing the number of parts,
// or reads it from the head another writer created. A head of the name that belongs to no part
// of this Velero backup (another one's, of the same name made earlier, or a person's) is
// refused: the backup's images would otherwise land in another backup.
func (a *BackupAction) newBackupParts(ctx context.Context, backup *velerov1.Backup) (*backupParts, error) {
	total := 0
	if backup.Status.Progress != nil {
		total = backup.Status.Progress.TotalItems
	}
	head := newPart(backup, backup.Name)
	head.Annotations = map[string]string{oadpv1alpha1.AnnotationParts: strconv.Itoa(partsFor(total))}
	err := a.client.Create(ctx, head)
	existed := apierrors.IsAlreadyExists(err)
	if existed {
		if err = a.client.Get(ctx, client.ObjectKeyFromObject(head), head); err == nil {
			err = ofBackup(head, backup)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("creating ImageStreamsBackup %s/%s: %w", head.Namespace, head.Name, err)
	}
	a.recorder.exists(head.Namespace + "/" + head.Name)
	n, err := strconv.Atoi(head.Annotations[oadpv1alpha1.AnnotationParts])
	if err != nil || n < 1 {
		n = 1 // a head made by a person records everything itself
	}
	b := &backupParts{count: n, listed: map[string]bool{}, opened: map[string]bool{}, returned: map[string]bool{}, filling: 1}
	if existed {
		// Another process of this plugin wrote for the backup before (Velero restarts a
		// plugin that died): the head lists the parts it filled, and this one fills the next.
		if err := a.continueAfter(ctx, backup, b); err != nil {
			return nil, err
		}
		if len(b.listed) > 0 {
			// Its predecessor may have died before writing the head that lists them.
			a.recorder.touch(head.Namespace+"/"+head.Name, a.builder(backup, head.Name))
		}
	}
	return b, nil
}

// continueAfter has b list the parts of backup that exist, and fill parts after them.
func (a *BackupAction) continueAfter(ctx context.Context, backup *velerov1.Backup, b *backupParts) error {
	list := &oadpv1alpha1.ImageStreamsBackupList{}
	if err := a.client.List(ctx, list, client.InNamespace(backup.Namespace), client.MatchingLabels{LabelBackupUID: string(backup.UID)}); err != nil {
		return fmt.Errorf("listing the ImageStreamsBackups of backup %s/%s: %w", backup.Namespace, backup.Name, err)
	}
	for _, isb := range list.Items {
		for k := 1; k < b.count; k++ {
			if isb.Name == partK(backup, k) {
				b.list(isb.Name)
				b.filling = max(b.filling, k+1)
			}
		}
	}
	return nil
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
func partObject(backup *velerov1.Backup, part string, parts []string, entries []oadpv1alpha1.ImageStream) *unstructured.Unstructured {
	obj := newPart(backup, part)
	obj.Spec.Parts = parts
	obj.Spec.ImageStreams = entries
	u := forApply(obj)
	// startBackup: false is part of what every writer applies, so it stays false until Velero
	// has collected every item; omitempty would drop it.
	_ = unstructured.SetNestedField(u.Object, false, "spec", "startBackup")
	return u
}

// Progress reports the operation of one imagestream, in two steps: itemCollectionEnded writes
// what Execute held back, then storedProgress answers from the parts as stored, reading only.
// Velero's own pvc_action keeps Progress read-only; this one writes in its first step because its
// first call is how the plugin learns that item collection has ended.
func (a *BackupAction) Progress(operationID string, backup *velerov1.Backup) (velero.OperationProgress, error) {
	op, err := parseOperationID(operationID)
	if err != nil {
		return velero.OperationProgress{}, err
	}
	a.itemCollectionEnded()
	return a.storedProgress(op, backup)
}

// itemCollectionEnded writes every part whose entries Execute holds, each once and whole, and
// waits for those writes and for those of full parts still under way; with nothing held it does
// nothing.
//
// Velero asks for the progress of an operation only once it has collected every item of the
// backup, first in the process that ran Execute, and the worker starts copying a part no sooner.
// So Execute holds the entries of a part until it is full, and this step, at the first
// Progress, writes the parts that are not (the head among them) while Velero waits: writing
// parts as they grow would rewrite them again and again, and item collection would wait on the
// API server. A later call writes only what was queued since (another backup in the same
// process still collecting items). A write that fails is logged; the operations of the
// imagestreams it held fail by name after recordDeadline.
func (a *BackupAction) itemCollectionEnded() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.recorder.flushHeld(ctx); err != nil {
		a.log.WithError(err).Warn("Not every imagestream is written into its ImageStreamsBackup yet")
	}
}

// storedProgress is the operation's progress as the stored part and head tell it. It only reads,
// through a.parts, which holds what the last reads and writes returned.
func (a *BackupAction) storedProgress(op operation, backup *velerov1.Backup) (velero.OperationProgress, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := a.parts.progress(ctx, backup.Namespace, op, progressOf)
	if err != nil || !p.Completed || p.Err != "" || op.object == backup.Name {
		return p, err
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
		p.Err = withReadyMessage(fmt.Sprintf("ImageStreamsBackup %s, the head of the backup, %s; restoring the backup needs its index", head.Name, st.Phase), st.Conditions)
	case !current || st.Phase != oadpv1alpha1.BackupPhaseCompleted && st.Phase != oadpv1alpha1.BackupPhasePartiallyFailed:
		p.Completed = false
		p.Description += fmt.Sprintf("; waiting for ImageStreamsBackup %s, the head of the backup, to store its index", head.Name)
	}
	return p
}

// progressOf maps an ImageStreamsBackup's status onto the operation of one imagestream, or of
// the part's imagestreams: of their images, those that did not fail are done once the worker
// ran through the part.
func progressOf(isb *oadpv1alpha1.ImageStreamsBackup, op operation, now time.Time) velero.OperationProgress {
	var total int64
	found := false
	for _, is := range isb.Spec.ImageStreams {
		switch {
		case op.writer != "":
			total += int64(len(is.DockerImageReferences))
		case is.NamespaceOrDefault() == op.namespace && is.Name == op.name:
			total, found = int64(len(is.DockerImageReferences)), true
		}
	}
	if op.writer != "" {
		_, found = isb.Annotations[oadpv1alpha1.AnnotationRecordedByPrefix+op.writer]
	}
	if !found {
		return op.unwritten(now, backupKind, isb.Namespace, true)
	}
	st := isb.Status
	report := backupReport(isb)
	p, failed := report.progress(op, fmt.Sprintf(", %d bytes uploaded, %d bytes already stored", st.Progress.BytesUploaded, st.Progress.BytesSkipped), now)
	p.NTotal = total
	if report.end == ranThrough {
		p.NCompleted = total - failed
	}
	return p
}

// backupReport is what Progress reads of an ImageStreamsBackup's status. An imagestream written
// after the worker started is copied by another run, so only a run through the current spec
// counts; a run that failed or was canceled as a whole ends every operation of the part.
func backupReport(isb *oadpv1alpha1.ImageStreamsBackup) statusReport {
	st := &isb.Status
	r := statusReport{kind: backupKind.name, name: isb.Name, phase: string(st.Phase), status: &st.CommonStatus}
	current := st.ObservedGeneration == isb.Generation
	switch st.Phase {
	case oadpv1alpha1.BackupPhaseFailed, oadpv1alpha1.BackupPhaseCanceled:
		r.end = stopped
	case oadpv1alpha1.BackupPhaseCompleted, oadpv1alpha1.BackupPhasePartiallyFailed:
		if current {
			r.end = ranThrough
		}
	}
	return r
}

// Cancel asks the worker to stop the part that holds the imagestream.
func (a *BackupAction) Cancel(operationID string, backup *velerov1.Backup) error {
	return withOperation(operationID, func(ctx context.Context, op operation) error {
		isb := &oadpv1alpha1.ImageStreamsBackup{ObjectMeta: metav1.ObjectMeta{Namespace: backup.Namespace, Name: op.object}}
		return client.IgnoreNotFound(a.client.Patch(ctx, isb, cancelRun))
	})
}
