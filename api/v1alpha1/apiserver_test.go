package v1alpha1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/test/testenv"
)

var env *testenv.Environment

func TestMain(m *testing.M) { testenv.Main(m, &env) }

const (
	digest  = "sha256:313df5722ddd866d43758af161e5932dfd4648b99a5c57acfddfc2a955669fe8"
	repo    = "image-registry.openshift-image-registry.svc:5000/openshift/apicast-gateway"
	goodRef = repo + "@" + digest
)

// strict refuses unknown fields instead of dropping them, so a field missing from the schema
// fails the test instead of vanishing.
func strict() client.Client {
	return client.WithFieldValidation(env.Client, metav1.FieldValidationStrict)
}

func TestSeedExamplesAreAcceptedUnchanged(t *testing.T) {
	ctx := context.Background()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "velero"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, file := range []string{"seed-imagestreamsbackup.yaml", "seed-imagestreamsrestore.yaml"} {
		t.Run(file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "test", "testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			in := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(raw, &in.Object); err != nil {
				t.Fatal(err)
			}
			want, _, _ := unstructured.NestedMap(in.DeepCopy().Object, "spec")
			if err := strict().Create(ctx, in); err != nil {
				t.Fatalf("creating the design note's example: %v", err)
			}

			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(in.GroupVersionKind())
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(in), got); err != nil {
				t.Fatal(err)
			}
			gotSpec, _, _ := unstructured.NestedMap(got.Object, "spec")
			// The schema defaults an imagestream entry's namespace to "" (it is part of the
			// entry's key); nothing else may differ.
			streams, _, _ := unstructured.NestedSlice(gotSpec, "imageStreams")
			for _, s := range streams {
				s := s.(map[string]any)
				if ns, ok := s["namespace"]; !ok || ns != "" {
					t.Errorf("imageStreams entry namespace = %v, want the default \"\"", ns)
				}
				delete(s, "namespace")
			}
			_ = unstructured.SetNestedSlice(gotSpec, streams, "imageStreams")
			if !reflect.DeepEqual(want, gotSpec) {
				w, _ := json.MarshalIndent(want, "", " ")
				g, _ := json.MarshalIndent(gotSpec, "", " ")
				t.Errorf("spec read back differs from the example\nwant: %s\ngot:  %s", w, g)
			}
		})
	}

	// The typed API reads the same objects with every field in place.
	isb := &v1.ImageStreamsBackup{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "velero", Name: "my-backup"}, isb); err != nil {
		t.Fatal(err)
	}
	s := isb.Spec
	if s.StartBackup || !s.VeleroBackupReference.StartOnCompletion || s.VeleroBackupReference.Name != "my-backup" ||
		s.VeleroBackupReference.Namespace != "my-namespace" || s.BackupLocation.Name != "default" ||
		s.BackupLocation.Velero.Provider != "aws" || !s.BackupLocation.Velero.Default ||
		s.BackupLocation.Velero.ObjectStorage.Bucket != "my-bucket" || s.BackupLocation.Velero.ObjectStorage.Prefix != "my-prefix" ||
		s.BackupLocation.Velero.Config["region"] != "us-east-1" || s.BackupLocation.Velero.Config["profile"] != "default" ||
		s.BackupLocation.Velero.Credential.Name != "my-custom-name" || s.BackupLocation.Velero.Credential.Key != "cloud" {
		t.Errorf("typed ImageStreamsBackup spec lost a field: %+v", s)
	}
	if got := s.ImageStreams[0].DockerImageReferences[0]; got.DockerImageReference != goodRef || !reflect.DeepEqual(got.Tags, []string{"latest", "v1.0.0", "v1.0.1"}) {
		t.Errorf("typed reference = %+v", got)
	}
	if got := s.ImageStreams[0].NamespaceOrDefault(); got != "openshift" {
		t.Errorf("NamespaceOrDefault() = %q, want the reference's namespace openshift", got)
	}
	isr := &v1.ImageStreamsRestore{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "velero", Name: "my-restore"}, isr); err != nil {
		t.Fatal(err)
	}
	if got := isr.Spec.BackupName(); got != "my-backup" {
		t.Errorf("restore BackupName() = %q, want my-backup", got)
	}
}

