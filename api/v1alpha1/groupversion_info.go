/*
Copyright 2026 The DelAuto Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Package v1alpha1 holds the DelAuto API: Delivery (a parcel whose recipient
// DelAuto phones before delivery) and CallCampaign (how, when and from which
// number to call, and how the call workers scale).
// +kubebuilder:object:generate=true
// +groupName=delauto.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the DelAuto API.
	GroupVersion = schema.GroupVersion{Group: "delauto.io", Version: "v1alpha1"}

	// SchemeBuilder registers the DelAuto types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the DelAuto types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
