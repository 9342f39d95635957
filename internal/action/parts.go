// Package action holds the Velero item actions: the imagestream BackupItemAction that records
// internal images in ImageStreamsBackups, and their helpers. The actions only record; they never
// copy images, and the plugin binary links neither gocloud nor the copy engine.
package action

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// A Velero backup's references can outgrow one Kubernetes object (etcd caps objects near
// 1.5 MiB), and every write to an object costs the API server time in proportion to its size,
// so they are spread over parts: the head, an ImageStreamsBackup named exactly after the Velero
// backup, and <backup>-part<k>-<uid> for k = 1 ... n-1. Parts 1 ... n-1 are filled in turn, in
// the order Velero hands out imagestreams, itemsPerPart each, each written whole as soon as it
// is full; the head takes what they leave and is written once Velero has collected every item
// (see backupParts.place). The head's creator fixes the number of parts from the size of the
// Velero backup and records it in oadpv1alpha1.AnnotationParts, so every writer agrees; the
// head lists the parts that hold imagestreams in spec.parts, so that the worker records them in
// the head's stored index. A backup of up to itemsPerPart items has one part, the head, and
// none has more than oadpv1alpha1.MaxParts, the most the worker reads from a stored index.
//
// A part's name carries the start of the Velero backup's uid, so that it names no other
// backup's head: a Velero backup may well be called "daily.1".
const (
	// LabelBackupName links every part to its Velero backup, as Velero labels what it creates.
	LabelBackupName = velerov1.BackupNameLabel
	// LabelBackupUID tells apart Velero backups of one name made at different times.
	LabelBackupUID = velerov1.BackupUIDLabel

	itemsPerPart = 50
)

// partsFor is the number of parts for a Velero backup of totalItems items.
func partsFor(totalItems int) int {
	return min(max(1, (totalItems+itemsPerPart-1)/itemsPerPart), oadpv1alpha1.MaxParts)
}

// spreadPart is the part of a backup of parts parts that the hash of namespace/name picks.
func spreadPart(backup *velerov1.Backup, parts int, namespace, name string) string {
	if parts <= 1 {
		return backup.Name
	}
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%s", namespace, name)
	if k := int(h.Sum32() % uint32(parts)); k > 0 {
		return partK(backup, k)
	}
	return backup.Name
}

// partK is the name of part k > 0 of backup: <backup>-part<k>-<first 8 characters of its uid>,
// the backup's name shortened when the whole would be longer than an object name may be.
func partK(backup *velerov1.Backup, k int) string {
	suffix := fmt.Sprintf("-part%d", k)
	if uid := strings.ReplaceAll(string(backup.UID), "-", ""); uid != "" {
		suffix += "-" + uid[:min(8, len(uid))]
	}
	base := backup.Name
	if limit := validation.DNS1123SubdomainMaxLength - len(suffix); len(base) > limit {
		base = strings.TrimRight(base[:limit], ".-")
	}
	return base + suffix
}

// imageUnits are what an operation's progress counts.
const imageUnits = "images"

// forApply is obj as server-side apply takes it: without status and without the creation
// timestamp a typed object converts to null.
func forApply(obj runtime.Object) *unstructured.Unstructured {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		panic(err) // a typed object always converts
	}
	u := &unstructured.Unstructured{Object: raw}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	return u
}

// operation names what Velero waits for, and when Execute queued it. Velero keeps it across
// processes; Progress and Cancel run in another process than Execute. Its ID is either
//   - <object>/<namespace>/<name>/<unix seconds>: one imagestream's images in one part (or
//     ImageStreamsRestore). IDs of three segments, without the time, are those of earlier
//     versions, written before Execute returned.
//   - <object>/*/<writer>/<unix seconds>: the images of every imagestream in the first write of
//     a part by the plugin process writer ("*" is no namespace name).
type operation struct {
	object, namespace, name string
	// writer, for the operation of a part, is the plugin process whose first write it covers.
	writer string
	queued time.Time
}

