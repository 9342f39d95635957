package controller

import (
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
)

// recordEnd announces that a backup or restore (kind) reached a terminal phase: an Event,
// the duration metric and a log line.
func recordEnd(rec events.EventRecorder, logger logr.Logger, obj runtime.Object, kind, phase string, completed bool, msg string, start time.Time) {
	eventType := corev1.EventTypeNormal
	if !completed {
		eventType = corev1.EventTypeWarning
	}
	rec.Eventf(obj, nil, eventType, phase, kind, msg)
	runDuration.WithLabelValues(strings.ToLower(kind), phase).Observe(time.Since(start).Seconds())
	logger.Info(kind+" finished", "phase", phase, "message", msg)
}
