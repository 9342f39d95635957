// Package action holds the Velero item actions: the imagestream BackupItemAction that records
// internal images in ImageStreamsBackups, and their helpers. The actions only record; they never
// copy images, and the plugin binary links neither gocloud nor the copy engine.
package action

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// A Velero backup's references can outgrow one Kubernetes object (etcd caps objects near
// 1.5 MiB; 20,000 references take about 3 MiB), so they are spread over parts: ImageStreamsBackups
// named <backup> (the head) and <backup>.1 ... <backup>.<n-1>, each imagestream in the part its
// namespace and name hash to. The head's creator fixes the number of parts from the size of the
// Velero backup and records it in AnnotationParts, so every writer agrees; a backup of up to
// itemsPerPart items has one part, named exactly after the Velero backup.
const (
	// AnnotationParts on the head says how many parts the backup has.
	AnnotationParts = oadpv1alpha1.AnnotationParts
	// LabelBackupName links every part to its Velero backup, as Velero labels what it creates.
	LabelBackupName = "velero.io/backup-name"

	itemsPerPart = 300
	maxParts     = 256
)

// partsFor is the number of parts for a Velero backup of totalItems items.
func partsFor(totalItems int) int {
	return min(max(1, (totalItems+itemsPerPart-1)/itemsPerPart), maxParts)
}

// partName is the ImageStreamsBackup that holds imagestream namespace/name.
func partName(backup string, parts int, namespace, name string) string {
	if parts <= 1 {
		return backup
	}
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%s", namespace, name)
	if k := int(h.Sum32() % uint32(parts)); k > 0 {
		return backup + "." + strconv.Itoa(k)
	}
	return backup
}

// operationID names one imagestream's images in one part: <part>/<namespace>/<name>. Velero
// keeps it across processes; Progress and Cancel run in another process than Execute.
func operationID(part, namespace, name string) string {
	return part + "/" + namespace + "/" + name
}

func parseOperationID(id string) (part, namespace, name string, err error) {
	p := strings.Split(id, "/")
	if len(p) != 3 || p[0] == "" || p[1] == "" || p[2] == "" {
		return "", "", "", fmt.Errorf("invalid operation ID %q: want <imagestreamsbackup>/<namespace>/<imagestream>", id)
	}
	return p[0], p[1], p[2], nil
}
