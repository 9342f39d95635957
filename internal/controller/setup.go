package controller

import (
	"fmt"
	"time"

	"github.com/go-logr/logr"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/openshift/oadp-imagestreams-backup/internal/cluster"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
)

// defaultGCDelay is how long a garbage collection waits for more requests: `velero backup
// delete` marks the parts of a backup one after another within moments.
const defaultGCDelay = 3 * time.Second

// ManagerOptions configure NewManager.
type ManagerOptions struct {
	Config
	MetricsAddress, HealthProbeAddress string
	// PprofAddress serves net/http/pprof when set; "" and "0" disable it.
	PprofAddress   string
	LeaderElection bool
	// Logger is the worker's logger; controller-runtime's global logger when zero.
	Logger logr.Logger
	// SeveralPerProcess lets one process run several workers one after another, as tests
	// do; controller-runtime otherwise refuses a controller name it has seen.
	SeveralPerProcess bool
	// NewClient builds the client the reconcilers read (through the cache) and write with;
	// controller-runtime's client.New when nil.
	NewClient client.NewClientFunc
}

// NewManager builds the worker: both reconcilers, watching ImageStreamsBackups and
// ImageStreamsRestores in the worker's own namespace only, with health probes and metrics.
func NewManager(cfg *rest.Config, o ManagerOptions) (manager.Manager, error) {
	if o.Namespace == "" {
		return nil, fmt.Errorf("the worker's namespace is unknown: set POD_NAMESPACE or --namespace")
	}
	if o.VeleroNamespace == "" {
		o.VeleroNamespace = o.Namespace
	}
	// Backups and restores running at once (the parts of a large Velero backup) share one set
	// of transfer slots, so the worker's memory does not grow with their number.
	jobs := o.Registry.Jobs
	if jobs <= 0 {
		jobs = copier.DefaultJobs
	}
	o.Registry.slots = make(chan struct{}, jobs)
	o.Registry.smallSlots = make(chan struct{}, copier.SmallBlobsPerJob*jobs)
	o.progressWrites = newProgressLimiter(o.ProgressInterval)
	if o.GCDelay <= 0 {
		o.GCDelay = defaultGCDelay
	}
	scheme, err := cluster.NewScheme()
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Logger:                  o.Logger,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddress},
		HealthProbeBindAddress:  o.HealthProbeAddress,
		PprofBindAddress:        o.PprofAddress,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        "imagestreams-backup-worker.oadp.openshift.io",
		LeaderElectionNamespace: o.Namespace,
		// Only the worker's own namespace is cached: resources elsewhere are never seen, and
		// the worker needs no cluster-wide list rights.
		Cache:      cache.Options{DefaultNamespaces: map[string]cache.Config{o.Namespace: {}}},
		Controller: config.Controller{SkipNameValidation: &o.SeveralPerProcess},
		NewClient:  o.NewClient,
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	if err := (&BackupReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("imagestreams-backup-worker"), Config: o.Config}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the ImageStreamsBackup controller: %w", err)
	}
	if err := (&RestoreReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("imagestreams-backup-worker"), Config: o.Config}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the ImageStreamsRestore controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, err
	}
	return mgr, nil
}
