// Package location resolves an ImageStreamsBackup's or ImageStreamsRestore's backupLocation
// into an object store: a Velero BackupStorageLocation by name, the default one, or a location
// described inline, with its credentials read from a Secret in the Velero namespace.
package location

import (
	"context"
	"errors"
	"fmt"
	"strings"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
)

// DefaultCredentialsSecret is the Secret Velero reads when a location names none; its key
// "cloud" holds the provider's credentials file.
const (
	DefaultCredentialsSecret = "cloud-credentials"
	DefaultCredentialsKey    = "cloud"
)

// Error is a location that cannot be used, with the condition reason that says why.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func fail(reason, format string, args ...any) error {
	return &Error{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Location is a resolved object store location.
type Location struct {
	// Name labels the location in messages: the BackupStorageLocation's name, or "inline".
	Name   string
	Bucket bucket.Config
	// Prefix is the location's prefix in the bucket; the store lives under
	// <Prefix>/plugins/imagestreams/.
	Prefix string
}

// Resolve reads loc (nil means Velero's default location) from the Velero namespace with c.
// Credentials end up only in the returned Location, never in errors.
//
// An inline location may use credentials, a Secret's or, without one, those of the provider's
// default chain (the pod's own identity), only with an endpoint that a BackupStorageLocation of
// the Velero namespace uses the same credentials with, trusting its certificate the same way:
// whoever may write an ImageStreamsBackup must not be able to send the cluster's object store
// credentials to a server of their choosing.
func Resolve(ctx context.Context, c client.Reader, veleroNamespace string, loc *oadpv1alpha1.BackupLocation) (*Location, error) {
	if loc != nil && loc.Velero != nil {
		v := loc.Velero
		out := &Location{Name: "inline", Prefix: v.ObjectStorage.Prefix, Bucket: bucket.Config{
			Provider: v.Provider, Bucket: v.ObjectStorage.Bucket, Config: v.Config, CACert: v.ObjectStorage.CACert,
		}}
		if loc.Name != "" {
			out.Name = loc.Name
		}
		if !out.Bucket.TakesCredentials() {
			return out, nil
		}
		if err := readCredentials(ctx, c, veleroNamespace, v.Credential, out); err != nil {
			return nil, err
		}
		if err := vouchedFor(ctx, c, veleroNamespace, v.Credential, out); err != nil {
			return nil, err
		}
		return out, nil
	}
	bsl, err := findBSL(ctx, c, veleroNamespace, loc)
	if err != nil {
		return nil, err
	}
	if bsl.Spec.ObjectStorage == nil {
		return nil, fail(oadpv1alpha1.ReasonInvalidLocation, "BackupStorageLocation %s/%s has no objectStorage", veleroNamespace, bsl.Name)
	}
	out := fromBSL(bsl)
	return out, readCredentials(ctx, c, veleroNamespace, bsl.Spec.Credential, out)
}

func fromBSL(bsl *velerov1.BackupStorageLocation) *Location {
	out := &Location{Name: bsl.Name, Prefix: bsl.Spec.ObjectStorage.Prefix, Bucket: bucket.Config{
		Provider: bsl.Spec.Provider, Bucket: bsl.Spec.ObjectStorage.Bucket, Config: bsl.Spec.Config, CACert: bsl.Spec.ObjectStorage.CACert,
	}}
	if ca := bsl.Spec.Config["caCert"]; len(out.Bucket.CACert) == 0 && ca != "" {
		out.Bucket.CACert = []byte(ca)
	}
	return out
}

// vouchedFor returns nil when a BackupStorageLocation uses the credentials of sel (Velero's
// default Secret when nil, or the provider's default chain when that does not exist) with
// out's endpoint and trust.
func vouchedFor(ctx context.Context, c client.Reader, ns string, sel *corev1.SecretKeySelector, out *Location) error {
	name, key := secretOf(sel)
	list := &velerov1.BackupStorageLocationList{}
	if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("listing BackupStorageLocations in %s: %w", ns, err)
	}
	for i := range list.Items {
		bsl := &list.Items[i]
		if n, k := secretOf(bsl.Spec.Credential); n != name || k != key || bsl.Spec.ObjectStorage == nil {
			continue
		}
		if b := fromBSL(bsl).Bucket; b.Endpoint() == out.Bucket.Endpoint() && b.SameTrust(out.Bucket) {
			return nil
		}
	}
	creds := fmt.Sprintf("credentials Secret %s/%s (key %s)", ns, name, key)
	if len(out.Bucket.Credentials) == 0 {
		creds = fmt.Sprintf("the credentials of the provider's default chain (there is no Secret %s/%s)", ns, name)
	}
	return fail(oadpv1alpha1.ReasonCredentialsNotAllowed, "location %s would send %s to %s, which no BackupStorageLocation in %s uses them with, "+
		"trusting its certificate the same way; name a BackupStorageLocation instead", out.Name, creds, out.Bucket.Endpoint(), ns)
}