// Builders of valid objects that each test case then breaks in one way.
func newBackup(ns string, mods ...func(*v1.ImageStreamsBackup)) *v1.ImageStreamsBackup {
	b := &v1.ImageStreamsBackup{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "isb-"},
		Spec: v1.ImageStreamsBackupSpec{
			VeleroBackupReference: &v1.VeleroBackupReference{Name: "b1", StartOnCompletion: true},
			BackupLocation:        &v1.BackupLocation{Name: "default"},
			ImageStreams: []v1.ImageStream{{
				Name:                  "apicast-gateway",
				Namespace:             "openshift",
				DockerImageReferences: []v1.DockerImageReference{{DockerImageReference: goodRef, Tags: []string{"latest"}}},
			}},
		},
	}
	for _, m := range mods {
		m(b)
	}
	return b
}

func newRestore(ns string, mods ...func(*v1.ImageStreamsRestore)) *v1.ImageStreamsRestore {
	r := &v1.ImageStreamsRestore{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "isr-"},
		Spec: v1.ImageStreamsRestoreSpec{
			ImageStreamsBackupReference: &v1.ImageStreamsBackupReference{Name: "b1"},
			NamespaceMapping:            map[string]string{"openshift": "openshift-restored"},
		},
	}
	for _, m := range mods {
		m(r)
	}
	return r
}

func withReference(ref string) func(*v1.ImageStreamsBackup) {
	return func(b *v1.ImageStreamsBackup) {
		b.Spec.ImageStreams[0].DockerImageReferences[0].DockerImageReference = ref
	}
}

func withTag(tag string) func(*v1.ImageStreamsBackup) {
	return func(b *v1.ImageStreamsBackup) { b.Spec.ImageStreams[0].DockerImageReferences[0].Tags = []string{tag} }
}

