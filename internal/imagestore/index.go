package imagestore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
	"k8s.io/apimachinery/pkg/util/validation"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
)

// Annotations on each entry of a backup's index.
const (
	AnnotationNamespace   = "oadp.openshift.io/namespace"
	AnnotationImageStream = "oadp.openshift.io/imagestream"
	AnnotationTags        = "oadp.openshift.io/tags"
	AnnotationReference   = "oadp.openshift.io/reference"
)

// Annotations on a backup's index itself.
const (
	// AnnotationPartNames lists, comma-separated, the backups that hold the rest of a split
	// backup: an ImageStreamsBackup too large for one Kubernetes object is split into parts,
	// each stored as a backup of its own. Restoring the head restores every part, and a part
	// it lists that the store lacks is reported by name.
	AnnotationPartNames = "oadp.openshift.io/part-names"
	// AnnotationParts is how earlier versions recorded a split: a count of parts named
	// <name>.1 ... <name>.<count-1>, of which those that held no image were never written.
	// It is still read. It is the key ImageStreamsBackups carry the count under.
	AnnotationParts = oadpv1alpha1.AnnotationParts
	// AnnotationWriter identifies the ImageStreamsBackup that wrote the index. Only a request
	// from that backup deletes it.
	AnnotationWriter = "oadp.openshift.io/writer"
)

// ErrInvalidIndex is matched by the errors of an index that cannot be written or read as it is:
// trying again does not help.
var ErrInvalidIndex = errors.New("invalid index")

// invalidIndexError marks err as ErrInvalidIndex without changing its message.
type invalidIndexError struct{ err error }

func (e *invalidIndexError) Error() string        { return e.err.Error() }
func (e *invalidIndexError) Unwrap() error        { return e.err }
func (e *invalidIndexError) Is(target error) bool { return target == ErrInvalidIndex }

func invalidIndex(err error) error { return &invalidIndexError{err} }

// IndexMeta is what a backup's index records beside its images.
type IndexMeta struct {
	// Writer identifies the ImageStreamsBackup that wrote the index; empty in indexes written
	// before writers were recorded.
	Writer string
	// Parts names the backups that hold the rest of a split backup, in order.
	Parts []string
	// legacyParts says Parts were derived from AnnotationParts: such a part that is missing
	// held no image.
	legacyParts bool
}

// MaxIndexSize bounds what is read of a backup's index.json, and of its parts' together
// (AnnotationParts): several times the 20,000 image references a backup must hold, while the
// whole backup's entries still fit the worker's memory. Reads stop at the limit whatever size
// the bucket claims.
const MaxIndexSize = 64 << 20

// MaxDepth bounds how deep manifests may nest (index -> index -> ... -> image -> layer): real
// images nest at most three levels, so eight leaves room while a hostile bucket or registry
// cannot make a reader recurse without end.
const MaxDepth = 8

// Entry is one image of a backup: its top manifest and where it came from.
type Entry struct {
	Namespace   string
	ImageStream string
	// Tags are the imagestream tags that point at the image, in history order.
	Tags []string
	// Reference is the reference the image was copied from.
	Reference string
	// Descriptor is the image's top manifest (an image manifest, an index or a manifest list).
	Descriptor v1.Descriptor
}