// secretOf is the Secret and key a credential selector names, Velero's default when it names none.
func secretOf(sel *corev1.SecretKeySelector) (name, key string) {
	if sel != nil && sel.Name != "" {
		return sel.Name, sel.Key
	}
	return DefaultCredentialsSecret, DefaultCredentialsKey
}

func findBSL(ctx context.Context, c client.Reader, ns string, loc *oadpv1alpha1.BackupLocation) (*velerov1.BackupStorageLocation, error) {
	if loc != nil && loc.Name != "" {
		bsl := &velerov1.BackupStorageLocation{}
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: loc.Name}, bsl)
		if apierrors.IsNotFound(err) {
			return nil, fail(oadpv1alpha1.ReasonLocationNotFound, "BackupStorageLocation %s/%s not found", ns, loc.Name)
		}
		if apierrors.IsForbidden(err) {
			return nil, fail(oadpv1alpha1.ReasonForbidden, "the worker may not read BackupStorageLocation %s/%s; grant its role get on backupstoragelocations.velero.io: %v", ns, loc.Name, err)
		}
		if err != nil {
			return nil, fmt.Errorf("reading BackupStorageLocation %s/%s: %w", ns, loc.Name, err)
		}
		return bsl, nil
	}
	list := &velerov1.BackupStorageLocationList{}
	if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("listing BackupStorageLocations in %s: %w", ns, err)
	}
	for i := range list.Items {
		if list.Items[i].Spec.Default {
			return &list.Items[i], nil
		}
	}
	return nil, fail(oadpv1alpha1.ReasonLocationNotFound, "no backupLocation given and no BackupStorageLocation in %s is marked default", ns)
}

func readCredentials(ctx context.Context, c client.Reader, ns string, sel *corev1.SecretKeySelector, out *Location) error {
	name, key := secretOf(sel)
	explicit := sel != nil && sel.Name != ""
	secret := &corev1.Secret{}
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, secret)
	switch {
	case apierrors.IsNotFound(err) && !explicit:
		// Velero's default Secret is optional: without it the provider's own chain applies
		// (environment, workload identity).
		return nil
	case apierrors.IsNotFound(err):
		return fail(oadpv1alpha1.ReasonCredentialsNotFound, "credentials Secret %s/%s of location %s not found", ns, name, out.Name)
	case apierrors.IsForbidden(err):
		return fail(oadpv1alpha1.ReasonForbidden, "the worker may not read credentials Secret %s/%s; grant its role get on secrets in %s: %v", ns, name, ns, err)
	case err != nil:
		return fmt.Errorf("reading credentials Secret %s/%s: %w", ns, name, err)
	}
	data, ok := secret.Data[key]
	if !ok {
		return fail(oadpv1alpha1.ReasonCredentialsNotFound, "credentials Secret %s/%s has no key %q", ns, name, key)
	}
	out.Bucket.Credentials = data
	return nil
}

// Reason returns the condition reason of a location error, or fallback.
func Reason(err error, fallback string) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return fallback
}

// Key identifies the store the location reaches: two locations with the same key share their
// blobs, whatever credentials they use.
func (l *Location) Key() string {
	return strings.Join([]string{l.Bucket.Endpoint(), l.Bucket.Bucket, strings.Trim(l.Prefix, "/")}, "|")
}

// Describe is a short, credential-free description of the location for messages.
func (l *Location) Describe() string {
	return fmt.Sprintf("%s (%s://%s/%s)", l.Name, strings.TrimPrefix(l.Bucket.Provider, "velero.io/"), l.Bucket.Bucket, strings.Trim(l.Prefix, "/"))
}