func TestValidInputIsAccepted(t *testing.T) {
	ns := env.Namespace(t)
	tests := []struct {
		name string
		obj  client.Object
	}{
		{"a backup with several imagestreams, tags and an inline location", newBackup(ns, func(b *v1.ImageStreamsBackup) {
			b.Spec.BackupLocation = &v1.BackupLocation{Velero: &v1.VeleroLocation{Provider: "aws", ObjectStorage: v1.ObjectStorageLocation{Bucket: "b", Prefix: "velero/cluster-a"}}}
			b.Spec.ImageStreams = append(b.Spec.ImageStreams, v1.ImageStream{
				Name: "web", Namespace: "app",
				DockerImageReferences: []v1.DockerImageReference{
					{DockerImageReference: "localhost:5000/app/web@" + digest, Tags: []string{"latest", "v1.2.3_rc-1", "_x"}},
					{DockerImageReference: "quay.io/org/web@sha256:" + strings.Repeat("0", 64)},
				},
			}, v1.ImageStream{Name: "web", Namespace: "other"})
		})},
		{"a backup with no imagestreams yet", newBackup(ns, func(b *v1.ImageStreamsBackup) { b.Spec.ImageStreams = nil })},
		{"a restore naming its backup in the conventional spelling", newRestore(ns, func(r *v1.ImageStreamsRestore) {
			r.Spec.ImageStreamsBackupReference, r.Spec.ImageStreamsBackupReferenceAlias = nil, &v1.ImageStreamsBackupReference{Name: "b1"}
		})},
		{"a restore giving both spellings the same name", newRestore(ns, func(r *v1.ImageStreamsRestore) {
			r.Spec.ImageStreamsBackupReferenceAlias = &v1.ImageStreamsBackupReference{Name: "b1"}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := strict().Create(context.Background(), tt.obj); err != nil {
				t.Fatalf("valid object refused: %v", err)
			}
		})
	}
}

func TestBadInputIsRefusedWithAClearMessage(t *testing.T) {
	ns := env.Namespace(t)
	refField := "spec.imageStreams[0].dockerImageReferences[0].dockerImageReference"
	tests := []struct {
		name string
		obj  client.Object
		want []string // substrings of the API server's message
	}{
		{"a tag reference", newBackup(ns, withReference(repo+":latest")), []string{refField, repo + ":latest", "should match"}},
		{"a digest one character short", newBackup(ns, withReference(goodRef[:len(goodRef)-1])), []string{refField, "should match"}},
		{"a digest one character long", newBackup(ns, withReference(goodRef+"0")), []string{refField, "should match"}},
		{"a sha512 digest", newBackup(ns, withReference(repo+"@sha512:"+strings.Repeat("a", 128))), []string{refField, "should match"}},
		{"a digest in upper case", newBackup(ns, withReference(strings.ToUpper(goodRef))), []string{refField, "should match"}},
		{"a bare digest without repository", newBackup(ns, withReference(digest)), []string{refField, "should match"}},
		{"an empty imagestream name", newBackup(ns, func(b *v1.ImageStreamsBackup) { b.Spec.ImageStreams[0].Name = "" }),
			[]string{"spec.imageStreams[0].name", "at least 1 chars long"}},
		{"an imagestream name with a slash", newBackup(ns, func(b *v1.ImageStreamsBackup) { b.Spec.ImageStreams[0].Name = "a/b" }),
			[]string{"spec.imageStreams[0].name", "should match"}},
		{"a tag starting with a dash", newBackup(ns, withTag("-latest")), []string{"spec.imageStreams[0].dockerImageReferences[0].tags[0]", "should match"}},
		{"a tag with a colon", newBackup(ns, withTag("v1:2")), []string{"tags[0]", "should match"}},
		{"a tag of 129 characters", newBackup(ns, withTag(strings.Repeat("a", 129))), []string{"tags[0]", "Too long"}},
		{"the same tag twice on one image", newBackup(ns, func(b *v1.ImageStreamsBackup) {
			b.Spec.ImageStreams[0].DockerImageReferences[0].Tags = []string{"latest", "latest"}
		}), []string{"tags[1]", "Duplicate value"}},
		{"the same imagestream listed twice", newBackup(ns, func(b *v1.ImageStreamsBackup) {
			b.Spec.ImageStreams = append(b.Spec.ImageStreams, b.Spec.ImageStreams[0])
		}), []string{"spec.imageStreams[1]", "Duplicate value"}},
		{"an empty Velero backup name", newBackup(ns, func(b *v1.ImageStreamsBackup) { b.Spec.VeleroBackupReference.Name = "" }),
			[]string{"spec.veleroBackupReference.name", "at least 1 chars long"}},
		{"a prefix that climbs out of the bucket", newBackup(ns, func(b *v1.ImageStreamsBackup) {
			b.Spec.BackupLocation = &v1.BackupLocation{Velero: &v1.VeleroLocation{Provider: "aws", ObjectStorage: v1.ObjectStorageLocation{Bucket: "b", Prefix: "velero/../other"}}}
		}), []string{"spec.backupLocation.velero.objectStorage.prefix", "must not contain '.' or '..'"}},
		{"an inline location without bucket", newBackup(ns, func(b *v1.ImageStreamsBackup) {
			b.Spec.BackupLocation = &v1.BackupLocation{Velero: &v1.VeleroLocation{Provider: "aws"}}
		}), []string{"spec.backupLocation.velero.objectStorage.bucket", "at least 1 chars long"}},
		{"a restore of a backup named with ..", newRestore(ns, func(r *v1.ImageStreamsRestore) {
			r.Spec.ImageStreamsBackupReference = &v1.ImageStreamsBackupReference{Name: "../other-cluster"}
		}), []string{"spec.ImageStreamsBackupReference.name", "should match"}},
		{"a restore of a backup named with a slash", newRestore(ns, func(r *v1.ImageStreamsRestore) {
			r.Spec.ImageStreamsBackupReference = &v1.ImageStreamsBackupReference{Name: "a/b"}
		}), []string{"spec.ImageStreamsBackupReference.name", "should match"}},
		{"a restore of a backup named with 300 characters", newRestore(ns, func(r *v1.ImageStreamsRestore) {
			r.Spec.ImageStreamsBackupReference = &v1.ImageStreamsBackupReference{Name: strings.Repeat("a", 300)}
		}), []string{"spec.ImageStreamsBackupReference.name", "Too long"}},
		{"a backup named with 300 characters", newBackup(ns, func(b *v1.ImageStreamsBackup) { b.Name = strings.Repeat("a", 300) }),
			[]string{"metadata.name", "must be no more than 253 characters"}},
		{"a backup named with ..", newBackup(ns, func(b *v1.ImageStreamsBackup) { b.Name = "a..b" }),
			[]string{"metadata.name", "a lowercase RFC 1123 subdomain"}},
		{"a restore that names no backup", newRestore(ns, func(r *v1.ImageStreamsRestore) { r.Spec.ImageStreamsBackupReference = nil }),
			[]string{"ImageStreamsBackupReference is required"}},
		{"a restore whose two spellings disagree", newRestore(ns, func(r *v1.ImageStreamsRestore) {
			r.Spec.ImageStreamsBackupReferenceAlias = &v1.ImageStreamsBackupReference{Name: "b2"}
		}), []string{"one field spelled two ways and must name the same backup"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectInvalid(t, strict().Create(context.Background(), tt.obj), tt.want...)
		})
	}
}

func TestStatusPhasesAreEnumerated(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	b := newBackup(ns)
	r := newRestore(ns)
	for _, o := range []client.Object{b, r} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	b.Status.Phase = v1.BackupPhaseCompleted
	if err := env.Client.Status().Update(ctx, b); err != nil {
		t.Fatalf("a known phase was refused: %v", err)
	}
	b.Status.Phase = "Running"
	expectInvalid(t, env.Client.Status().Update(ctx, b), "status.phase", `Unsupported value: "Running"`)

	// WaitingForVeleroBackup is a backup phase only.
	r.Status.Phase = v1.RestorePhase(v1.BackupPhaseWaitingForVeleroBackup)
	expectInvalid(t, env.Client.Status().Update(ctx, r), "status.phase", "Unsupported value")

	// A restore reads one backup for its whole life.
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(r), r); err != nil {
		t.Fatal(err)
	}
	r.Spec.ImageStreamsBackupReference.Name = "another"
	expectInvalid(t, env.Client.Update(ctx, r), "the backup a restore reads cannot change")

	// A request to delete a backup's stored images cannot be taken back: the deletion may
	// have begun.
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(b), b); err != nil {
		t.Fatal(err)
	}
	b.Spec.DeleteStoredImages = true
	if err := env.Client.Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Spec.DeleteStoredImages = false
	expectInvalid(t, env.Client.Update(ctx, b), "deleteStoredImages cannot be unset")
}

