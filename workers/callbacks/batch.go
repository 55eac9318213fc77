package callbacks

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// batcher sends the Redis commands of concurrent webhooks in pipelines:
// each loop takes the commands waiting when it is free and sends them in
// one round trip. At low load a command goes alone (one channel hand-off
// more than sending it directly); under load the round trips, system calls
// and Redis's own work per command fall by the batch size.
type batcher struct {
	rdb redis.UniversalClient
	ch  chan *batchOp
}

type batchOp struct {
	cmd  redis.Cmder
	done chan struct{}
}

// maxBatch bounds one pipeline.
const maxBatch = 128

func newBatcher(rdb redis.UniversalClient, loops int) *batcher {
	b := &batcher{rdb: rdb, ch: make(chan *batchOp, 4096)}
	for range loops {
		go b.loop()
	}
	return b
}

func (b *batcher) loop() {
	ops := make([]*batchOp, 0, maxBatch)
	for op := range b.ch {
		ops = append(ops[:0], op)
	more:
		for len(ops) < maxBatch {
			select {
			case op := <-b.ch:
				ops = append(ops, op)
			default:
				break more
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, op := range ops {
				_ = p.Process(ctx, op.cmd)
			}
			return nil
		})
		cancel()
		for _, op := range ops {
			close(op.done)
		}
	}
}

// do runs cmd in the next pipeline and waits for its reply or ctx.
func (b *batcher) do(ctx context.Context, cmd redis.Cmder) error {
	op := &batchOp{cmd: cmd, done: make(chan struct{})}
	select {
	case b.ch <- op:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-op.done:
		return cmd.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}
