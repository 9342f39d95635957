package imagestore

import (
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The names of the store's objects, relative to Root. Every key the store reads, writes, lists
// or parses is spelled here; callers pass digests and backup names validated first.
const (
	// layoutKey is the oci-layout file of the OCI image layout specification.
	layoutKey = "oci-layout"
	// blobsPrefix holds every blob and manifest, named by its sha256 hex.
	blobsPrefix = "blobs/sha256/"
	// backupsPrefix holds a directory per backup: its index and its in-progress markers.
	backupsPrefix = "backups/"
	// gcMarkers holds the markers of running garbage collections, gc/<id>.json.
	gcMarkers = "gc/"
	// legacyGCMarker is the single collection marker of earlier versions, still honoured.
	legacyGCMarker = "gc.json"

	indexFile    = "index.json"
	markerSuffix = ".json"
	// backupMarkerBase begins the name of a backup's in-progress markers, pending-<id>.json,
	// and of earlier versions' single pending.json.
	backupMarkerBase = "pending"
)

func blobKey(h v1.Hash) string { return blobsPrefix + h.Hex }

// blobHex is the sha256 hex of the blob stored at key, a key listed under blobsPrefix.
func blobHex(key string) string { return strings.TrimPrefix(key, blobsPrefix) }

// indexKey is backups/<name>/index.json, whose presence makes backup name complete.
func indexKey(name string) string { return path.Join(backupsPrefix, name, indexFile) }

// backupMarkerKey is backups/<name>/pending-<id>.json, the in-progress marker of holder id.
func backupMarkerKey(name, id string) string {
	return path.Join(backupsPrefix, name, backupMarkerBase+"-"+id+markerSuffix)
}

// gcMarkerKey is gc/<id>.json, the marker of collection id.
func gcMarkerKey(id string) string { return gcMarkers + id + markerSuffix }

// backupOfDir is the backup name of a directory listed under backupsPrefix ("backups/<name>/").
func backupOfDir(key string) string {
	return strings.TrimSuffix(strings.TrimPrefix(key, backupsPrefix), "/")
}

// backupOfMarker is the backup name of an in-progress marker key.
func backupOfMarker(key string) string { return path.Base(path.Dir(key)) }

func isGCMarker(key string) bool { return strings.HasSuffix(key, markerSuffix) }

// isBackupMarker matches backups/<name>/pending-<id>.json and earlier versions'
// backups/<name>/pending.json.
func isBackupMarker(key string) bool {
	base := path.Base(key)
	return strings.HasPrefix(base, backupMarkerBase) && strings.HasSuffix(base, markerSuffix) && strings.Count(key, "/") == 2
}

// markerKind is where one kind of marker lives: the keys under prefix that match accepts.
type markerKind struct {
	prefix string
	match  func(key string) bool
}

var (
	gcMarkerKind     = markerKind{prefix: gcMarkers, match: isGCMarker}
	backupMarkerKind = markerKind{prefix: backupsPrefix, match: isBackupMarker}
)
