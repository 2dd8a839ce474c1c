package redisstore

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/storetest"
)

// startCluster starts a Redis Cluster of three masters on loopback and returns their addresses.
func startCluster(t *testing.T) []string {
	t.Helper()
	needRedis(t)
	if _, err := exec.LookPath("redis-cli"); err != nil {
		msg := "REDIS-CLI MISSING: cannot form a Redis Cluster; the cluster test is NOT run"
		if os.Getenv("SV_STRICT") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	var addrs []string
	for range 3 {
		p, err := startRedis(0, "--cluster-enabled", "yes", "--dir", t.TempDir(), "--cluster-config-file", "nodes.conf")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.stop)
		addrs = append(addrs, p.addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		for !strings.Contains(c.ClusterInfo(context.Background()).Val(), "cluster_state:ok") {
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ok on %s", a)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
	}
	return addrs
}

func clusterStore(t *testing.T, addrs []string, prefix string) *Store {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { c.Close() })
	return New(c, &Options{Prefix: prefix})
}

// TestCluster runs the conformance suite, two nodes' replay refusal and a revocation notice on
// a real three-master Redis Cluster: every script touches one slot (Redis would refuse one that
// reached into another), and the keys of a test's sessions spread over all masters.
func TestCluster(t *testing.T) {
	addrs := startCluster(t)
	storetest.Run(t, func(t *testing.T) server.Store { return clusterStore(t, addrs, testPrefix()) })

	ctx := t.Context()
	prefix := testPrefix()
	a, b := clusterStore(t, addrs, prefix), clusterStore(t, addrs, prefix)
	ch, _ := notices(t, b)
	s, l := create(t, a, "alice")
	if err := a.Seen(ctx, l.ID, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Seen(ctx, l.ID, 1); !errors.Is(err, server.ErrReplay) {
		t.Fatalf("B: Seen(1) after A = %v, want ErrReplay", err)
	}
	if _, err := a.Delete(ctx, s.ID, "revoked"); err != nil {
		t.Fatal(err)
	}
	if n := next(t, ch, 5*time.Second); n.Reason != "revoked" || len(n.Lanes) != 1 || n.Lanes[0] != l.ID {
		t.Errorf("notice across the cluster: %+v", n)
	}

	// The session's hash and its lane index are in the slots their hash tags say.
	cc := a.c.(*redis.ClusterClient)
	masters := map[string]bool{}
	for range 20 {
		s, l := create(t, a, "bob")
		for _, k := range []string{a.sessionKey(s.ID), a.laneKey(l.ID)} {
			slot := cc.ClusterKeySlot(ctx, k).Val()
			tag := k[strings.IndexByte(k, '{')+1 : strings.IndexByte(k, '}')]
			if want := cc.ClusterKeySlot(ctx, tag).Val(); slot != want {
				t.Errorf("key %q in slot %d, its tag's slot is %d", k, slot, want)
			}
			node, err := cc.MasterForKey(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			masters[node.Options().Addr] = true
		}
	}
	if len(masters) != 3 {
		t.Errorf("keys on %d masters, want all 3", len(masters))
	}
}
