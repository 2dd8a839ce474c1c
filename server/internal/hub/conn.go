package hub

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server/internal/throttle"
)

// conn is one event connection. Its life: ServeHTTP upgrades and authenticates it in the
// request's goroutine, registers it under its lane, writes "ready" and starts its two pumps;
// the read pump is its only reader, the write pump its only writer (besides WriteControl, which
// gorilla allows concurrently, and Close).
type conn struct {
	h    *Hub
	ws   *websocket.Conn
	addr string
	key  string // addr as MaxUnsettled counts it (throttle.Key)
	lane protocol.LaneID
	send chan []byte // sealed events; closeFrame asks the write pump to close
	// authOK: Authenticate accepted the connection (set before the pumps start; read by
	// release, which calls Config.Ended for it).
	authOK bool

	// unsettled: counted against its client's MaxUnsettled (guarded by h.mu).
	unsettled bool

	// Guarded by the lane's shard lock.
	registered bool
	holding    bool     // registered, Resync's frames not queued yet: Send appends to held
	held       [][]byte // at most cap(send)
	closeCode  int      // set with closing, before closeFrame is queued
	closeText  string
	refuse     bool // send {"type":"refused"} before the close frame

	authed  atomic.Bool // registered once (Shutdown closes connections that are not)
	closing atomic.Bool // a close is queued: pongs no longer extend the read deadline
	dead    atomic.Bool // killed: queue refuses
	refs    atomic.Int32
	done    chan struct{} // closed by kill
	once    sync.Once
	why     string // set by the first kill
}

// closeFrame is the queue's sentinel for "write the close now"; events are never empty.
var closeFrame = []byte{}

// ServeHTTP serves the event endpoint: it checks the origin and the subprotocol, upgrades,
// sends the challenge, authenticates the answer with Config.Authenticate, registers the
// connection under its lane and answers "ready". See the package documentation for the
// messages.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.checkOrigin(r) {
		h.record(r.Context(), slog.LevelWarn, "socket_refused", h.clientAddr(r), nil, "cross_site", originMismatch(r, h.authority(r)))
		httpRefuse(w, http.StatusForbidden)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) || !slices.Contains(websocket.Subprotocols(r), Subprotocol) {
		// Usually a proxy that does not pass the upgrade: every worker behind it retries with
		// backoff, so say it at Warn at most once a minute, and otherwise at Debug.
		level := slog.LevelDebug
		if h.warnedUpgrade.Allow(time.Now(), time.Minute) {
			level = slog.LevelWarn
		}
		h.record(r.Context(), level, "socket_refused", h.clientAddr(r), nil, "not_websocket",
			errors.New("not a WebSocket upgrade with subprotocol "+Subprotocol+": behind a proxy, pass Upgrade and Connection (nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\")"))
		httpRefuse(w, http.StatusBadRequest)
		return
	}
	addr := h.clientAddr(r)
	c := &conn{h: h, addr: addr, key: throttle.Key(addr), unsettled: true, done: make(chan struct{})}
	if status := h.admit(c.key); status != 0 {
		reason := httpRefuse(w, status)
		h.record(r.Context(), slog.LevelWarn, "socket_refused", addr, nil, reason, nil)
		return
	}
	ws, err := h.up.Upgrade(w, r, nil)
	if err != nil {
		h.unreserve(c)
		return
	}
	c.ws = ws
	if !h.track(c) {
		c.closeNow(websocket.CloseGoingAway, reasonShutdown)
		ws.Close()
		return
	}
	if !c.authenticate(r.Context()) {
		h.unregister(c)
		c.kill("")
		h.release(c)
		return
	}
	c.refs.Store(2)
	go c.writePump()
	go c.readPump()
}