// ValidateBackupName checks that a backup name is a DNS subdomain, as Kubernetes object names
// are; it becomes part of an object key.
func ValidateBackupName(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("invalid backup name %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// MarshalIndex encodes entries and meta as the OCI image index stored at
// backups/<name>/index.json.
func MarshalIndex(entries []Entry, meta IndexMeta) ([]byte, error) {
	if err := meta.validate(); err != nil {
		return nil, invalidIndex(err)
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: make([]v1.Descriptor, 0, len(entries))}
	if meta.Writer != "" || len(meta.Parts) > 0 {
		idx.Annotations = map[string]string{}
	}
	if meta.Writer != "" {
		idx.Annotations[AnnotationWriter] = meta.Writer
	}
	if len(meta.Parts) > 0 {
		idx.Annotations[AnnotationPartNames] = strings.Join(meta.Parts, ",")
	}
	for _, e := range entries {
		d := v1.Descriptor{MediaType: e.Descriptor.MediaType, Digest: e.Descriptor.Digest, Size: e.Descriptor.Size,
			Annotations: map[string]string{
				AnnotationNamespace:   e.Namespace,
				AnnotationImageStream: e.ImageStream,
				AnnotationTags:        strings.Join(e.Tags, ","),
				AnnotationReference:   e.Reference,
			}}
		idx.Manifests = append(idx.Manifests, d)
	}
	return json.Marshal(idx)
}

// writerRE is what a writer may be: a Kubernetes uid, or a name of that alphabet.
var writerRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func (m *IndexMeta) validate() error {
	if m.Writer != "" && !writerRE.MatchString(m.Writer) {
		return fmt.Errorf("invalid writer %q", m.Writer)
	}
	if len(m.Parts) >= oadpv1alpha1.MaxParts {
		return fmt.Errorf("%d parts, more than the %d allowed", len(m.Parts), oadpv1alpha1.MaxParts-1)
	}
	seen := make(map[string]bool, len(m.Parts))
	for _, p := range m.Parts {
		if err := ValidateBackupName(p); err != nil {
			return fmt.Errorf("part: %w", err)
		}
		if seen[p] {
			return fmt.Errorf("part %s listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// ParseIndex decodes and validates a backup's index. The bucket is not trusted: every digest
// must be valid, every size non-negative, every media type a manifest's.
func ParseIndex(raw []byte) ([]Entry, error) {
	entries, _, _, err := parseIndex(raw)
	return entries, err
}

func parseIndex(raw []byte) ([]Entry, IndexMeta, int, error) {
	var meta IndexMeta
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, meta, 0, fmt.Errorf("parsing index: %w", badEntry(raw, err))
	}
	count := 1
	if p, ok := idx.Annotations[AnnotationParts]; ok {
		// The bucket could otherwise make AnnotationParts declare any number.
		if count, err = strconv.Atoi(p); err != nil || count < 1 || count > oadpv1alpha1.MaxParts {
			return nil, meta, 0, fmt.Errorf("parsing index: %s %q is not a count from 1 to %d", AnnotationParts, p, oadpv1alpha1.MaxParts)
		}
	}
	meta.Writer = idx.Annotations[AnnotationWriter]
	if names := idx.Annotations[AnnotationPartNames]; names != "" {
		meta.Parts = strings.Split(names, ",")
	}
	if err := meta.validate(); err != nil {
		return nil, meta, 0, fmt.Errorf("parsing index: %w", err)
	}
	entries := make([]Entry, 0, len(idx.Manifests))
	for i, d := range idx.Manifests {
		if err := validateDescriptor(d); err != nil {
			return nil, meta, 0, fmt.Errorf("index entry %d: %w", i, err)
		}
		if !isManifest(d.MediaType) {
			return nil, meta, 0, fmt.Errorf("index entry %d (%s): media type %q is not a manifest's", i, d.Digest, d.MediaType)
		}
		if err := validateNames(d.Annotations); err != nil {
			return nil, meta, 0, fmt.Errorf("index entry %d (%s): %w", i, d.Digest, err)
		}
		e := Entry{
			Namespace:   d.Annotations[AnnotationNamespace],
			ImageStream: d.Annotations[AnnotationImageStream],
			Reference:   d.Annotations[AnnotationReference],
			Descriptor:  v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size},
		}
		if t := d.Annotations[AnnotationTags]; t != "" {
			e.Tags = strings.Split(t, ",")
		}
		entries = append(entries, e)
	}
	return entries, meta, count, nil
}

var (
	// namespaceRE and imageStreamRE are what the ImageStreamsBackup API accepts for an
	// imagestream's namespace (which may be empty) and name; tagRE is a registry's tag.
	namespaceRE   = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$`)
	imageStreamRE = regexp.MustCompile(`^[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*$`)
	tagRE         = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

// validateNames checks an entry's namespace, imagestream and tags, which a restore turns into
// repository paths and tags of registry URLs: from the bucket they could otherwise name another
// repository ("../other") or smuggle path segments into a tag.
func validateNames(ann map[string]string) error {
	if ns := ann[AnnotationNamespace]; len(ns) > 63 || !namespaceRE.MatchString(ns) {
		return fmt.Errorf("invalid namespace %q", ns)
	}
	if is := ann[AnnotationImageStream]; len(is) > 253 || !imageStreamRE.MatchString(is) {
		return fmt.Errorf("invalid imagestream name %q", is)
	}
	if t := ann[AnnotationTags]; t != "" {
		for tag := range strings.SplitSeq(t, ",") {
			if !tagRE.MatchString(tag) {
				return fmt.Errorf("invalid tag %q", tag)
			}
		}
	}
	return nil
}

// badEntry names the entry whose digest made an index fail to parse, when one did, so that the
// error points at it; otherwise it returns err.
func badEntry(raw []byte, err error) error {
	var idx struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	if json.Unmarshal(raw, &idx) != nil {
		return err
	}
	for i, m := range idx.Manifests {
		if _, herr := v1.NewHash(m.Digest); herr != nil {
			return fmt.Errorf("index entry %d: %w %q: %v", i, ErrInvalidDigest, m.Digest, herr)
		}
	}
	return err
}

func validateDescriptor(d v1.Descriptor) error {
	if err := ValidateDigest(d.Digest); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("descriptor %s has negative size %d", d.Digest, d.Size)
	}
	return nil
}

func isManifest(mt types.MediaType) bool { return mt.IsIndex() || mt.IsImage() }

// children returns the descriptors a manifest references: an index's manifests, or an image's
// config and distributable layers. Foreign layers live elsewhere and are not copied, as
// registries do not serve them.
func children(mt types.MediaType, raw []byte) ([]v1.Descriptor, error) {
	var out []v1.Descriptor
	switch {
	case mt.IsIndex():
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("parsing index: %w", err)
		}
		for _, d := range idx.Manifests {
			if !isManifest(d.MediaType) {
				return nil, fmt.Errorf("index names %s with media type %q, not a manifest", d.Digest, d.MediaType)
			}
			out = append(out, d)
		}
	case mt.IsImage():
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("parsing manifest: %w", err)
		}
		out = append(out, m.Config)
		for _, l := range m.Layers {
			if l.MediaType.IsDistributable() {
				out = append(out, l)
			}
		}
	default:
		return nil, fmt.Errorf("unsupported manifest media type %q", mt)
	}
	for _, d := range out {
		if err := validateDescriptor(d); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Children parses a manifest and returns what it references, validated.
func Children(desc v1.Descriptor, raw []byte) ([]v1.Descriptor, error) {
	return children(desc.MediaType, raw)
}

// WriteIndex writes a backup's index: the commit point that makes the backup complete. Call it
// only after every blob the entries reach is stored.
func (s *Store) WriteIndex(ctx context.Context, name string, entries []Entry, meta IndexMeta) error {
	if err := ValidateBackupName(name); err != nil {
		return err
	}
	if slices.Contains(meta.Parts, name) {
		return invalidIndex(fmt.Errorf("backup %s lists itself as a part", name))
	}
	if err := s.ensureLayout(ctx); err != nil {
		return fmt.Errorf("writing oci-layout: %w", err)
	}
	raw, err := MarshalIndex(entries, meta)
	if err != nil {
		return err
	}
	if err := s.bucket.WriteAll(ctx, indexKey(name), raw, &blob.WriterOptions{ContentType: string(types.OCIImageIndex)}); err != nil {
		return fmt.Errorf("writing index of backup %s: %w", name, err)
	}
	return nil
}

// ReadIndex reads and validates a backup's own index, without its parts.
func (s *Store) ReadIndex(ctx context.Context, name string) ([]Entry, error) {
	entries, _, _, err := s.readIndex(ctx, name, MaxIndexSize)
	return entries, err
}

// ReadIndexWithMeta reads a backup's own index and what it records beside its images.
func (s *Store) ReadIndexWithMeta(ctx context.Context, name string) ([]Entry, IndexMeta, error) {
	entries, meta, _, err := s.readIndex(ctx, name, MaxIndexSize)
	return entries, meta, err
}

// Backup is a stored backup with its parts, as ReadBackup reads it.
type Backup struct {
	IndexMeta
	// Entries are the images of the backup and of each of its parts, in order.
	Entries []Entry
	// Missing names the parts the index lists that the store does not hold.
	Missing []string
}

// ReadBackup reads a backup's index and those of its parts. A part the index lists that the
// store lacks is named in Missing; the caller decides what that means.
func (s *Store) ReadBackup(ctx context.Context, name string) (*Backup, error) {
	entries, meta, read, err := s.readIndex(ctx, name, MaxIndexSize)
	if err != nil {
		return nil, err
	}
	b := &Backup{IndexMeta: meta, Entries: entries}
	// The parts share one budget: a bucket could otherwise declare oadpv1alpha1.MaxParts parts of
	// MaxIndexSize each.
	budget := int64(MaxIndexSize) - read
	for _, part := range meta.Parts {
		more, _, n, err := s.readIndex(ctx, part, budget)
		if errors.Is(err, ErrNotFound) {
			if !meta.legacyParts {
				b.Missing = append(b.Missing, part)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("backup %s: %w", name, err)
		}
		budget -= n
		b.Entries = append(b.Entries, more...)
	}
	return b, nil
}

// readIndex reads and parses backup name's index, reading at most max bytes, and returns its
// entries, what it records and the bytes read.
func (s *Store) readIndex(ctx context.Context, name string, max int64) ([]Entry, IndexMeta, int64, error) {
	var meta IndexMeta
	if err := ValidateBackupName(name); err != nil {
		return nil, meta, 0, err
	}
	r, err := s.bucket.NewReader(ctx, indexKey(name), nil)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return nil, meta, 0, fmt.Errorf("backup %s: %w", name, ErrNotFound)
		}
		return nil, meta, 0, fmt.Errorf("reading index of backup %s: %w", name, err)
	}
	defer r.Close()
	if r.Size() > max {
		return nil, meta, 0, fmt.Errorf("index of backup %s is %d bytes, more than the %d allowed", name, r.Size(), max)
	}
	// Size is only what the bucket claims: stop reading one byte past the limit regardless.
	raw, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, meta, 0, fmt.Errorf("reading index of backup %s: %w", name, err)
	}
	if int64(len(raw)) > max {
		return nil, meta, 0, fmt.Errorf("index of backup %s is more than the %d bytes allowed", name, max)
	}
	entries, meta, count, err := parseIndex(raw)
	if err != nil {
		return nil, meta, 0, invalidIndex(fmt.Errorf("backup %s: %w", name, err))
	}
	if len(meta.Parts) == 0 && count > 1 {
		for k := 1; k < count; k++ {
			meta.Parts = append(meta.Parts, name+"."+strconv.Itoa(k))
		}
		meta.legacyParts = true
	}
	if slices.Contains(meta.Parts, name) {
		return nil, meta, 0, invalidIndex(fmt.Errorf("backup %s lists itself as a part", name))
	}
	return entries, meta, int64(len(raw)), nil
}

// HasIndex reports whether backup name is complete in the store.
func (s *Store) HasIndex(ctx context.Context, name string) (bool, error) {
	if err := ValidateBackupName(name); err != nil {
		return false, err
	}
	return s.bucket.Exists(ctx, indexKey(name))
}

// Backups lists the names of the complete backups in the store.
func (s *Store) Backups(ctx context.Context) ([]string, error) {
	var names []string
	it := s.bucket.List(&blob.ListOptions{Prefix: backupsPrefix, Delimiter: "/"})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("listing backups: %w", err)
		}
		name := backupOfDir(obj.Key)
		if !obj.IsDir || ValidateBackupName(name) != nil {
			continue
		}
		if ok, err := s.bucket.Exists(ctx, indexKey(name)); err != nil {
			return nil, fmt.Errorf("listing backups: %w", err)
		} else if ok {
			names = append(names, name)
		}
	}
	return names, nil
}

// DeleteBackup removes a backup's index, leaving its blobs to GC.
func (s *Store) DeleteBackup(ctx context.Context, name string) error {
	if err := ValidateBackupName(name); err != nil {
		return err
	}
	if err := s.bucket.Delete(ctx, indexKey(name)); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("deleting index of backup %s: %w", name, err)
	}
	return nil
}

// Walk visits every descriptor reachable from the entries once, reading manifests from the
// store (verified), in depth-first order with each manifest before what it references. It
// refuses invalid descriptors, cycles and nesting deeper than MaxDepth; as each digest is
// visited once, a manifest that lists one child many times, at any depth, costs one read.
func (s *Store) Walk(ctx context.Context, roots []v1.Descriptor, visit func(v1.Descriptor) error) error {
	seen := map[v1.Hash]bool{}
	var walk func(d v1.Descriptor, depth int, path map[v1.Hash]bool) error
	walk = func(d v1.Descriptor, depth int, path map[v1.Hash]bool) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := validateDescriptor(d); err != nil {
			return err
		}
		if path[d.Digest] {
			// Content addressing makes a cycle a sha256 collision, which verified reads
			// would catch first; refusing it here keeps the walk finite regardless.
			return fmt.Errorf("manifest %s references itself: manifests form a cycle", d.Digest)
		}
		if depth > MaxDepth {
			return fmt.Errorf("manifest %s is nested more than %d levels deep", d.Digest, MaxDepth)
		}
		if seen[d.Digest] {
			return nil
		}
		if isManifest(d.MediaType) && d.Size > MaxManifestSize {
			// Refused before visit reads it.
			return fmt.Errorf("manifest %s is %d bytes, more than the %d allowed", d.Digest, d.Size, MaxManifestSize)
		}
		seen[d.Digest] = true
		if err := visit(d); err != nil {
			return err
		}
		if !isManifest(d.MediaType) {
			return nil
		}
		raw, err := s.ReadBlob(ctx, d.Digest, MaxManifestSize)
		if err != nil {
			return err
		}
		kids, err := children(d.MediaType, raw)
		if err != nil {
			return fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
		path[d.Digest] = true
		defer delete(path, d.Digest)
		for _, k := range kids {
			if err := walk(k, depth+1, path); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range roots {
		if err := walk(r, 0, map[v1.Hash]bool{}); err != nil {
			return err
		}
	}
	return nil
}

// Descriptors returns the top manifests of entries.
func Descriptors(entries []Entry) []v1.Descriptor {
	out := make([]v1.Descriptor, len(entries))
	for i, e := range entries {
		out[i] = e.Descriptor
	}
	return out
}
