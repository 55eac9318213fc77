// Package retention ends the life of the call log's personal data: it
// deletes recordings and their transcriptions at Twilio when their call
// expires (or right after the agent was told, if the campaign says so),
// purges expired attempts where the server has no TTL index (Janitor, run
// on the operator's leader), and erases a person's data on request (Erase).
package retention

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/twilio/twilio-go/client"
	api "github.com/twilio/twilio-go/rest/api/v2010"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/twilioclient"
)

// Recordings deletes recordings at one Twilio account.
type Recordings interface {
	// DeleteRecording deletes a recording and its transcriptions; one
	// already gone counts as deleted.
	DeleteRecording(ctx context.Context, sid string) error
}

// TwilioRecordings deletes recordings through Twilio's REST API.
type TwilioRecordings struct {
	// API is a twilio-go client of the account (twilioclient.New).
	API *api.ApiService
}

// DeleteRecording deletes the recording's transcriptions, then the
// recording; a 404 means it is already gone. (Twilio deletes a recording's
// transcription with it, but deleting them first does not depend on that.)
func (t TwilioRecordings) DeleteRecording(_ context.Context, sid string) error {
	trs, err := t.API.ListRecordingTranscription(sid, (&api.ListRecordingTranscriptionParams{}).SetPageSize(50).SetLimit(200))
	if err != nil && !notFound(err) {
		return fmt.Errorf("list the transcriptions of recording %s: %w", sid, err)
	}
	for _, tr := range trs {
		if tr.Sid == nil {
			continue
		}
		if err := t.API.DeleteTranscription(*tr.Sid, nil); err != nil && !notFound(err) {
			return fmt.Errorf("delete transcription %s of recording %s: %w", *tr.Sid, sid, err)
		}
	}
	if err := t.API.DeleteRecording(sid, nil); err != nil && !notFound(err) {
		return fmt.Errorf("delete recording %s: %w", sid, err)
	}
	return nil
}

func notFound(err error) bool {
	var re *client.TwilioRestError
	return errors.As(err, &re) && re.Status == http.StatusNotFound
}

// Accounts finds the Twilio account of a campaign's recordings.
type Accounts interface {
	// Recordings returns the deleter of the campaign's (namespace/name)
	// account.
	Recordings(ctx context.Context, campaign string) (Recordings, error)
}

// KubeAccounts reads each campaign's Twilio credentials from its Secret.
type KubeAccounts struct {
	// Reader reads CallCampaigns and Secrets (the operator passes its API
	// reader: Secrets are not cached).
	Reader ctrlclient.Reader
	// BaseURL sends the requests to another Twilio-compatible server (the
	// simulator); empty is Twilio.
	BaseURL string
	// Timeout bounds one request; 0 is twilioclient.DefaultTimeout.
	Timeout time.Duration

	mu      sync.Mutex
	clients map[string]Recordings // by account SID and token
}

// Recordings reads the campaign and its Secret and returns a deleter for the
// account they name, reusing the client of an account already seen.
func (k *KubeAccounts) Recordings(ctx context.Context, campaign string) (Recordings, error) {
	ns, name, err := splitCampaign(campaign)
	if err != nil {
		return nil, err
	}
	var cc v1.CallCampaign
	if err := k.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &cc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("campaign %s no longer exists, so its Twilio account is unknown: %w", campaign, err)
		}
		return nil, fmt.Errorf("read campaign %s: %w", campaign, err)
	}
	ref := cc.Spec.Twilio.CredentialsSecretRef
	var sec corev1.Secret
	if err := k.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, &sec); err != nil {
		return nil, fmt.Errorf("read the Twilio Secret %s/%s of campaign %s: %w", ns, ref.Name, campaign, err)
	}
	sidKey, tokenKey := ref.AccountSIDKey, ref.AuthTokenKey
	if sidKey == "" {
		sidKey = "accountSID"
	}
	if tokenKey == "" {
		tokenKey = "authToken"
	}
	sid, token := string(sec.Data[sidKey]), string(sec.Data[tokenKey])
	if err := twilioclient.ValidateCredentials(sid, token); err != nil {
		return nil, fmt.Errorf("the Twilio Secret %s/%s of campaign %s: %w", ns, ref.Name, campaign, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if r, ok := k.clients[sid+"/"+token]; ok {
		return r, nil
	}
	hc, err := twilioclient.HTTPClient(k.BaseURL, k.Timeout)
	if err != nil {
		return nil, err
	}
	rc, err := twilioclient.New(sid, token, hc)
	if err != nil {
		return nil, err
	}
	if k.clients == nil {
		k.clients = map[string]Recordings{}
	}
	r := TwilioRecordings{API: rc.Api}
	k.clients[sid+"/"+token] = r
	return r, nil
}

func splitCampaign(campaign string) (ns, name string, err error) {
	ns, name, ok := strings.Cut(campaign, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("campaign %q is not namespace/name", campaign)
	}
	return ns, name, nil
}

// deleteAll deletes every recording in sids, each tried up to tries times
// with a short growing pause between tries; it stops at the first recording
// that cannot be deleted and returns how many were deleted before it.
func deleteAll(ctx context.Context, r Recordings, sids []string, tries int, pause time.Duration) (int, error) {
	for i, sid := range sids {
		var err error
		for try := 0; try < tries; try++ {
			if try > 0 {
				select {
				case <-ctx.Done():
					return i, ctx.Err()
				case <-time.After(pause << (try - 1)):
				}
			}
			if err = r.DeleteRecording(ctx, sid); err == nil {
				break
			}
		}
		if err != nil {
			return i, err
		}
	}
	return len(sids), nil
}
