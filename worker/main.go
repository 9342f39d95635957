// Command imagestreams-backup-worker reconciles ImageStreamsBackups and ImageStreamsRestores:
// it copies the images they name between the cluster's internal registry and object storage.
//
// With a subcommand it acts on a backup location directly instead:
//
//	imagestreams-backup-worker ls|verify|export|gc --provider aws --bucket B --prefix P \
//	    --config k=v,... --credentials-file F
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/openshift/oadp-imagestreams-backup/internal/admin"
	"github.com/openshift/oadp-imagestreams-backup/internal/controller"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

func main() {
	if len(os.Args) > 1 && slices.Contains(admin.Commands, os.Args[1]) {
		if err := admin.Run(context.Background(), os.Args[1], os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		return
	}
	var o controller.ManagerOptions
	var caFile string
	flag.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"),
		"Namespace whose ImageStreamsBackups and ImageStreamsRestores are reconciled (default $POD_NAMESPACE).")
	flag.StringVar(&o.VeleroNamespace, "velero-namespace", "",
		"Namespace of Velero's BackupStorageLocations and their Secrets (default --namespace).")
	flag.StringVar(&o.Registry.Host, "registry-host", "",
		"Internal registry host[:port] (default: image.config.openshift.io/cluster status.internalRegistryHostname).")
	flag.StringVar(&caFile, "registry-ca-file", "",
		"PEM bundle that verifies the registry's certificate, e.g. the service CA.")
	flag.BoolVar(&o.Registry.Insecure, "registry-insecure", false,
		"Skip TLS verification of the registry. Not for production.")
	flag.StringVar(&o.Registry.TokenFile, "registry-token-file", "/var/run/secrets/kubernetes.io/serviceaccount/token",
		"Service account token the registry accepts; empty for anonymous.")
	flag.StringVar(&o.Registry.Username, "registry-username", "serviceaccount",
		"User name sent with the registry token.")
	flag.IntVar(&o.Registry.Jobs, "jobs", copier.DefaultJobs,
		"Blobs of 1 MiB or more, and images of a backup, copied at once; "+
			"smaller blobs, and imagestreams of a restore, four times as many.")
	flag.DurationVar(&o.ProgressInterval, "progress-interval", 10*time.Second,
		"How often a running copy writes its counters to status.")
	flag.DurationVar(&o.RetryInterval, "retry-interval", 30*time.Second,
		"How soon a resource that cannot start (missing Secret, unreachable registry) is tried again, "+
			"and a deferred garbage collection too.")
	flag.DurationVar(&o.StaleAfter, "marker-stale-after", imagestore.DefaultStaleAfter,
		"How long an in-progress or garbage collection marker in object storage counts without being refreshed; "+
			"its holder refreshes it four times as often.")
	flag.StringVar(&o.MetricsAddress, "metrics-bind-address", ":8080",
		"Address of the metrics endpoint; 0 disables it.")
	flag.StringVar(&o.HealthProbeAddress, "health-probe-bind-address", ":8081",
		"Address of the health and readiness probes.")
	flag.StringVar(&o.PprofAddress, "pprof-bind-address", "",
		"Address of the Go profiling endpoints (net/http/pprof); empty disables them.")
	flag.BoolVar(&o.LeaderElection, "leader-elect", false, "Elect a leader so that only one replica copies.")
	// Parts of a Velero backup appear all at once as Velero finishes collecting items; the
	// worker looks at them once Velero has moved on (see controller.Config.NewBackupDelay).
	o.NewBackupDelay = 3 * time.Second
	zopts := zap.Options{}
	zopts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))
	log := ctrl.Log.WithName("setup")

	if caFile != "" {
		ca, err := os.ReadFile(caFile)
		if err != nil {
			log.Error(err, "Failed to read the registry CA bundle")
			os.Exit(1)
		}
		o.Registry.CACert = ca
	}
	mgr, err := controller.NewManager(ctrl.GetConfigOrDie(), o)
	if err != nil {
		log.Error(err, "Failed to set up the worker")
		os.Exit(1)
	}
	log.Info("Starting the worker", "namespace", o.Namespace)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "Worker stopped")
		os.Exit(1)
	}
}
