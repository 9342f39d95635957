// Command noopplugin is a Velero plugin whose BackupItemAction on imagestreams returns every
// item unchanged and starts nothing. The scale benchmark times Velero with it to tell what calling
// any plugin for every imagestream costs Velero from what this project's plugin adds to that.
package main

import (
	"errors"

	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	biav2 "github.com/vmware-tanzu/velero/pkg/plugin/velero/backupitemaction/v2"
	"k8s.io/apimachinery/pkg/runtime"
)

func main() {
	framework.NewServer().
		RegisterBackupItemActionV2("bench.oadp.openshift.io/noop", func(logrus.FieldLogger) (any, error) { return noop{}, nil }).
		Serve()
}

type noop struct{}

var _ biav2.BackupItemAction = noop{}

func (noop) Name() string { return "bench.oadp.openshift.io/noop" }

func (noop) AppliesTo() (velero.ResourceSelector, error) {
	return velero.ResourceSelector{IncludedResources: []string{"imagestreams.image.openshift.io"}}, nil
}

func (noop) Execute(item runtime.Unstructured, _ *velerov1.Backup) (runtime.Unstructured, []velero.ResourceIdentifier, string, []velero.ResourceIdentifier, error) {
	return item, nil, "", nil, nil
}

func (noop) Progress(string, *velerov1.Backup) (velero.OperationProgress, error) {
	return velero.OperationProgress{}, errors.New("the no-op plugin starts no operations")
}

func (noop) Cancel(string, *velerov1.Backup) error { return nil }