func operationID(object, namespace, name string, queued time.Time) string {
	return fmt.Sprintf("%s/%s/%s/%d", object, namespace, name, queued.Unix())
}

func partOperationID(object, writer string, queued time.Time) string {
	return fmt.Sprintf("%s/%s/%s/%d", object, partOperationMark, writer, queued.Unix())
}

const partOperationMark = "*"

// what names what the operation waits for, in messages, and the verb's forms for it.
func (op operation) what() (what, is, was string) {
	if op.writer != "" {
		return "imagestreams recorded by plugin process " + op.writer, "are", "were"
	}
	return fmt.Sprintf("imagestream %s/%s", op.namespace, op.name), "is", "was"
}

// withOperation calls f with the operation operationID names and a context that bounds the API
// calls Velero waits for.
func withOperation(operationID string, f func(context.Context, operation) error) error {
	op, err := parseOperationID(operationID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f(ctx, op)
}

// cancelRun is the patch that asks the worker to stop an object's run: spec.cancel.
var cancelRun = client.RawPatch(types.MergePatchType, []byte(`{"spec":{"cancel":true}}`))

func parseOperationID(id string) (operation, error) {
	p := strings.Split(id, "/")
	bad := fmt.Errorf("invalid operation ID %q: want <object>/<namespace>/<imagestream>/<unix time> or <object>/*/<writer>/<unix time>", id)
	if len(p) != 3 && len(p) != 4 || p[0] == "" || p[1] == "" || p[2] == "" || p[1] == partOperationMark && len(p) != 4 {
		return operation{}, bad
	}
	op := operation{object: p[0], namespace: p[1], name: p[2]}
	if p[1] == partOperationMark {
		op = operation{object: p[0], writer: p[2]}
	}
	if len(p) == 4 {
		secs, err := strconv.ParseInt(p[3], 10, 64)
		if err != nil || secs <= 0 {
			return operation{}, bad
		}
		op.queued = time.Unix(secs, 0)
	}
	return op, nil
}

// objectKind is a kind of object that holds operations, as Progress names it.
type objectKind struct {
	name string
	// lost says what an imagestream that never got into its object loses.
	lost string
}

var (
	backupKind  = objectKind{name: "ImageStreamsBackup", lost: "images are not backed up"}
	restoreKind = objectKind{name: "ImageStreamsRestore", lost: "images are not restored"}
)

// unwritten is the progress of an operation whose imagestreams are not in its object (of kind
// k, named op.object, missing altogether unless exists): waiting while they may still be on
// their way, then failed by name, saying what that means for their images.
func (op operation) unwritten(now time.Time, k objectKind, namespace string, exists bool) velero.OperationProgress {
	kind := k.name
	what, is, was := op.what()
	switch {
	case op.waitingToBeRecorded(now) && !exists:
		return velero.OperationProgress{OperationUnits: imageUnits, Updated: now,
			Description: fmt.Sprintf("%s %s/%s not written yet", kind, namespace, op.object)}
	case op.waitingToBeRecorded(now):
		return velero.OperationProgress{OperationUnits: imageUnits, Updated: now,
			Description: fmt.Sprintf("%s %s not yet written into %s %s", what, is, kind, op.object)}
	case !exists:
		return velero.OperationProgress{Completed: true, Updated: now, Err: fmt.Sprintf("%s %s/%s no longer exists", kind, namespace, op.object)}
	}
	its, it := "its", "it"
	if op.writer != "" {
		its, it = "their", "them"
	}
	return velero.OperationProgress{Completed: true, Updated: now, Err: fmt.Sprintf(
		"%s %s never written into %s %s (the plugin stopped before writing %s, or the API server refused %s: see the velero log); %s %s",
		what, was, kind, op.object, it, it, its, k.lost)}
}

// waitingToBeRecorded reports whether the operation's entry may still be on its way into its
// object: queued less than recordDeadline ago.
func (op operation) waitingToBeRecorded(now time.Time) bool {
	return !op.queued.IsZero() && now.Sub(op.queued) < recordDeadline
}
