package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/retention"
	"github.com/delauto/delauto/internal/workerpod"
	"github.com/delauto/delauto/workers/store"
)

// retentionFlags configure the operator's call log janitor.
type retentionFlags struct {
	interval      time.Duration
	batch         int
	recordingLead time.Duration
	twilioBaseURL string
}

func (f *retentionFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.interval, "retention-interval", time.Minute, "how often the leader deletes due recordings at Twilio and, without TTL indexes, purges expired calls")
	fs.IntVar(&f.batch, "retention-batch", 500, "most calls read or deleted at once by the retention pass")
	fs.DurationVar(&f.recordingLead, "recording-lead", time.Hour, "delete recordings at Twilio this long before their call expires, so a TTL index never removes a call whose recordings remain")
	fs.StringVar(&f.twilioBaseURL, "twilio-base-url", os.Getenv(workerpod.EnvTwilioBaseURL), "send the Twilio requests that delete recordings to this server instead of Twilio, e.g. the simulator (env "+workerpod.EnvTwilioBaseURL+")")
}

func (f *retentionFlags) validate() error {
	if f.interval <= 0 || f.batch <= 0 || f.recordingLead <= 0 {
		return fmt.Errorf("--retention-interval, --retention-batch and --recording-lead must be positive")
	}
	return nil
}

// addJanitor runs the call log janitor on the leader.
func (f *retentionFlags) addJanitor(mgr ctrl.Manager, callLog *store.Store) error {
	return mgr.Add(&retention.Janitor{
		Store:         callLog,
		Accounts:      &retention.KubeAccounts{Reader: mgr.GetAPIReader(), BaseURL: f.twilioBaseURL},
		AfterRelay:    func(ctx context.Context) ([]string, error) { return afterRelayCampaigns(ctx, mgr) },
		Interval:      f.interval,
		Batch:         f.batch,
		RecordingLead: f.recordingLead,
		Metrics:       retention.NewMetrics(ctrlmetrics.Registry),
		Log:           ctrl.Log.WithName("retention"),
	})
}

// afterRelayCampaigns lists the campaigns that delete recordings once the agent was told.
func afterRelayCampaigns(ctx context.Context, mgr ctrl.Manager) ([]string, error) {
	var list v1.CallCampaignList
	if err := mgr.GetClient().List(ctx, &list); err != nil {
		return nil, err
	}
	var out []string
	for _, c := range list.Items {
		if c.Spec.RecordingDeletion == v1.RecordingsAfterRelay {
			out = append(out, c.Namespace+"/"+c.Name)
		}
	}
	return out, nil
}
