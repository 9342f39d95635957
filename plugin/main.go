// Command imagestreams-backup-plugin is the Velero plugin: it records the internal images of
// imagestreams in ImageStreamsBackups while Velero backs them up, brings them back through
// ImageStreamsRestores when Velero restores, and removes them when Velero deletes a backup. It
// never copies images itself; the worker does.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/openshift/oadp-imagestreams-backup/internal/action"
)

func main() {
	var queued flushers
	framework.NewServer().
		RegisterBackupItemActionV2(action.BackupActionName, withClient(func(log logrus.FieldLogger, c client.Client) any {
			return hold(&queued, action.NewBackupAction(log, c, action.RegistryHost(c)))
		})).
		RegisterBackupItemActionV2(action.TagBackupActionName, withClient(func(log logrus.FieldLogger, c client.Client) any {
			return action.NewTagBackupAction(log, action.RegistryHost(c))
		})).
		RegisterRestoreItemActionV2(action.RestoreActionName, withClient(func(log logrus.FieldLogger, c client.Client) any {
			return hold(&queued, action.NewRestoreAction(log, c, action.RegistryHost(c)))
		})).
		RegisterRestoreItemActionV2(action.TagRestoreActionName, withClient(
			func(log logrus.FieldLogger, c client.Client) any {
				return action.NewTagRestoreAction(log, action.RegistryHost(c))
			})).
		RegisterRestoreItemActionV2(action.ImageTagSkipActionName, func(logrus.FieldLogger) (any, error) {
			return action.NewImageTagSkipAction(), nil
		}).
		RegisterRestoreItemActionV2(action.BackupSkipActionName, func(logrus.FieldLogger) (any, error) {
			return action.NewBackupSkipAction(), nil
		}).
		RegisterDeleteItemAction(action.DeleteActionName, withClient(func(log logrus.FieldLogger, c client.Client) any {
			return action.NewDeleteAction(log, c)
		})).
		Serve()

	// Velero stops the plugin at the end of a backup or restore and kills it two seconds later;
	// what the actions queued is written before then.
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if err := queued.flush(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "imagestreams-backup-plugin: stopped before writing everything it recorded:", err)
		os.Exit(1)
	}
}

// flusher is an action whose Execute queues writes that only Flush is sure to make.
type flusher interface {
	Flush(ctx context.Context) error
}

// flushers are the actions of this process that queue writes, for main to flush when Velero
// stops the plugin. Velero creates each action on first use, from a gRPC handler.
type flushers struct {
	mu  sync.Mutex
	all []flusher
}

// hold adds a to fs and returns it.
func hold[F flusher](fs *flushers, a F) F {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.all = append(fs.all, a)
	return a
}

// flush writes what every held action queued, waiting until it is written or ctx ends.
func (fs *flushers) flush(ctx context.Context) error {
	fs.mu.Lock()
	all := append([]flusher(nil), fs.all...)
	fs.mu.Unlock()
	errs := make([]error, 0, len(all))
	for _, f := range all {
		errs = append(errs, f.Flush(ctx))
	}
	return errors.Join(errs...)
}

// withClient gives an action a client from the kubeconfig Velero runs with ($KUBECONFIG) or
// the pod's service account.
func withClient(build func(logrus.FieldLogger, client.Client) any) func(logrus.FieldLogger) (any, error) {
	return func(log logrus.FieldLogger) (any, error) {
		cfg, err := config.GetConfig()
		if err != nil {
			return nil, err
		}
		c, err := action.NewClient(cfg)
		if err != nil {
			return nil, err
		}
		return build(log, c), nil
	}
}
