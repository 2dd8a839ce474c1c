package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// rekeyWithGrant re-keys c's session with grant in the body (as the worker sends the one that
// came with the hint) and returns the answer; on success the vault takes the new lane.
func (c *client) rekeyWithGrant(grant string) *httptest.ResponseRecorder {
	c.e.t.Helper()
	pub, err := c.v.Begin(protocol.HandshakeRekey)
	if err != nil {
		c.e.t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"pub": b64u(pub[:]), "grant": grant})
	w := c.do(c.sign("POST", "/sv/rekey", body))
	if w.Code != 200 {
		c.v.AbortRekey()
		return w
	}
	c.keepCookie(w)
	c.finish(c.v, w.Body.Bytes())
	return w
}

// The application asks for a re-key on node A (RequireRekey with new claims) and the worker's
// re-key reaches node B: the sealed claims that came with the hint (Sv-Rekey-Grant) take effect
// there. Before, B renewed the session ID with the old claims.
func TestRekeyGrantCarriesClaimsAcrossNodes(t *testing.T) {
	a, b, _ := twoNodes(t)
	c := a.newClient()
	c.login("alice")
	w := c.do(c.sign("POST", "/api/elevate", []byte("{}")))
	wantOK(t, w)
	grant := w.Header().Get("Sv-Rekey-Grant")
	if w.Header().Get("Sv-Action") != "rekey" || grant == "" {
		t.Fatalf("hint %q, grant %q", w.Header().Get("Sv-Action"), grant)
	}
	if strings.Contains(grant, "admin") {
		t.Fatal("the grant shows its claims")
	}
	// A's later responses repeat the hint with the grant.
	if w := c.get("/api/me"); w.Header().Get("Sv-Rekey-Grant") == "" {
		t.Error("a later hint without the grant")
	}
	c.do = b.serve
	wantOK(t, c.rekeyWithGrant(grant))
	wantOK(t, c.get("/api/me"))
	if got := b.lastInfo().Claims["role"]; got != "admin" {
		t.Fatalf("claims on B after the re-key: %q, want admin", got)
	}
}

// A grant that does not open grants nothing: the re-key renews the ID with the old claims.
func TestRekeyGrantRefusals(t *testing.T) {
	a, b, _ := twoNodes(t)
	elevated := func() (*client, string) {
		c := a.newClient()
		c.login("alice")
		w := c.do(c.sign("POST", "/api/elevate", []byte("{}")))
		wantOK(t, w)
		c.do = b.serve
		return c, w.Header().Get("Sv-Rekey-Grant")
	}
	_, otherGrant := elevated() // another session's
	cases := map[string]func(string) string{
		"tampered": func(g string) string {
			return g[:len(g)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(g, "AA")]
		},
		"another session": func(string) string { return otherGrant },
		"garbage":         func(string) string { return "!!" },
	}
	for name, mut := range cases {
		c, g := elevated()
		wantOK(t, c.rekeyWithGrant(mut(g)))
		wantOK(t, c.get("/api/me"))
		if got := b.lastInfo().Claims["role"]; got != "user" {
			t.Errorf("%s: claims %q after the re-key, want user", name, got)
		}
	}
	// Expired: a grant lives for the idle timeout from the hint (30 minutes here), while the
	// session, kept busy, lives on.
	c, g := elevated()
	for range 4 {
		a.clock.Add(10 * time.Minute)
		wantOK(t, c.get("/api/keepalive"))
	}
	wantOK(t, c.rekeyWithGrant(g))
	wantOK(t, c.get("/api/me"))
	if got := b.lastInfo().Claims["role"]; got != "user" {
		t.Errorf("expired grant: claims %q after the re-key, want user", got)
	}
	if n := strings.Count(b.logs.String(), "the rekey grant did not open"); n != 4 {
		t.Errorf("%d audit records of refused grants, want 4", n)
	}
}

// Two decisions for one session on two nodes (admin on A, then org y on B): the re-key carries
// B's grant and lands on A, which holds its own older decision. The later one wins.
func TestRekeyGrantLaterDecisionWins(t *testing.T) {
	a, b, _ := twoNodes(t)
	b.mux.Handle("/api/switch-org", b.mgr.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := b.mgr.RequireRekey(w, r, map[string]string{"role": "user", "org": "y"}); err != nil {
			t.Error(err)
		}
	})))
	c := a.newClient()
	c.login("alice")
	wantOK(t, c.do(c.sign("POST", "/api/elevate", []byte("{}"))))
	a.clock.Add(time.Second)
	c.do = b.serve
	w := c.do(c.sign("POST", "/api/switch-org", []byte("{}")))
	wantOK(t, w)
	c.do = a.serve
	wantOK(t, c.rekeyWithGrant(w.Header().Get("Sv-Rekey-Grant")))
	wantOK(t, c.get("/api/me"))
	if got := a.lastInfo().Claims; got["org"] != "y" || got["role"] != "user" {
		t.Errorf("claims %v, want B's later decision", got)
	}
}
