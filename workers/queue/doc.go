// Package queue dispatches call attempts to workers through Redis, one queue
// per campaign shard.
//
// # Layout
//
// Every key of a shard shares the hash tag {<namespace>/<campaign>/<shard>}
// (see Shard), so a shard lives in one Redis Cluster slot, and every script
// receives all the keys it touches in KEYS:
//
//	{tag}:due    sorted set  attempt id -> due time (Unix ms)
//	{tag}:ready  stream      entries {id, due} read by consumer group "workers"
//	{tag}:index  hash        attempt id -> ready entry id, while in the stream
//	{tag}:dead   stream      dead-lettered attempts with the reason
//	{tag}:wake   channel     "an earlier attempt was scheduled" for promoters
//
// # Flow
//
// Schedule adds an attempt id with a due time (idempotent: an id already
// queued, whether due, ready or in flight, is not queued again). An attempt
// due now goes straight to the ready stream when nothing else of the shard is
// waiting. A promoter (RunPromoter; every Consumer runs one) moves due entries
// to the ready stream in one atomic script using the server's clock, then
// sleeps exactly until the next due time, a 1 s safety tick, or a wake-up
// from a scheduler in this process or on the wake channel. Any number of
// promoters may run at once.
//
// A Consumer reads each shard with XREADGROUP COUNT <free slots> BLOCK,
// shares its slots among shards by weight, runs a bounded number of handler
// goroutines, and acknowledges outcomes in batches (one script per shard:
// XACK and HDEL, plus re-scheduling or dead-lettering, then XTRIM MINID ~ to
// drop acknowledged entries from the stream's head) after the handler
// returned. Running handlers' leases are extended every Lease/3 with
// XCLAIM JUSTID; entries idle for longer than the lease (their worker died)
// are taken over with XAUTOCLAIM, and an entry delivered more than
// MaxDeliveries times goes to the dead-letter stream.
//
// # What Cancel guarantees
//
// Cancel removes an attempt that no worker has read yet: from the due set,
// or from the ready stream if it was already promoted (Cancelled). Once a
// worker has read it (InFlight), Cancel changes nothing and cannot: the
// worker may be dialling. The guard against calling a cancelled attempt is
// the worker's fenced claim of the attempt document in MongoDB, which
// refuses attempts that are no longer queued there. The same holds for
// Reschedule.
//
// # Delivery guarantees
//
// Redis is the dispatch index, MongoDB the source of truth. An entry is
// acknowledged only after its handler returned, so a crash means the entry is
// delivered again (after the lease, default 15 s, checked every second) to
// another worker; handlers must therefore be idempotent, which the fenced
// claim makes them. Idempotent scheduling holds while an id is queued; once
// handled and acknowledged, the same id may be queued again, and the
// attempt's state in MongoDB decides.
//
// Due times are Unix milliseconds on the schedulers' clocks; promotion
// compares them with the Redis server's clock (TIME), so all workers agree.
// A due time in the past means now.
package queue
