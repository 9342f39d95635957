package action

import (
	"context"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// applier writes entries into shared objects with server-side apply. Velero's item-block
// workers call one plugin process concurrently, all writing into the same object; applies to
// one object are serialized here, because the API server retries concurrent writes to one
// object internally and, fifty deep, times out. Writers in other processes (other backups)
// touch other objects, and field managers keep even those apart; what still fails for load is
// retried.
type applier struct {
	client client.Client

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

func newApplier(c client.Client) *applier {
	return &applier{client: c, locks: map[string]*sync.Mutex{}}
}

func (a *applier) lock(key string) *sync.Mutex {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.locks[key]
	if !ok {
		l = &sync.Mutex{}
		a.locks[key] = l
	}
	return l
}

func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured, manager string) error {
	l := a.lock(obj.GetKind() + "/" + obj.GetNamespace() + "/" + obj.GetName())
	l.Lock()
	defer l.Unlock()
	return retry.OnError(retry.DefaultBackoff, transientAPIError, func() error {
		return a.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(manager), client.ForceOwnership)
	})
}

func transientAPIError(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err)
}
