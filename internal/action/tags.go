package action

import (
	"context"
	"fmt"
	"strings"
	"time"

	imagev1 "github.com/openshift/api/image/v1"
	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Names of the actions on tags and on ImageStreamsBackups themselves.
const (
	TagBackupActionName     = "oadp.openshift.io/imagestreamtags-backup"
	TagRestoreActionName    = "oadp.openshift.io/imagestreamtags-restore"
	ImageTagSkipActionName  = "oadp.openshift.io/imagetags-restore"
	BackupSkipActionName    = "oadp.openshift.io/imagestreamsbackups-restore"
	AnnotationReferencedTag = "oadp.openshift.io/references-imagestreamtag"
	// AnnotationRegistry records the backed-up cluster's internal registry on each tag, so that
	// a restore tells a tag of an internal image (which the image restore recreates) from a tag
	// of an external one.
	AnnotationRegistry = "oadp.openshift.io/internal-registry"
)

var imageStreamTags = schema.GroupResource{Group: "image.openshift.io", Resource: "imagestreamtags"}

// Kinds a tag's from may name that are tags of this cluster.
const (
	kindImageStreamTag   = "ImageStreamTag"
	kindImageStreamImage = "ImageStreamImage"
)

// TagBackupAction annotates each ImageStreamTag with the internal registry's host and, when it
// refers to another tag, with that tag, which it backs up along so that a restore can put it
// back first.
type TagBackupAction struct {
	log          logrus.FieldLogger
	registryHost func(context.Context) (string, error)
}

// NewTagBackupAction returns the action.
func NewTagBackupAction(log logrus.FieldLogger, registryHost func(context.Context) (string, error)) *TagBackupAction {
	return &TagBackupAction{log: log, registryHost: registryHost}
}

// Name implements the BackupItemAction interface.
func (a *TagBackupAction) Name() string { return TagBackupActionName }

// AppliesTo selects imagestreamtags.
func (a *TagBackupAction) AppliesTo() (velero.ResourceSelector, error) {
	return velero.ResourceSelector{IncludedResources: []string{"imagestreamtags.image.openshift.io"}}, nil
}

// Execute annotates a tag that refers to another imagestream tag.
func (a *TagBackupAction) Execute(item runtime.Unstructured, _ *velerov1.Backup) (runtime.Unstructured, []velero.ResourceIdentifier, string, []velero.ResourceIdentifier, error) {
	tag := &imagev1.ImageStreamTag{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(item.UnstructuredContent(), tag); err != nil {
		return nil, nil, "", nil, fmt.Errorf("reading imagestreamtag: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	host, err := a.registryHost(ctx)
	if err != nil {
		return nil, nil, "", nil, err
	}
	u := &unstructured.Unstructured{Object: item.UnstructuredContent()}
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationRegistry] = host
	u.SetAnnotations(ann)
	if tag.Tag == nil || tag.Tag.From == nil || tag.Tag.From.Kind != kindImageStreamTag {
		return u, nil, "", nil, nil
	}
	ns := tag.Tag.From.Namespace
	if ns == "" {
		ns = tag.Namespace
	}
	name := tag.Tag.From.Name
	if !strings.Contains(name, ":") {
		// A reference within one imagestream names only the tag.
		is, _, _ := strings.Cut(tag.Name, ":")
		name = is + ":" + name
	}
	ann[AnnotationReferencedTag] = ns + "/" + name
	u.SetAnnotations(ann)
	return u, []velero.ResourceIdentifier{{GroupResource: imageStreamTags, Namespace: ns, Name: name}}, "", nil, nil
}

// Progress implements the interface; the action starts no operation.
func (a *TagBackupAction) Progress(string, *velerov1.Backup) (velero.OperationProgress, error) {
	return velero.OperationProgress{}, fmt.Errorf("%s starts no operations", TagBackupActionName)
}

// Cancel implements the interface; the action starts no operation.
func (a *TagBackupAction) Cancel(string, *velerov1.Backup) error { return nil }

// TagRestoreAction restores the ImageStreamTags that the image restore does not recreate: tags
// that refer to another tag or image (with its namespace mapped as the restore maps it) and
// tags of external images. A tag of an internal image comes back when the image is pushed.
type TagRestoreAction struct {
	log          logrus.FieldLogger
	registryHost func(context.Context) (string, error)
}

// NewTagRestoreAction returns the action.
func NewTagRestoreAction(log logrus.FieldLogger, registryHost func(context.Context) (string, error)) *TagRestoreAction {
	return &TagRestoreAction{log: log, registryHost: registryHost}
}

// Name implements the RestoreItemAction interface.
func (a *TagRestoreAction) Name() string { return TagRestoreActionName }

// AppliesTo selects imagestreamtags.
func (a *TagRestoreAction) AppliesTo() (velero.ResourceSelector, error) {
	return velero.ResourceSelector{IncludedResources: []string{"imagestreamtags.image.openshift.io"}}, nil
}

// Execute decides whether the tag is restored, and remaps what it refers to.
func (a *TagRestoreAction) Execute(input *velero.RestoreItemActionExecuteInput) (*velero.RestoreItemActionExecuteOutput, error) {
	tag := &imagev1.ImageStreamTag{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(input.Item.UnstructuredContent(), tag); err != nil {
		return nil, fmt.Errorf("reading imagestreamtag: %w", err)
	}
	if tag.Tag == nil || tag.Tag.From == nil {
		// Made by a push: the image restore pushes it again.
		return velero.NewRestoreItemActionExecuteOutput(input.Item).WithoutRestore(), nil
	}
	rw := rewriter{mapping: input.Restore.Spec.NamespaceMapping}
	switch tag.Tag.From.Kind {
	case kindImageStreamTag, kindImageStreamImage:
		if tag.Tag.From.Namespace != "" {
			tag.Tag.From.Namespace = rw.namespace(tag.Tag.From.Namespace)
		}
	case "DockerImage":
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		host, err := a.registryHost(ctx)
		if err != nil {
			return nil, err
		}
		if from := hostOf(tag.Tag.From.Name); from == host || from == tag.Annotations[AnnotationRegistry] {
			// An internal image: the image restore recreates the tag.
			return velero.NewRestoreItemActionExecuteOutput(input.Item).WithoutRestore(), nil
		}
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(tag)
	if err != nil {
		return nil, err
	}
	out := velero.NewRestoreItemActionExecuteOutput(&unstructured.Unstructured{Object: raw})
	if ns, name, ok := strings.Cut(tag.Annotations[AnnotationReferencedTag], "/"); ok {
		// The tag it refers to is restored first, in its mapped namespace.
		out.AdditionalItems = []velero.ResourceIdentifier{{GroupResource: imageStreamTags, Namespace: rw.namespace(ns), Name: name}}
	}
	return out, nil
}

// Progress implements the interface; the action starts no operation.
func (a *TagRestoreAction) Progress(string, *velerov1.Restore) (velero.OperationProgress, error) {
	return velero.OperationProgress{}, fmt.Errorf("%s starts no operations", TagRestoreActionName)
}

// Cancel implements the interface; the action starts no operation.
func (a *TagRestoreAction) Cancel(string, *velerov1.Restore) error { return nil }

// AreAdditionalItemsReady implements the interface.
func (a *TagRestoreAction) AreAdditionalItemsReady([]velero.ResourceIdentifier, *velerov1.Restore) (bool, error) {
	return true, nil
}

// SkipAction is a RestoreItemAction that restores nothing of the resources it applies to:
// ImageTags, which OpenShift derives, and ImageStreamsBackups, which travel in a Velero backup
// for the record only: restored, one would start a new image backup on the target cluster from
// a registry that lacks the images.
type SkipAction struct {
	name     string
	resource string
}

// NewImageTagSkipAction skips imagetags.
func NewImageTagSkipAction() *SkipAction {
	return &SkipAction{name: ImageTagSkipActionName, resource: "imagetags.image.openshift.io"}
}

// NewBackupSkipAction skips imagestreamsbackups.
func NewBackupSkipAction() *SkipAction {
	return &SkipAction{name: BackupSkipActionName, resource: "imagestreamsbackups.oadp.openshift.io"}
}

// Name implements the RestoreItemAction interface.
func (a *SkipAction) Name() string { return a.name }

// AppliesTo selects the skipped resource.
func (a *SkipAction) AppliesTo() (velero.ResourceSelector, error) {
	return velero.ResourceSelector{IncludedResources: []string{a.resource}}, nil
}

// Execute skips the item.
func (a *SkipAction) Execute(input *velero.RestoreItemActionExecuteInput) (*velero.RestoreItemActionExecuteOutput, error) {
	return velero.NewRestoreItemActionExecuteOutput(input.Item).WithoutRestore(), nil
}

// Progress implements the interface; the action starts no operation.
func (a *SkipAction) Progress(string, *velerov1.Restore) (velero.OperationProgress, error) {
	return velero.OperationProgress{}, fmt.Errorf("%s starts no operations", a.name)
}

// Cancel implements the interface.
func (a *SkipAction) Cancel(string, *velerov1.Restore) error { return nil }

// AreAdditionalItemsReady implements the interface.
func (a *SkipAction) AreAdditionalItemsReady([]velero.ResourceIdentifier, *velerov1.Restore) (bool, error) {
	return true, nil
}
