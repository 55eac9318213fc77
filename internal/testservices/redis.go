package testservices

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a throwaway redis-server on loopback, without persistence.
type Redis struct {
	// Addr is host:port of the server.
	Addr string
	dir  string
	port int
	proc *process
	args []string
}

const redisHint = "install Debian's redis-server (make redis, or hack/install-redis.sh)"

// StartRedis starts a redis-server on a free loopback port. extra are further
// redis-server arguments, such as "--cluster-enabled", "yes".
func StartRedis(extra ...string) (*Redis, error) {
	bin, err := lookBinary("DELAUTO_REDIS_SERVER", "redis-server", redisHint)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "delauto-redis-")
	if err != nil {
		return nil, err
	}
	r := &Redis{dir: dir}
	r.args = append([]string{
		"--bind", "127.0.0.1", "--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--dir", dir,
		"--daemonize", "no", "--loglevel", "warning",
	}, extra...)
	var lastErr error
	for try := 0; try < 3; try++ {
		if r.port, err = freePort(); err != nil {
			return nil, err
		}
		if lastErr = r.start(bin); lastErr == nil {
			return r, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func (r *Redis) start(bin string) error {
	r.Addr = net.JoinHostPort("127.0.0.1", itoa(r.port))
	args := append([]string{"--port", itoa(r.port)}, r.args...)
	p, err := startProcess("redis-server", exec.Command(bin, args...))
	if err != nil {
		return err
	}
	if err := waitTCP(p, r.Addr, 10*time.Second); err != nil {
		p.kill()
		return err
	}
	r.proc = p
	return nil
}

// URL is a redis:// URL of the server.
func (r *Redis) URL() string { return "redis://" + r.Addr }

// Client returns a new client of the server; the caller closes it.
func (r *Redis) Client() *redis.Client { return redis.NewClient(&redis.Options{Addr: r.Addr}) }

// Kill ends the server at once, as a crash would; Restart brings it back on
// the same port.
func (r *Redis) Kill() { r.proc.kill() }

// Restart starts a killed or stopped server again on the same port, empty.
func (r *Redis) Restart() error {
	bin, err := lookBinary("DELAUTO_REDIS_SERVER", "redis-server", redisHint)
	if err != nil {
		return err
	}
	return r.start(bin)
}

// Stop ends the server and removes its files.
func (r *Redis) Stop() {
	if r == nil {
		return
	}
	r.proc.stop(5 * time.Second)
	os.RemoveAll(r.dir)
}

// RedisCluster is a Redis Cluster of masters (no replicas) on loopback.
type RedisCluster struct {
	// Addrs are host:port of every master.
	Addrs []string
	nodes []*Redis
}

// StartRedisCluster starts n redis-server masters in cluster mode and joins
// them into one cluster covering every slot.
func StartRedisCluster(n int) (*RedisCluster, error) {
	c := &RedisCluster{}
	for i := 0; i < n; i++ {
		r, err := StartRedis("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("redis cluster node %d: %w", i, err)
		}
		c.nodes = append(c.nodes, r)
		c.Addrs = append(c.Addrs, r.Addr)
	}
	cli, err := lookBinary("DELAUTO_REDIS_CLI", "redis-cli", redisHint)
	if err != nil {
		c.Stop()
		return nil, err
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		c.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitOK(20 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// waitOK waits until every node reports cluster_state:ok.
func (c *RedisCluster) waitOK(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, n := range c.nodes {
		cl := n.Client()
		for {
			info, err := cl.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if ctx.Err() != nil {
				cl.Close()
				return fmt.Errorf("redis cluster node %s not ok after %s: %v %s", n.Addr, timeout, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cl.Close()
	}
	return nil
}

// Client returns a new cluster client; the caller closes it.
func (c *RedisCluster) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
}

// Stop ends every node.
func (c *RedisCluster) Stop() {
	if c == nil {
		return
	}
	for _, n := range c.nodes {
		n.Stop()
	}
}
