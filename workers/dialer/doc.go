// Package dialer places DelAuto's calls: exactly one Twilio call per
// attempt, at an allowed time, within the account's rate, with a durable
// record whatever happens.
//
// # The pipeline (Dialer, a queue handler)
//
// For each attempt the queue hands it, the Dialer runs store.DialSequence:
//
//  1. Fenced claim in MongoDB (queued|retry -> dialing, fence+1, leased).
//     Refused: the delivery was cancelled, another worker has it, or it was
//     already handled; the queue entry is acknowledged (an attempt not due
//     yet goes back to the queue for its due time).
//  2. Checks: the number has not opted out in the delivery's namespace (else
//     the attempt is cancelled); the recipient's local time is inside the
//     campaign's calling hours (else the attempt is released to the next
//     allowed time, schedule.Policy.Earliest, and queued for it; when no
//     allowed time is left before the delivery window ends, it is cancelled).
//  3. Rate limit: a slot on the Twilio account's GCRA limiter in Redis
//     (reserve, wait; a drain or the handler's end gives it back), at the
//     campaign's calls per second less a small headroom (RateHeadroom, 5%)
//     so request jitter never puts more than the limit into one second. A
//     slot further away than MaxWait (derived by Timing, below the lease) is
//     not booked; the attempt is put back. Immediately before the request,
//     after every wait, mayDial checks again the calling hours and the
//     delivery window, a drain, the handler's context, and that the claim's
//     last confirmed lease covers the whole request (now + TwilioTimeout +
//     a tenth of the lease); otherwise no request is sent.
//  4. Dial with twilio-go: To; From, one of the campaign's numbers chosen by
//     a hash of the recipient's number (every attempt to a number shows the
//     same caller ID); Url, StatusCallback (events initiated, ringing,
//     answered, completed) and, with answering-machine handling, async AMD's
//     callback, all built by callurls with the attempt id and fence; Timeout
//     the ring timeout; TimeLimit the call time limit.
//  5. Record, fenced: dialed with the call SID. A stale fence changes
//     nothing and is counted.
//  6. The queue entry is acknowledged only after the outcome is durable. If
//     the store is unavailable, the write is retried (RecordTimeout); after
//     that the claim's lease runs out and the recovery.Resolver takes over.
//
// While an attempt is held its lease is renewed every Lease/3; a renewal
// that fails leaves the last confirmed lease end in force, and mayDial
// refuses to dial once it no longer covers a request. Timing holds the
// relations between the lease, the Twilio timeout, MaxWait and the
// resolver's periods, and refuses combinations that allow a second call.
//
// # Outcomes of a failed create-call request
//
//   - 429 / 20429: never processed. Retried with backoff and jitter while
//     the attempt is held, then released (state retry) and queued again.
//   - 4xx with a code in RejectedCodes (21211, 21214, 21216, 21217, ...):
//     the number cannot be called; the attempt fails with the code.
//   - Other 4xx, among them CampaignConfigCodes (21210, 21212, 21215) and
//     credentials: no call was made and the fault is the campaign's
//     configuration; released and retried in a minute, logged as an error,
//     and flagged for the operator (callrate.MarkDialError), which shows
//     the campaign Degraded with the code.
//   - Connection refused or a DNS failure: the request was never sent;
//     released and retried shortly.
//   - 5xx, a proxy's error page, a timeout, a reset connection, an
//     unreadable response: ambiguous. The attempt is marked unknown and
//     never redialed blindly.
//
// Whenever the worker itself finishes an attempt without a call (failed,
// cancelled, released, reconciled) it publishes an outcome event so the
// operator re-reads it.
//
// # Recovery
//
// What a failed or ambiguous dial leaves in doubt is settled by package
// recovery (its Resolver and Republisher), which every worker runs beside
// the dialer.
package dialer
