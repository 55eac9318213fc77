package controllers

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
)

// CampaignCollector exports what the operator last wrote into each
// CallCampaign's status (refreshed every --status-interval) as gauges, read
// from the manager's cache at scrape time: per-shard queue depth and
// replicas, and Deliveries by phase. Its shard label is the one the workers'
// queue metrics carry (namespace/campaign/shard), so panels and alerts can
// join them.
type CampaignCollector struct {
	// Reader lists CallCampaigns (the manager's cache).
	Reader client.Reader
}

var (
	campaignShardLabels = []string{"campaign_namespace", "campaign", "shard"}
	descDueNow          = prometheus.NewDesc("delauto_campaign_shard_due_now",
		"Attempts of the shard due now and not yet picked up by a worker.", campaignShardLabels, nil)
	descScheduled = prometheus.NewDesc("delauto_campaign_shard_scheduled",
		"Attempts of the shard planned for later.", campaignShardLabels, nil)
	descInFlight = prometheus.NewDesc("delauto_campaign_shard_in_flight",
		"Attempts of the shard workers are handling now.", campaignShardLabels, nil)
	descOldestPending = prometheus.NewDesc("delauto_campaign_shard_oldest_pending_seconds",
		"How long the shard's oldest in-flight attempt has been held (0: none).", campaignShardLabels, nil)
	descReplicas = prometheus.NewDesc("delauto_campaign_shard_replicas",
		"Worker replicas the shard's Deployment asks for.", campaignShardLabels, nil)
	descReadyReplicas = prometheus.NewDesc("delauto_campaign_shard_ready_replicas",
		"Ready worker replicas of the shard's Deployment.", campaignShardLabels, nil)
	descDeliveries = prometheus.NewDesc("delauto_campaign_deliveries",
		"The campaign's Deliveries by phase.", []string{"campaign_namespace", "campaign", "phase"}, nil)
	descSuspended = prometheus.NewDesc("delauto_campaign_suspended",
		"1 when the campaign is suspended (no calls are made).", []string{"campaign_namespace", "campaign"}, nil)
)

// Describe implements prometheus.Collector.
func (c *CampaignCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDueNow, descScheduled, descInFlight, descOldestPending, descReplicas, descReadyReplicas, descDeliveries, descSuspended} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *CampaignCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1.CallCampaignList
	if c.Reader == nil || c.Reader.List(ctx, &list) != nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, cc := range list.Items {
		suspended := 0.0
		if cc.Spec.Suspend {
			suspended = 1
		}
		gauge(descSuspended, suspended, cc.Namespace, cc.Name)
		for _, s := range cc.Status.Shards {
			l := []string{cc.Namespace, cc.Name, cc.Namespace + "/" + cc.Name + "/" + s.Name}
			gauge(descDueNow, float64(s.DueNow), l...)
			gauge(descScheduled, float64(s.Scheduled), l...)
			gauge(descInFlight, float64(s.InFlight), l...)
			age := 0.0
			if s.OldestPendingAge != nil {
				age = s.OldestPendingAge.Seconds()
			}
			gauge(descOldestPending, age, l...)
			gauge(descReplicas, float64(s.Replicas), l...)
			gauge(descReadyReplicas, float64(s.ReadyReplicas), l...)
		}
		t := cc.Status.Totals
		for phase, n := range map[v1.DeliveryPhase]int32{
			v1.DeliveryPending: t.Pending, v1.DeliveryScheduled: t.Scheduled, v1.DeliveryCalling: t.Calling,
			v1.DeliveryConfirmed: t.Confirmed, v1.DeliveryRescheduleRequested: t.RescheduleRequested,
			v1.DeliveryInstructionsRecorded: t.InstructionsRecorded, v1.DeliveryUnreachable: t.Unreachable,
			v1.DeliveryOptedOut: t.OptedOut, v1.DeliveryCancelled: t.Cancelled, v1.DeliveryFailed: t.Failed,
		} {
			gauge(descDeliveries, float64(n), cc.Namespace, cc.Name, string(phase))
		}
	}
}
