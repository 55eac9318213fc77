// Package callbacks is DelAuto's Twilio webhook server: the conversation
// (TwiML), the customer's answer, and what follows it (call log, outcome
// events for the operator, the relay to the agent).
//
// It is served by the worker process (`delauto worker`) on its callback
// port (8080), behind the campaign's callback Service and public URL
// (CallCampaign spec.twilio.callbackURL): New builds the Server, Handler is
// mounted on the port, Run runs the journal writer beside the dialer, and
// RegisterMetrics exposes the metrics.
// The first webhook of a call reads its context from MongoDB and caches it
// for the others (see Call context cache); Prime fills the cache ahead of a
// call, for benchmarks and tests.
//
// # The conversation
//
// The call is held in the recipient's language (internal/language: the
// campaign's script.languages over the built-in wording, else the
// campaign's default language): <Say> speaks it and the menu's <Gather>
// recognizes it, with its speech hints. The voice webhook answers with the
// greeting (rendered in the recipient's time zone, with the language's
// date and time format) and a <Gather input="dtmf speech"> menu: 1 or "yes"
// confirms, 2 or "reschedule" asks for another time, 3 or "instructions"
// records instructions (<Record> with a maximum length, transcribed), 9 or
// "stop" opts out, 0 or "repeat" plays the greeting and menu again (twice
// at most); the words are the language's (see language.Wording.Match).
// Nothing heard: the menu once more, then a polite goodbye; an answer that
// is no option: the same. The campaign's script.prompts override the
// default language's wording. A machine (AnsweredBy machine_* or
// fax) gets the campaign's answering-machine action: a short voicemail with
// the callback number, or a hang-up (result machine, retried per the
// campaign's policy); with asynchronous detection the live call is
// redirected through UpdateCall. The script keeps the call inside the
// campaign's time limit (60 s by default): the recording's maximum length
// is cut to the time limit minus 30 s.
//
// # Requests
//
// Every webhook is a POST to one of the callurls paths with the attempt id
// and fence in the query. Checks, in order, each answered before any state
// is touched: unknown path 404; other methods 405; bodies over
// MaxBodyBytes (64 KiB) 413; a content type other than a form 415; an
// unparsable form 400; a missing or wrong X-Twilio-Signature 403 (checked
// with twilio-go's RequestValidator over the public URL: PublicURL or the
// campaign's callbackURL, plus, only with TrustForwarded, the URL named by
// X-Forwarded-Proto/Host); a missing or malformed attempt id or fence 400;
// form fields that make no sense 400. Every refusal is counted in
// delauto_callbacks_rejected_total by reason.
//
// An attempt id that is well formed and correctly signed but not in the
// call log (purged, or another installation's): a TwiML request (voice,
// gather, record) gets 200 with <Hangup/>, so the callee never hears
// Twilio's "application error" and the call ends; a data callback (status,
// recording, transcription, AMD) gets 404, visible in Twilio's debugger.
// Nothing is written either way. An attempt of another campaign than the
// server's (a shared call log, signed with a token the server accepts) is
// refused with 403 and the reason in the body; nothing is written.
//
// # What is durable when the webhook is answered
//
//   - Status callbacks (the bulk: four or more per call) are appended to a
//     Redis stream, the write-behind journal (JournalKey), and answered
//     204. The journal writer (Run) writes them to MongoDB in batches, coalescing
//     each call's callbacks in a batch to one write (its final status, else
//     its highest sequence number; intermediate status times are not kept
//     then), and publishes the outcome event after a final status is in MongoDB.
//     When the 204 is sent the callback is as durable as Redis makes it
//     (with appendonly/everysec, lost only if the Redis host itself
//     crashes within a second); a worker crash loses nothing (the journal
//     is a consumer group; another worker takes unacknowledged entries
//     after JournalClaimIdle). When Redis is down the callback is written
//     to MongoDB directly before the answer, and 503 if that fails too.
//   - The customer's choice, an opt-out, a recording and a transcription
//     are written to MongoDB before the answer (within WriteTimeout), then
//     the outcome event is published and the relay woken. If MongoDB does
//     not take the write in time it goes to the journal instead; 503 only
//     when neither took it.
//   - AMD verdicts are journaled like status callbacks.
//
// Every write is idempotent and order-proof (the store keys status
// callbacks on call SID and sequence number and recordings on their SID,
// and never moves an attempt back from a terminal state), so Twilio's
// retries, duplicates and late callbacks change nothing.
//
// # Call context cache
//
// Each webhook needs the attempt's delivery context and the campaign's
// script rendered for it (CallInfo). It is cached in Redis (ContextKey, one
// key per attempt, TTL ContextTTL) and read by every webhook of the call.
// Webhooks of one call that miss it at the same time share one MongoDB read
// (a fill per attempt and fence). delauto_callbacks_context_cache_total
// counts hits, misses (MongoDB reads) and shared fills. It is
// invalidated when the campaign's script changes (the greeting is rendered
// again), when a callback carries a newer fence than the cached one (a new
// claim of the attempt), and by Invalidate.
//
// # Relay
//
// Reschedule requests and recorded instructions are relayed to the agent
// by package relay (SMS, and the campaign's signed webhook), queued on
// Config.Notify, never inside a webhook; the worker runs the relay's sender
// beside this server.
package callbacks
