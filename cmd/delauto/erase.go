package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/phone"
	"github.com/delauto/delauto/internal/retention"
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/workerpod"
)

// runErase is `delauto erase`.
func runErase(args []string) error { return erase(context.Background(), args, os.Stdout) }

// erase removes a person's data and prints what it did to out.
func erase(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("erase", flag.ContinueOnError)
	number := fs.String("phone", "", "the person's phone number in E.164 form, e.g. +4915112345678 (required)")
	keepDeliveries := fs.Bool("keep-deliveries", false, "do not delete the Deliveries that call the number, only list them (also when no Kubernetes API is reachable)")
	twilioBaseURL := fs.String("twilio-base-url", os.Getenv(workerpod.EnvTwilioBaseURL), "send the Twilio requests to this server instead of Twilio, e.g. the simulator (env "+workerpod.EnvTwilioBaseURL+")")
	accountSID := fs.String("twilio-account-sid", os.Getenv(twilioclient.EnvAccountSID), "delete every recording through this Twilio account instead of each campaign's Secret (env "+twilioclient.EnvAccountSID+")")
	authToken := fs.String("twilio-auth-token", os.Getenv(twilioclient.EnvAuthToken), "auth token of --twilio-account-sid (env "+twilioclient.EnvAuthToken+")")
	var conn stores.Settings
	conn.Register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: delauto erase --phone +4915112345678 [flags]

Erases a person's data: deletes the Deliveries that call the number, cancels
their planned calls, removes the number, name, address, answers and error
messages from every call in the call log (what is left keeps the statistics),
deletes the recordings and transcriptions at Twilio, and keeps opt-outs only
as a salted hash of the number, so the person is still not called. It prints
what it did; run it again if a recording could not be deleted.

It reads the campaigns' Twilio Secrets and deletes Deliveries through the
Kubernetes API of the current kubeconfig (KUBECONFIG, or in-cluster).
Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	var errs []string
	if fs.NArg() > 0 {
		errs = append(errs, "unexpected arguments: "+strings.Join(fs.Args(), " "))
	}
	if *number == "" {
		errs = append(errs, "--phone is required: the number whose data to erase, in E.164 form such as +4915112345678")
	} else if err := phone.Validate(*number); err != nil {
		errs = append(errs, "--phone: "+err.Error())
	}
	if err := conn.ValidateMongo(); err != nil {
		errs = append(errs, strings.Split(err.Error(), "\n")...)
	}
	if (*accountSID == "") != (*authToken == "") {
		errs = append(errs, "set both --twilio-account-sid and --twilio-auth-token, or neither (then each campaign's Secret is read)")
	} else if *accountSID != "" {
		if err := twilioclient.ValidateCredentials(*accountSID, *authToken); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid arguments:\n  %s", strings.Join(errs, "\n  "))
	}

	e := &retention.Eraser{}
	var kube client.Client
	if !*keepDeliveries || *accountSID == "" {
		var err error
		if kube, err = kubeClient(); err != nil {
			return fmt.Errorf("the Kubernetes API (to delete Deliveries and read the Twilio Secrets): %w; see --keep-deliveries and --twilio-account-sid", err)
		}
	}
	if !*keepDeliveries {
		e.Kube = kube
	}
	if *accountSID != "" {
		hc, err := twilioclient.HTTPClient(*twilioBaseURL, 0)
		if err != nil {
			return err
		}
		rc, err := twilioclient.New(*accountSID, *authToken, hc)
		if err != nil {
			return err
		}
		e.Accounts = fixedAccount{retention.TwilioRecordings{API: rc.Api}}
	} else {
		e.Accounts = &retention.KubeAccounts{Reader: kube, BaseURL: *twilioBaseURL}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	st, err := conn.Store(ctx)
	if err != nil {
		return err
	}
	defer st.Close(context.Background())
	e.Store = st
	rep, err := e.Erase(ctx, *number)
	rep.Print(out, *number, !*keepDeliveries)
	return err
}

// fixedAccount is one Twilio account for every campaign.
type fixedAccount struct{ r retention.Recordings }

func (f fixedAccount) Recordings(context.Context, string) (retention.Recordings, error) {
	return f.r, nil
}

// kubeClient is a client of the current kubeconfig's cluster.
func kubeClient() (client.Client, error) {
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), v1.AddToScheme(scheme)); err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}