func expectInvalid(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the API server accepted it; want an error containing %q", want)
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("error is not Invalid: %v", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err.Error(), w)
		}
	}
}

// applyImageStream is one writer's server-side apply of a single imagestream entry, as the
// Velero plugin's item-block workers do.
func applyImageStream(ctx context.Context, ns, name, manager string, is v1.ImageStream) error {
	entry := map[string]any{"name": is.Name, "namespace": is.Namespace}
	var refs []any
	for _, r := range is.DockerImageReferences {
		tags := make([]any, len(r.Tags))
		for i, t := range r.Tags {
			tags[i] = t
		}
		refs = append(refs, map[string]any{"dockerImageReference": r.DockerImageReference, "tags": tags})
	}
	entry["dockerImageReferences"] = refs
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1.GroupVersion.String(),
		"kind":       "ImageStreamsBackup",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       map[string]any{"imageStreams": []any{entry}},
	}}
	return env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(manager))
}

func TestServerSideApplyWritersKeepEachOthersImageStreams(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	ref := func(n int) v1.DockerImageReference {
		return v1.DockerImageReference{DockerImageReference: fmt.Sprintf("r:5000/app/is@sha256:%064x", n), Tags: []string{fmt.Sprintf("t%d", n)}}
	}
	writes := []struct {
		manager string
		is      v1.ImageStream
	}{
		{"writer-a", v1.ImageStream{Namespace: "app", Name: "a", DockerImageReferences: []v1.DockerImageReference{ref(1)}}},
		{"writer-b", v1.ImageStream{Namespace: "app", Name: "b", DockerImageReferences: []v1.DockerImageReference{ref(2)}}},
		// Same name in another namespace is another entry.
		{"writer-c", v1.ImageStream{Namespace: "app2", Name: "a", DockerImageReferences: []v1.DockerImageReference{ref(3)}}},
		// writer-a applies again with more images: its entry changes, the others stay.
		{"writer-a", v1.ImageStream{Namespace: "app", Name: "a", DockerImageReferences: []v1.DockerImageReference{ref(1), ref(4)}}},
	}
	for _, w := range writes {
		if err := applyImageStream(ctx, ns, "b1", w.manager, w.is); err != nil {
			t.Fatalf("%s applying %s/%s: %v", w.manager, w.is.Namespace, w.is.Name, err)
		}
	}

	got := &v1.ImageStreamsBackup{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "b1"}, got); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"app/a":  {ref(1).DockerImageReference, ref(4).DockerImageReference},
		"app/b":  {ref(2).DockerImageReference},
		"app2/a": {ref(3).DockerImageReference},
	}
	have := map[string][]string{}
	for _, is := range got.Spec.ImageStreams {
		for _, r := range is.DockerImageReferences {
			have[is.Namespace+"/"+is.Name] = append(have[is.Namespace+"/"+is.Name], r.DockerImageReference)
		}
	}
	if !reflect.DeepEqual(have, want) {
		t.Errorf("imageStreams after four applies = %v, want %v", have, want)
	}
}

