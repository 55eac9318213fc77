package controllers

import (
	appsv1 "k8s.io/api/apps/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
)

// DesiredReplicas is the one place that decides a shard's worker replicas;
// nothing else writes them, so the controller never fights itself.
//
// A suspended or degraded campaign runs no workers: the Deployment scales
// to zero, each worker drains (finishes its calls, keeps the queue) on
// SIGTERM, and calling resumes when the campaign is resumed or fixed.
// Otherwise the shard runs the campaign's minimum, at least one worker
// (load-based scaling builds on this function).
func DesiredReplicas(c *v1.CallCampaign, shard string, degraded bool, current *appsv1.Deployment) int32 {
	if c.Spec.Suspend || degraded {
		return 0
	}
	min := int32(1)
	if c.Spec.Workers.MinReplicas != nil {
		min = *c.Spec.Workers.MinReplicas
	}
	if min < 1 {
		min = 1
	}
	if max := c.Spec.Workers.MaxReplicas; max > 0 && min > max {
		min = max
	}
	return min
}
