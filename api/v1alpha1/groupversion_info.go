// Package v1alpha1 holds the ImageStreamsBackup and ImageStreamsRestore API of group
// oadp.openshift.io.
//
// +kubebuilder:object:generate=true
// +groupName=oadp.openshift.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "oadp.openshift.io", Version: "v1alpha1"}

	// SchemeBuilder registers this package's kinds with a runtime.Scheme. It uses
	// apimachinery alone, so that importing the API pulls in no controller library.
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &ImageStreamsBackup{}, &ImageStreamsBackupList{}, &ImageStreamsRestore{}, &ImageStreamsRestoreList{})
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})

	// AddToScheme adds this package's kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