// authenticate runs the challenge exchange; false if the connection was refused (the caller
// cleans up).
func (c *conn) authenticate(reqCtx context.Context) bool {
	h := c.h
	ws := c.ws
	ws.SetReadLimit(h.readLimit)
	deadline := time.Now().Add(h.authTimeout)
	ws.SetReadDeadline(deadline)
	challenge := make([]byte, ChallengeSize)
	rand.Read(challenge)
	ws.SetWriteDeadline(time.Now().Add(h.writeWait))
	if err := ws.WriteMessage(websocket.TextMessage, challengeMsg(challenge)); err != nil {
		return false
	}
	mt, msg, err := ws.ReadMessage()
	if err != nil {
		if isTimeout(err) {
			h.record(reqCtx, slog.LevelInfo, "socket_refused", c.addr, nil, reasonTimeout, nil)
			// Not reported as a failure: an honest worker misses the answer window when its page
			// is frozen or its network drops mid-exchange, and behind one address (an office NAT,
			// a carrier's CGNAT) such misses would throttle everyone's logins. Silent sockets are
			// bounded per address by MaxUnsettled instead.
			c.closeNow(websocket.ClosePolicyViolation, "auth timeout")
			return false
		}
		if c.readFailed(reqCtx, err) {
			c.failed(reqCtx)
		}
		return false
	}
	if mt != websocket.TextMessage {
		c.violation(reqCtx, "binary_before_auth")
		c.failed(reqCtx)
		return false
	}
	a, err := parseAuth(msg)
	clear(msg)
	if err != nil {
		c.violation(reqCtx, "malformed_auth")
		c.failed(reqCtx)
		return false
	}
	if h.authenticate == nil {
		c.refuseNow(reqCtx, reasonUnavail, nil)
		return false
	}
	ctx, cancel := context.WithDeadline(reqCtx, deadline)
	defer cancel()
	start := time.Now()
	lane, err := h.authenticate(ctx, a.keyid, challenge, a.tag)
	if err != nil {
		reason := reasonRefused
		var re *RefusedError
		if errors.As(err, &re) && validReason(re.Reason) {
			reason = re.Reason
		}
		c.refuseNow(reqCtx, reason, err)
		return false
	}
	c.lane = lane
	c.authOK = true
	c.send = make(chan []byte, h.sendQueue)
	hold := h.resync != nil
	if why := h.register(c, start, hold); why != "" {
		c.refuseNow(reqCtx, why, nil)
		return false
	}
	ws.SetWriteDeadline(time.Now().Add(h.writeWait))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(msgReady)); err != nil {
		return false
	}
	if hold {
		h.unhold(c, h.resync(ctx, lane, a.since))
	}
	ws.SetReadDeadline(time.Now().Add(h.pongWait))
	h.record(reqCtx, slog.LevelDebug, "socket_opened", c.addr, &c.lane, "", nil)
	return true
}

// queue hands b to the write pump without blocking; a connection whose queue is full is
// closed. It runs under the lane's shard lock.
func (c *conn) queue(b []byte) bool {
	if c.dead.Load() {
		return false
	}
	if c.holding {
		if len(c.held) >= cap(c.send) {
			c.kill("slow_client")
			return false
		}
		c.held = append(c.held, b)
		return true
	}
	select {
	case c.send <- b:
		return true
	default:
		c.kill("slow_client")
		return false
	}
}

// closeWith queues a close (after the frames already queued) for a connection just taken out
// of its lane. It runs under the lane's shard lock.
func (c *conn) closeWith(code int, text string, refuse bool) {
	if c.closing.Swap(true) {
		return
	}
	c.closeCode, c.closeText, c.refuse = code, text, refuse
	c.queue(closeFrame)
}

// kill closes the socket at once (no close frame) and stops both pumps. why, if set, says
// why for the log.
func (c *conn) kill(why string) {
	c.once.Do(func() {
		c.why = why
		c.dead.Store(true)
		close(c.done)
		c.ws.Close()
	})
}

// exit ends one pump; the last one out forgets the connection.
func (c *conn) exit() {
	c.h.unregister(c)
	c.kill("")
	if c.refs.Add(-1) != 0 {
		return
	}
	c.h.release(c)
	if c.why == "slow_client" {
		c.h.record(context.Background(), slog.LevelInfo, "socket_dropped", c.addr, &c.lane, c.why, nil)
	} else {
		c.h.record(context.Background(), slog.LevelDebug, "socket_closed", c.addr, &c.lane, c.why, nil)
	}
}

// writePump is the connection's only writer after "ready": events, pings, the close.
func (c *conn) writePump() {
	defer c.exit()
	ping := time.NewTicker(c.h.pingInterval)
	defer ping.Stop()
	for {
		select {
		case b := <-c.send:
			if len(b) == 0 {
				c.writeClose()
				return
			}
			c.ws.SetWriteDeadline(time.Now().Add(c.h.writeWait))
			if err := c.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
				c.kill("write_failed")
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.h.writeWait)); err != nil {
				c.kill("write_failed")
				return
			}
		case <-c.done:
			return
		}
	}
}

// writeClose writes the queued close and gives the client WriteWait to answer it; the read
// pump ends when the answer comes.
func (c *conn) writeClose() {
	deadline := time.Now().Add(c.h.writeWait)
	c.ws.SetWriteDeadline(deadline)
	if c.refuse {
		if err := c.ws.WriteMessage(websocket.TextMessage, refusedMsg(c.closeText)); err != nil {
			c.kill("write_failed")
			return
		}
	}
	if err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeText), deadline); err != nil {
		c.kill("write_failed")
		return
	}
	t := time.NewTimer(c.h.writeWait)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.kill("close_timeout")
	}
}

