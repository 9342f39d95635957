// Command imagestreams-backup-plugin is the Velero plugin: it records the internal images of
// imagestreams in ImageStreamsBackups while Velero backs them up. It never copies images.
package main

import (
	"github.com/sirupsen/logrus"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/openshift/oadp-imagestreams-backup/internal/action"
)

func main() {
	framework.NewServer().
		RegisterBackupItemActionV2(action.BackupActionName, newBackupAction).
		Serve()
}

// newBackupAction builds the action with a client from the kubeconfig Velero runs with
// ($KUBECONFIG) or the pod's service account.
func newBackupAction(log logrus.FieldLogger) (interface{}, error) {
	cfg, err := config.GetConfig()
	if err != nil {
		return nil, err
	}
	c, err := action.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return action.NewBackupAction(log, c, action.RegistryHost(c)), nil
}
