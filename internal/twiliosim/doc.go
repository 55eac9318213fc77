// Package twiliosim is a stand-in for Twilio's Voice REST API and its
// webhooks, faithful enough to drive DelAuto's workers, callbacks and
// benchmarks without dialling anyone.
//
// It serves the 2010-04-01 REST surface twilio-go v1.31.0 calls (create,
// list, fetch, update and delete calls; create and list messages) with
// Twilio's validation, JSON shapes and error bodies; queues calls over the
// account's calls-per-second limit; plays each call through a Scenario (the
// callee's behaviour: answer and press a key or speak, busy, no answer,
// failed, voicemail, hang up, silence); sends signed status callbacks;
// fetches and runs the TwiML DelAuto returns (<Say>, <Play>, <Pause>,
// <Gather>, <Record>, <Redirect>, <Hangup>), following actions; reports
// answering-machine detection in the voice request or asynchronously; and
// injects the faults of Twilio's bad days (429, 5xx, a proxy's 502 page,
// responses that never come after the call was created, duplicated,
// reordered and late callbacks).
//
// Everything is recorded for assertions: create requests with DelAuto's
// attempt id (CallsForAttempt, DuplicateAttempts), webhook deliveries with
// the status they got, SMS, recordings and per-second call starts.
//
// Use it in a test:
//
//	sim, err := twiliosim.New(twiliosim.Options{TimeScale: 0.01})
//	defer sim.Close()
//	hc, _ := twilioclient.HTTPClient(sim.URL(), 5*time.Second)
//	rc, _ := twilioclient.New(sim.AccountSID(), sim.AuthToken(), hc)
//
// Simulated durations (ring, speech, gather timeouts, AMD, callback delays)
// are multiplied by Options.TimeScale; the CPS limit, API latency and
// webhook timeouts are real time. cmd/twiliosim runs the same simulator as a
// server; docs/twilio-simulator.md lists what is covered and what is not.
package twiliosim