func TestPrinterColumnsShowProgress(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	b := newBackup(ns)
	if err := env.Client.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Status.Phase = v1.BackupPhaseInProgress
	b.Status.Progress = v1.Progress{ImagesTotal: 5, ImagesDone: 3, ImagesFailed: 1, BytesUploaded: 1234567, BytesSkipped: 42}
	if err := env.Client.Status().Update(ctx, b); err != nil {
		t.Fatal(err)
	}

	// kubectl get asks the API server for a Table; ask the same way.
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := rest.DefaultServerUrlFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	host.Path = "/apis/oadp.openshift.io/v1alpha1/namespaces/" + ns + "/imagestreamsbackups"
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, host.String(), nil)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	if len(table.Rows) != 1 {
		t.Fatalf("table has %d rows, want 1", len(table.Rows))
	}
	cells := map[string]any{}
	for i, c := range table.ColumnDefinitions {
		if c.Priority == 0 {
			cells[c.Name] = table.Rows[0].Cells[i]
		}
	}
	want := map[string]any{"Phase": "InProgress", "Images": float64(3), "Total": float64(5), "Failed": float64(1), "Bytes": float64(1234567)}
	for k, v := range want {
		if cells[k] != v {
			t.Errorf("column %s = %v, want %v (row %v)", k, cells[k], v, cells)
		}
	}
	if _, ok := cells["Age"]; !ok {
		t.Errorf("no Age column in %v", cells)
	}
}
