package controllers_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/workerpod"
)

// The workers' ops port admits the operator always, and the peers of
// --worker-ops-peers (the monitoring namespace's Prometheus here) instead
// of the default Prometheus peer.
func TestWorkerOpsPeersFromFlag(t *testing.T) {
	peers, err := controllers.ParseOpsPeers(`[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}},` +
		`"podSelector":{"matchExpressions":[{"key":"app.kubernetes.io/name","operator":"In","values":["prometheus"]}]}},` +
		`{"ipBlock":{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}}]`)
	if err != nil {
		t.Fatal(err)
	}
	c := &v1.CallCampaign{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "spree", UID: "u1"}}
	np := controllers.WorkerDefaults{OpsPeers: peers}.NetworkPolicy(c)
	in := np.Spec.Ingress
	if len(in) != 2 || len(in[0].From) != 0 || in[1].Ports[0].Port.IntValue() != workerpod.OpsPort {
		t.Fatalf("ingress = %+v, want the callbacks port open and the ops port limited", in)
	}
	from := in[1].From
	if len(from) != 3 {
		t.Fatalf("ops peers = %d, want the operator and the two of the flag", len(from))
	}
	if from[0].PodSelector.MatchLabels[controllers.LabelComponent] != "operator" {
		t.Errorf("the first ops peer is not the operator: %+v", from[0])
	}
	if from[1].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" ||
		len(from[1].PodSelector.MatchExpressions) != 1 || from[1].PodSelector.MatchExpressions[0].Values[0] != "prometheus" {
		t.Errorf("the monitoring peer = %+v", from[1])
	}
	if from[2].IPBlock == nil || *from[2].IPBlock.CIDR != "10.0.0.0/8" || from[2].IPBlock.Except[0] != "10.1.0.0/16" {
		t.Errorf("the ipBlock peer = %+v", from[2])
	}

	// Without the flag: the operator and Prometheus pods in any namespace.
	from = controllers.WorkerDefaults{}.NetworkPolicy(c).Spec.Ingress[1].From
	if len(from) != 2 || from[1].PodSelector.MatchLabels[controllers.LabelName] != "prometheus" || from[1].NamespaceSelector == nil {
		t.Errorf("default ops peers = %+v", from)
	}

	for _, bad := range []string{`{}`, `[{}]`, `[{"podSelector":{"matchLabels":{"a":"b"}},"extra":1}]`,
		`[{"podSelector":{"matchExpressions":[{"key":"a","operator":"Sometimes"}]}}]`,
		// ipBlock as the apiserver checks it: else every worker
		// NetworkPolicy would fail, instead of the operator's start.
		`[{"ipBlock":{"cidr":"not-a-cidr"}}]`, `[{"ipBlock":{"cidr":"10.0.0.1"}}]`,
		`[{"ipBlock":{"cidr":"10.0.0.0/8","except":["11.0.0.0/16"]}}]`,
		`[{"ipBlock":{"cidr":"10.0.0.0/8","except":["10.0.0.0/8"]}}]`,
		`[{"ipBlock":{"cidr":"10.0.0.0/8","except":["fd00::/64"]}}]`,
		`[{"ipBlock":{"cidr":"10.0.0.0/8"},"podSelector":{}}]`,
		`[{"podSelector":{}}] [{"ipBlock":{}}]`} {
		if _, err := controllers.ParseOpsPeers(bad); err == nil {
			t.Errorf("ParseOpsPeers(%s) accepted it", bad)
		}
	}
	if p, err := controllers.ParseOpsPeers(""); err != nil || p != nil {
		t.Errorf("ParseOpsPeers(\"\") = %v, %v; want none (the default)", p, err)
	}
}
