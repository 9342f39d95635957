package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics on the manager's metrics endpoint. kind is "backup" or "restore".
var (
	bytesCopied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imagestreams_backup_bytes_copied_total",
		Help: "Bytes written to object storage (backup) or sent to the registry (restore).",
	}, []string{"kind"})
	bytesSkipped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imagestreams_backup_bytes_skipped_total",
		Help: "Bytes not copied because the destination already held them.",
	}, []string{"kind"})
	imagesProcessed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imagestreams_backup_images_total",
		Help: "Images copied, by result (done or failed).",
	}, []string{"kind", "result"})
	runDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "imagestreams_backup_duration_seconds",
		Help:    "Duration of backups and restores from start to terminal phase.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 10),
	}, []string{"kind", "phase"})
)

func init() {
	metrics.Registry.MustRegister(bytesCopied, bytesSkipped, imagesProcessed, runDuration)
}
