package controller_test

import (
	"encoding/json"

	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

type eventsList struct{ l eventsv1.EventList }

func (e *eventsList) list() client.ObjectList { return &e.l }

func (e *eventsList) text() string {
	b, _ := json.Marshal(e.l.Items)
	return string(b)
}
