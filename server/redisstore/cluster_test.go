package redisstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
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

// raceHook runs fn once, before the first command (outside a pipeline) that names key.
type raceHook struct {
	key  string
	once sync.Once
	fn   func()
}

func (h *raceHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *raceHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *raceHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		for _, a := range cmd.Args() {
			if s, ok := a.(string); ok && s == h.key {
				h.once.Do(h.fn)
			}
		}
		return next(ctx, cmd)
	}
}

// TestClusterCreateRacesUserSessions: a session whose Create returned is in its user's index,
// whatever UserSessions ran meanwhile on another node. In a cluster the user index and the
// session hash are on different masters, so Create's pipeline may add the index entry before
// the session exists: here the session's master has lost its scripts (restarted, or failed
// over), so the session is made by a second call, one round trip after the entry. A
// UserSessions in that gap (a concurrent login's per-user limit, an admin's "log out
// everywhere") found the entry without its session and pruned it: the live session was then
// invisible to every later UserSessions, so a revocation of all the user's sessions missed it.
func TestClusterCreateRacesUserSessions(t *testing.T) {
	addrs := startCluster(t)
	ctx := t.Context()
	prefix := testPrefix()
	other := clusterStore(t, addrs, prefix) // another node
	ca := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, MaxRedirects: -1})
	t.Cleanup(func() { ca.Close() })
	a := New(ca, &Options{Prefix: prefix})

	// A session and a user on different masters.
	var s *server.Session
	var sNode, uNode string
	for range 100 {
		s = storetest.NewSession("mallory", time.Now())
		sn, err := ca.MasterForKey(ctx, a.sessionKey(s.ID))
		if err != nil {
			t.Fatal(err)
		}
		un, err := ca.MasterForKey(ctx, a.userKey(s.UserID))
		if err != nil {
			t.Fatal(err)
		}
		if sNode, uNode = sn.Options().Addr, un.Options().Addr; sNode != uNode {
			break
		}
	}
	if sNode == uNode {
		t.Fatal("no session ID on another master than the user's in 100 tries")
	}
	s.Expires = time.Now().Add(time.Hour)
	l := storetest.NewLane(s)
	// The user's master has the user-index script (an earlier login); the session's master has
	// no script (it restarted).
	for addr, load := range map[string]bool{uNode: true, sNode: false} {
		c := redis.NewClient(&redis.Options{Addr: addr})
		var err error
		if load {
			err = scriptUserAdd.Load(ctx, c).Err()
		} else {
			err = c.ScriptFlush(ctx).Err()
		}
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	var seen []*server.Session
	var seenErr error
	ca.AddHook(&raceHook{key: a.sessionKey(s.ID), fn: func() {
		seen, seenErr = other.UserSessions(ctx, s.UserID)
	}})
	if err := a.Create(ctx, s, l); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if seenErr != nil {
		t.Fatalf("concurrent UserSessions: %v", seenErr)
	}
	t.Logf("the concurrent UserSessions saw %d sessions", len(seen))

	if _, _, err := other.Lane(ctx, l.ID); err != nil {
		t.Fatalf("positive control: the session is live: %v", err)
	}
	for _, st := range []*Store{a, other} {
		list, err := st.UserSessions(ctx, s.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || !bytes.Equal(list[0].ID, s.ID) {
			t.Fatalf("UserSessions after Create = %d sessions, want the live one: \"log out everywhere\" would miss it", len(list))
		}
	}
}
