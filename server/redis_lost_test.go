package server_test

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/redistest"
)

// lossyProxy forwards TCP to Redis. When armed with a pattern, the first client->server chunk
// that contains it is forwarded, and the server's reply to it is dropped and both connections
// closed: the command ran in Redis, its reply was lost (a network blip, a proxy restart).
type lossyProxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	pattern []byte
	fired   atomic.Int32
}

func newLossyProxy(t *testing.T, target string) *lossyProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *lossyProxy) arm(pattern string) {
	p.mu.Lock()
	p.pattern = []byte(pattern)
	p.mu.Unlock()
}

func (p *lossyProxy) serve(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	var drop atomic.Bool
	go func() { // server -> client
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Read(buf)
			if n > 0 {
				if drop.Load() {
					c.Close()
					s.Close()
					return
				}
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if p.pattern != nil && bytes.Contains(buf[:n], p.pattern) {
				p.pattern = nil
				drop.Store(true)
				p.fired.Add(1)
			}
			p.mu.Unlock()
			if _, werr := s.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			s.Close()
			return
		}
	}
}

// TestRedisLostReplyFailsClosed: Redis ran a store script and its reply was lost (a network
// blip, a proxy restart). The call fails (503 store_unavailable), as any store failure does;
// before, go-redis retried the command on a new connection by default, so the script ran twice:
// a first use of a nonce was refused as a replay (and counted against the client), a first use
// of a ticket as reuse (logged as an attack).
func TestRedisLostReplyFailsClosed(t *testing.T) {
	redistest.Need(t)
	srv := redistest.Own(t, false)
	px := newLossyProxy(t, srv.Addr())
	prefix := fmt.Sprintf("rr%d:", time.Now().UnixNano())
	e := newEnv(t, onStore(redisStore(t, "redis://"+px.ln.Addr().String()+"/0", prefix), nil))
	{ // every script loaded into Redis first (EVALSHA then finds them)
		c := e.newClient()
		ck := c.loginCookie("warm")
		wantOK(t, c.get("/api/x"))
		c.join(ck, c.workerTicket(ck))
		c.do(c.sign("POST", "/sv/logout", nil))
	}

	t.Run("seen", func(t *testing.T) {
		c := e.newClient()
		l := c.rawLogin("alice")
		l.seq = 0x5a5a5a5a - 1 // the next signature's nonce is 0x5a5a5a5a, recognisable on the wire
		px.arm("$8\r\n\x00\x00\x00\x00ZZZZ")
		w := c.do(c.signRaw(l, "GET", "/api/x", nil))
		if px.fired.Load() != 1 {
			t.Fatal("the proxy saw no Seen call to drop the reply of")
		}
		if w.Code != 503 || w.Header().Get("Sv-Error") != "store_unavailable" || len(e.logs.events("replay_refused")) != 0 {
			t.Fatalf("reply of Seen lost: %d %q, %d replay_refused; want 503 store_unavailable, none",
				w.Code, w.Header().Get("Sv-Error"), len(e.logs.events("replay_refused")))
		}
		wantOK(t, c.do(c.signRaw(l, "GET", "/api/x", nil))) // the next request goes through
	})

	t.Run("ticket", func(t *testing.T) {
		c := e.newClient()
		ck := c.loginCookie("bob")
		tk := c.workerTicket(ck)
		px.arm(prefix + "t:{")
		_, w := c.join(ck, tk)
		if px.fired.Load() != 2 {
			t.Fatal("the proxy saw no TakeTicket call to drop the reply of")
		}
		if w.Code != 503 || w.Header().Get("Sv-Error") != "store_unavailable" || len(e.logs.events("ticket_reuse")) != 0 {
			t.Fatalf("reply of TakeTicket lost: %d %q, %d ticket_reuse; want 503 store_unavailable, none",
				w.Code, w.Header().Get("Sv-Error"), len(e.logs.events("ticket_reuse")))
		}
		// The page may retry: a new worker gets a new ticket.
		if n, w := c.join(ck, c.workerTicket(ck)); n == nil {
			t.Fatalf("a new ticket after the lost reply: %d %q", w.Code, w.Header().Get("Sv-Error"))
		}
	})
}
