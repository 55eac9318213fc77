package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callrate"
)

// Twilio refusing the campaign's calls for its configuration (21210: caller
// ID not verified, 21212, 21215, credentials) is flagged by the workers; the
// campaign turns Degraded with the code, its workers keep running (the
// attempts wait), and the condition clears once the flag is gone.
func TestCampaignDegradedWhenTwilioRefusesItsConfiguration(t *testing.T) {
	_, ns := startCampaignController(t)
	ctx := context.Background()
	if err := env.Kube.Client.Create(ctx, twilioSecret(ns)); err != nil {
		t.Fatal(err)
	}
	campaign := newCampaign(ns, 1)
	if err := env.Kube.Client.Create(ctx, campaign); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(campaign)
	eventually(t, 10*time.Second, "Degraded AsExpected", func() error {
		return hasCondition(getCampaign(t, key).Status.Conditions, v1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
	})
	rdb := env.Redis.Client()
	defer rdb.Close()
	if err := callrate.MarkDialError(ctx, rdb, ns, campaign.Name, callrate.DialError{Code: 21210,
		Message: "The source phone number provided, +49*******670, is not yet verified for your account", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Degraded TwilioRefusedCalls with the code", func() error {
		got := getCampaign(t, key)
		if err := hasCondition(got.Status.Conditions, v1.ConditionDegraded, metav1.ConditionTrue, "TwilioRefusedCalls"); err != nil {
			return err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == v1.ConditionDegraded && !strings.Contains(c.Message, "error 21210") {
				return fmt.Errorf("Degraded message %q lacks the code", c.Message)
			}
		}
		return hasCondition(got.Status.Conditions, v1.ConditionReady, metav1.ConditionFalse, "Degraded")
	})
	if ds, _ := workerDeployments(ns); len(ds) != 1 || *ds[0].Spec.Replicas != 2 {
		t.Errorf("workers while Twilio refuses the configuration: %v; want them kept (attempts wait)", ds)
	}
	// Fixed (the flag expires when no dial hits the error any more).
	if err := rdb.Del(ctx, "{rate:"+ns+"/"+campaign.Name+"}:dialerror").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Degraded AsExpected again", func() error {
		return hasCondition(getCampaign(t, key).Status.Conditions, v1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
	})
}
