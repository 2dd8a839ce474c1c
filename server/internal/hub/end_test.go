package hub

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// End: the event that ends a lane, then the refusal, as one step for the lane's registrations.

func TestEndLane(t *testing.T) {
	f := newFixture(t, Config{})
	lane := testLane(1)
	a, b := f.connect(t, lane), f.connect(t, lane)
	other := f.connect(t, testLane(2))
	waitCount(t, f.h, 3)
	before, last := seal(t, lane, 1), seal(t, lane, 2)
	f.h.Send(lane, before)
	if n := f.h.End(lane, last, "revoked"); n != 2 {
		t.Fatalf("End = %d", n)
	}
	if f.h.Count() != 1 {
		t.Fatalf("Count = %d", f.h.Count())
	}
	for _, ws := range []*websocket.Conn{a, b} {
		for _, want := range [][]byte{before, last} { // queued events first, End's last
			if got := readEvent(t, ws); string(got) != string(want) {
				t.Fatal("wrong event")
			}
		}
		if m := readControl(t, ws); m["type"] != "refused" || m["reason"] != "revoked" {
			t.Fatalf("reply %v", m)
		}
		expectClose(t, ws, websocket.CloseNormalClosure, "revoked")
	}
	if n := f.h.Send(testLane(2), seal(t, testLane(2), 1)); n != 1 {
		t.Fatalf("other lane: Send = %d", n)
	}
	readEvent(t, other)
	if n := f.h.End(testLane(3), seal(t, testLane(3), 1), "revoked"); n != 0 {
		t.Fatal(n)
	}
}

// A connection registered but not yet through Resync (its frames held back) when End runs gets
// "ready", Resync's frames, End's event and the refusal, in that order.
func TestEndWhileResync(t *testing.T) {
	lane := testLane(1)
	entered, release := make(chan struct{}), make(chan struct{})
	resynced := seal(t, lane, 1)
	f := newFixture(t, Config{Resync: func(ctx context.Context, l protocol.LaneID, since uint64) [][]byte {
		close(entered)
		<-release
		return [][]byte{resynced}
	}})
	ws := f.dial(t, nil)
	got := answerLater(t, ws, lane)
	<-entered
	last := seal(t, lane, 2)
	if n := f.h.End(lane, last, "logout"); n != 1 {
		t.Fatalf("End = %d", n)
	}
	close(release)
	if m := <-got; m["type"] != "ready" {
		t.Fatalf("reply %v", m)
	}
	for _, want := range [][]byte{resynced, last} {
		if b := readEvent(t, ws); string(b) != string(want) {
			t.Fatal("wrong event")
		}
	}
	if m := readControl(t, ws); m["type"] != "refused" || m["reason"] != "logout" {
		t.Fatalf("reply %v", m)
	}
	expectClose(t, ws, websocket.CloseNormalClosure, "logout")
}

// TestEndRacesRegistration: connections of a lane authenticate while End ends it (the owner's
// Authenticate refuses the lane once it has ended, as the Manager's store does). Each is told
// either "ready", then End's event, then the refusal; or the refusal in place of "ready".
func TestEndRacesRegistration(t *testing.T) {
	var ended sync.Map // lanes ended
	entered := make(chan struct{}, 16)
	f := newFixture(t, Config{Authenticate: func(ctx context.Context, keyid string, c, tag []byte) (protocol.LaneID, error) {
		lane, err := testAuthenticate(ctx, keyid, c, tag)
		if err != nil {
			return lane, err
		}
		if _, gone := ended.Load(lane); gone {
			return lane, &RefusedError{Reason: "revoked"}
		}
		select {
		case entered <- struct{}{}:
		default:
		}
		return lane, nil
	}})
	trials := 200
	if testing.Short() {
		trials = 40
	}
	for i := range trials {
		lane := testLane(100 + i)
		last := seal(t, lane, 1)
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			errs  []string
			start = make(chan struct{})
		)
		for range MaxConnsPerLane - 1 {
			wg.Go(func() {
				if err := endSeen(f, lane, last, start); err != "" {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		close(start)
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatal("no authentication")
		}
		time.Sleep(time.Duration(i%8) * 50 * time.Microsecond)
		ended.Store(lane, true)
		f.h.End(lane, last, "revoked")
		wg.Wait()
		for len(entered) > 0 {
			<-entered
		}
		if len(errs) > 0 {
			t.Fatalf("trial %d: %s", i, strings.Join(errs, "; "))
		}
	}
}

// endSeen dials a connection of lane after start and reads what it is told; "" if that is the
// refusal in place of "ready", or "ready", last and the refusal.
func endSeen(f *fixture, lane protocol.LaneID, last []byte, start chan struct{}) string {
	<-start
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(f.url, nil)
	if err != nil {
		return err.Error()
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ch struct{ Type, Challenge string }
	if err := ws.ReadJSON(&ch); err != nil {
		return err.Error()
	}
	c, _ := base64.RawURLEncoding.DecodeString(ch.Challenge)
	k := testKey(lane)
	tag := protocol.SocketAuth(&k, lane, 3, c)
	if err := ws.WriteMessage(websocket.TextMessage, authMsg(lane, 3, tag[:], 0)); err != nil {
		return err.Error()
	}
	ready := false
	for {
		mt, b, err := ws.ReadMessage()
		if err != nil {
			return fmt.Sprintf("read: %v", err)
		}
		if mt == websocket.BinaryMessage {
			if !ready || string(b) != string(last) {
				return "unexpected event"
			}
			last = nil
			continue
		}
		var m map[string]string
		json.Unmarshal(b, &m)
		switch {
		case m["type"] == "ready" && !ready:
			ready = true
		case m["type"] == "refused" && m["reason"] == "revoked":
			if ready && last != nil {
				return "the refusal after ready without the event"
			}
			return ""
		default:
			return fmt.Sprintf("message %s", b)
		}
	}
}