// readPump is the connection's only reader after "ready". The client sends nothing but control
// frames (pongs, its close); any data message is a violation.
func (c *conn) readPump() {
	defer c.exit()
	c.ws.SetPongHandler(func(string) error {
		if !c.closing.Load() {
			c.ws.SetReadDeadline(time.Now().Add(c.h.pongWait))
		}
		return nil
	})
	mt, _, err := c.ws.NextReader()
	ctx := context.Background()
	switch {
	case err != nil:
		c.readFailed(ctx, err)
	case mt == websocket.BinaryMessage:
		c.violation(ctx, "binary_frame")
	default:
		c.violation(ctx, "text_frame")
	}
}

// failed tells Config.Failed that the client failed the challenge exchange.
func (c *conn) failed(ctx context.Context) {
	if c.h.failed != nil {
		c.h.failed(ctx, c.addr)
	}
}

// readFailed logs why reading ended and closes the socket; it reports whether the client broke
// the protocol (a frame too large, a framing error), rather than closing or vanishing.
func (c *conn) readFailed(ctx context.Context, err error) (broke bool) {
	var lane *protocol.LaneID
	if c.authed.Load() {
		lane = &c.lane
	}
	var ce *websocket.CloseError
	switch {
	case c.dead.Load() || errors.As(err, &ce) || isGone(err):
		// Killed by the hub, or the client closed or vanished: logged when the connection ends.
	case errors.Is(err, websocket.ErrReadLimit):
		// gorilla has sent 1009.
		c.h.record(ctx, slog.LevelWarn, "socket_bad_frame", c.addr, lane, "too_large", nil)
		c.kill("too_large")
		return true
	case isTimeout(err):
		c.h.record(ctx, slog.LevelInfo, "socket_timeout", c.addr, lane, "pong_timeout", nil)
		c.kill("pong_timeout")
		return false
	default:
		// A framing error; gorilla has sent 1002. Its messages name the rule, not the content.
		c.h.record(ctx, slog.LevelWarn, "socket_bad_frame", c.addr, lane, "protocol_error", err)
		c.kill("protocol_error")
		return true
	}
	c.kill("")
	return false
}

// violation closes the connection with 1008 (policy violation) after a message the protocol
// does not allow at this point.
func (c *conn) violation(ctx context.Context, reason string) {
	var lane *protocol.LaneID
	if c.authed.Load() {
		lane = &c.lane
	}
	c.h.record(ctx, slog.LevelWarn, "socket_bad_frame", c.addr, lane, reason, nil)
	c.closeNow(websocket.ClosePolicyViolation, "unexpected message")
	c.kill(reason)
}

// refuseNow sends {"type":"refused"} and a close (1008) during authentication, when the
// request's goroutine is the only writer.
func (c *conn) refuseNow(ctx context.Context, reason string, cause error) {
	c.h.record(ctx, slog.LevelDebug, "socket_refused", c.addr, nil, reason, cause)
	c.ws.SetWriteDeadline(time.Now().Add(c.h.writeWait))
	if c.ws.WriteMessage(websocket.TextMessage, refusedMsg(reason)) != nil {
		return
	}
	c.closeNow(websocket.ClosePolicyViolation, reason)
}

// closeNow writes a close frame (safe concurrently with the write pump).
func (c *conn) closeNow(code int, text string) {
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(c.h.writeWait))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// record logs one hub event. Only public values: the peer address, the lane ID, a reason word,
// and a cause that is an error of gorilla/websocket or of Config.Authenticate.
func (h *Hub) record(ctx context.Context, level slog.Level, event, client string, lane *protocol.LaneID, reason string, cause error) {
	if !h.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 5)
	attrs = append(attrs, slog.String("event", event))
	if lane != nil {
		attrs = append(attrs, slog.String("lane", lane.String()))
	}
	if client != "" {
		attrs = append(attrs, slog.String("client", client))
	}
	if reason != "" {
		attrs = append(attrs, slog.String("reason", reason))
	}
	if cause != nil {
		attrs = append(attrs, slog.String("cause", cause.Error()))
	}
	h.log.LogAttrs(ctx, level, "sessionvault", attrs...)
}

// originMismatch says what a cross_site refusal compared, for the log: a proxy that rewrites
// Host is the usual cause. Both values are bounded and quoted (the Origin is the client's text).
func originMismatch(r *http.Request, host string) error {
	q := func(s string) string {
		if len(s) > 100 {
			s = s[:100] + "..."
		}
		return strconv.Quote(s)
	}
	return errors.New("Origin " + q(r.Header.Get("Origin")) + " is not of the request's host " + q(host) +
		" (behind a proxy that rewrites Host, forward the original Host or set Config.Authority)")
}
