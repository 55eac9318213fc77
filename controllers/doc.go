// Package controllers holds DelAuto's reconcilers: the Delivery controller
// plans every call, the CallCampaign controller owns and scales the per-shard
// worker Deployments.
package controllers

// RBAC the operator needs for the DelAuto API. Markers for the objects each
// reconciler owns live next to it.

// +kubebuilder:rbac:groups=delauto.io,resources=deliveries;callcampaigns,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=delauto.io,resources=deliveries/status;callcampaigns/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=delauto.io,resources=deliveries/finalizers;callcampaigns/finalizers,verbs=update
// +kubebuilder:rbac:groups=delauto.io,resources=deliveries,verbs=delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
