// Package recovery puts right what a worker's death, a lost response or a
// lost Redis left undone, from the call log (the source of truth). Every
// worker replica runs both of its loops (workers/worker):
//
//   - the Resolver settles attempts whose call is in doubt without ever
//     redialing blindly: it marks unknown the dialing claims whose lease
//     ran out (a worker killed mid-dial), settles unknown attempts from
//     Twilio's call list (found: dialed with its SID; provably absent after
//     a grace period: released for a new dial), and finishes from Twilio's
//     call record the calls whose final status callback never came;
//   - the Republisher puts back on the queue the attempts due in MongoDB but
//     missing from Redis (each pass covers the whole overdue range, and a new
//     Redis incarnation makes it restore whole queues), so losing Redis
//     delays calls and never loses them.
//
// Every write is a fenced conditional write of workers/store, so any number
// of replicas may run them at once. The worker's flags and the metrics'
// label values keep their older names: --reconcile-interval and the loop
// "reconciler" are the Resolver's, --sweep-* and the loop "sweeper" the
// Republisher's.
package recovery
