package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// labelKind labels metrics of backups ("backup") and restores ("restore") apart.
const labelKind = "kind"

// Metrics on the manager's metrics endpoint.
var (
	bytesCopied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imagestreams_backup_bytes_copied_total",
		Help: "Bytes written to object storage (backup) or sent to the registry (restore).",
	}, []string{labelKind})
	bytesSkipped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imagestreams_backup_bytes_skipped_total",
		Help: "Bytes not copied because the destination already held them.",
	}, []string{labelKind})
	imagesProcessed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imagestreams_backup_images_total",
		Help: "Images copied, by result (done or failed).",
	}, []string{labelKind, "result"})
	runDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "imagestreams_backup_duration_seconds",
		Help:    "Duration of backups and restores from start to terminal phase.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 10),
	}, []string{labelKind, "phase"})
	gcRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imagestreams_backup_gc_runs_total",
		Help: "Garbage collections of a location, by result (completed, deferred while backups were in progress, or failed).",
	}, []string{"result"})
	gcBlobsDeleted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "imagestreams_backup_gc_blobs_deleted_total",
		Help: "Blobs that garbage collections removed because no backup referenced them.",
	})
)

func init() {
	metrics.Registry.MustRegister(bytesCopied, bytesSkipped, imagesProcessed, runDuration, gcRuns, gcBlobsDeleted)
}
