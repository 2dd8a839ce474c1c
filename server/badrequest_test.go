package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
)

// edit returns r with one header field's value rewritten by f.
func edit(r *http.Request, field string, f func(string) string) *http.Request {
	r.Header.Set(field, f(r.Header.Get(field)))
	return r
}

func replace(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("test bug: " + old + " not in " + s)
		}
		return strings.Replace(s, old, new, 1)
	}
}

// signDigest signs a POST with the raw lane and an arbitrary Content-Digest value.
func (c *client) signDigest(l *rawLane, body []byte, digest string) *http.Request {
	req := protocol.Request{Method: "POST", Authority: testHost, Path: "/api/me", ContentDigest: digest}
	l.seq++
	p := protocol.Params{Created: c.e.clock.Now().Unix(), KeyID: protocol.KeyID{Lane: l.lane, Epoch: l.epoch}, Nonce: l.seq}
	sk := protocol.SignKey(&l.key)
	in, sig, err := protocol.NewSigner(&sk).Sign(&req, &p)
	if err != nil {
		c.e.t.Fatal(err)
	}
	r := c.newRequest("POST", "/api/me", body)
	r.Header.Set("Signature-Input", in)
	r.Header.Set("Signature", sig)
	r.Header.Set("Content-Digest", digest)
	return r
}

// TestBadRequests sends malformed, forged, tampered, stale, replayed and otherwise unacceptable
// requests. Each must get the right 4xx (or 503) and reason, never 500, never a panic, and never
// reach the protected handler.
func TestBadRequests(t *testing.T) {
	get := func(c *client) *http.Request { return c.sign("GET", "/api/me?a=1", nil) }
	post := func(c *client) *http.Request { return c.sign("POST", "/api/me", []byte(`{"amount":10}`)) }
	big := strings.Repeat("x", 5000)
	cases := []struct {
		name   string
		status int
		reason string
		opts   []envOpt
		make   func(e *env, c *client) *http.Request
	}{
		// Missing, duplicated and oversize fields.
		{"no signature", 401, "missing_signature", nil, func(e *env, c *client) *http.Request { return c.newRequest("GET", "/api/me", nil) }},
		{"only Signature-Input", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request { r := get(c); r.Header.Del("Signature"); return r }},
		{"only Signature", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request { r := get(c); r.Header.Del("Signature-Input"); return r }},
		{"two Signature-Input lines", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			r := get(c)
			r.Header.Add("Signature-Input", r.Header.Get("Signature-Input"))
			return r
		}},
		{"two Signature lines", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			r := get(c)
			r.Header.Add("Signature", r.Header.Get("Signature"))
			return r
		}},
		{"two Content-Digest lines", 400, "digest_mismatch", nil, func(e *env, c *client) *http.Request {
			r := post(c)
			r.Header.Add("Content-Digest", r.Header.Get("Content-Digest"))
			return r
		}},
		{"empty Signature-Input", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", func(string) string { return "" })
		}},
		{"empty Content-Digest", 400, "digest_mismatch", nil, func(e *env, c *client) *http.Request {
			return edit(post(c), "Content-Digest", func(string) string { return "" })
		}},
		{"oversize Signature-Input", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", func(s string) string { return s + `, pad="` + big + `"` })
		}},
		{"oversize Signature", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature", func(s string) string { return s + `, pad="` + big + `"` })
		}},
		{"oversize Content-Digest", 400, "digest_mismatch", nil, func(e *env, c *client) *http.Request {
			return edit(post(c), "Content-Digest", func(s string) string { return s + `, pad="` + big + `"` })
		}},

		// Structured fields that do not parse (canonical form only).
		{"Signature-Input not a dictionary", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", func(string) string { return "@@@" })
		}},
		{"two spaces between components", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", replace(`"@method" "@authority"`, `"@method"  "@authority"`))
		}},
		{"space after a semicolon", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", replace(`;created`, `; created`))
		}},
		{"trailing comma", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", func(s string) string { return s + "," })
		}},
		{"duplicate label", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", func(s string) string { return s + ", " + s })
		}},
		{"created is a decimal", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", func(s string) string {
				i := strings.Index(s, ";created=")
				j := strings.Index(s, ";keyid")
				return s[:i] + ";created=1.5" + s[j:]
			})
		}},
		{"keyid lane not base64url", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", func(s string) string {
				i := strings.Index(s, `keyid="`) + len(`keyid="`)
				return s[:i] + "!!!!!!!!!!!!!!!!!!!!!!" + s[i+22:]
			})
		}},
		{"keyid epoch with a leading zero", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", replace(`.0"`, `.00"`))
		}},
		{"Signature not base64", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature", func(string) string { return "sv=:!!!!:" })
		}},
		{"Signature base64 without padding", 400, "malformed_signature", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature", func(s string) string { return strings.Replace(s, "=:", ":", 1) })
		}},

		// Parse, but outside the profile.
		{"label is not sv", 400, "profile", nil, func(e *env, c *client) *http.Request {
			r := edit(get(c), "Signature-Input", replace("sv=", "sig1="))
			return edit(r, "Signature", replace("sv=", "sig1="))
		}},
		{"Signature label is not sv", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature", replace("sv=", "other="))
		}},
		{"extra component", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", replace(`"@query")`, `"@query" "@target-uri")`))
		}},
		{"missing @query", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", replace(` "@query")`, `)`))
		}},
		{"components reordered", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", replace(`"@method" "@authority"`, `"@authority" "@method"`))
		}},
		{"component parameter", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", replace(`"@query")`, `"@query";req)`))
		}},
		{"extra parameter", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", func(s string) string { return s + ";expires=99999999999" })
		}},
		{"missing nonce", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", func(s string) string {
				i := strings.Index(s, `;nonce=`)
				j := strings.Index(s, `;alg=`)
				return s[:i] + s[j:]
			})
		}},
		{"alg not hmac-sha256", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", replace(`alg="hmac-sha256"`, `alg="rsa-pss-sha512"`))
		}},
		{"tag not sessionvault", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", replace(`tag="sessionvault"`, `tag="other"`))
		}},
		{"nonce zero", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", func(s string) string {
				i := strings.Index(s, `;nonce="`)
				j := strings.Index(s, `;alg=`)
				return s[:i] + `;nonce="0"` + s[j:]
			})
		}},
		{"nonce an integer", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", replace(`nonce="1"`, `nonce=1`))
		}},
		{"created a string", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", func(s string) string {
				i := strings.Index(s, ";created=") + len(";created=")
				j := strings.Index(s, ";keyid")
				return s[:i] + `"` + s[i:j] + `"` + s[j:]
			})
		}},
		{"created negative", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature-Input", replace(";created=", ";created=-"))
		}},
		{"signature of 16 bytes", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature", func(string) string { return "sv=:" + base64.StdEncoding.EncodeToString(make([]byte, 16)) + ":" })
		}},
		{"signature a string", 400, "profile", nil, func(e *env, c *client) *http.Request {
			return edit(get(c), "Signature", func(string) string { return `sv="abc"` })
		}},

		// Forged and tampered.
		{"wrong key", 401, "bad_signature", nil, func(e *env, c *client) *http.Request {
			l := &rawLane{seq: 77}
			copy(l.lane[:], mustB64u(e.t, c.reply.Lane))
			rand.Read(l.key[:])
			return c.signRaw(l, "GET", "/api/me", nil)
		}},
		{"tampered method", 401, "bad_signature", nil, func(e *env, c *client) *http.Request { r := get(c); r.Method = "DELETE"; return r }},
		{"method case changed", 401, "bad_signature", nil, func(e *env, c *client) *http.Request { r := get(c); r.Method = "get"; return r }},
		{"tampered path", 401, "bad_signature", nil, func(e *env, c *client) *http.Request {
			r := get(c)
			r.RequestURI = strings.Replace(r.RequestURI, "/api/me", "/api/admin", 1)
			r.URL.Path = "/api/admin"
			return r
		}},
		{"path case changed", 401, "bad_signature", nil, func(e *env, c *client) *http.Request {
			r := get(c)
			r.RequestURI = strings.Replace(r.RequestURI, "/api/me", "/api/ME", 1)
			return r
		}},
		{"path percent-encoded differently", 401, "bad_signature", nil, func(e *env, c *client) *http.Request {
			r := get(c)
			r.RequestURI = strings.Replace(r.RequestURI, "/api/me", "/api/%6De", 1)
			return r
		}},
		{"tampered query", 401, "bad_signature", nil, func(e *env, c *client) *http.Request {
			r := get(c)
			r.RequestURI = strings.Replace(r.RequestURI, "a=1", "a=2", 1)
			r.URL.RawQuery = "a=2"
			return r
		}},
		{"query added", 401, "bad_signature", nil, func(e *env, c *client) *http.Request {
			r := c.sign("GET", "/api/me", nil)
			r.RequestURI += "?admin=1"
			r.URL.RawQuery = "admin=1"
			return r
		}},
		{"tampered authority", 401, "bad_signature", nil, func(e *env, c *client) *http.Request { r := get(c); r.Host = "evil.example"; return r }},
		{"port added to authority", 401, "bad_signature", nil, func(e *env, c *client) *http.Request { r := get(c); r.Host = testHost + ":8080"; return r }},
		{"signature of another request", 401, "bad_signature", nil, func(e *env, c *client) *http.Request {
			a := c.sign("GET", "/api/a", nil)
			r := c.newRequest("GET", "/api/b", nil)
			r.Header.Set("Signature-Input", a.Header.Get("Signature-Input"))
			r.Header.Set("Signature", a.Header.Get("Signature"))
			return r
		}},
		{"tampered body", 400, "digest_mismatch", nil, func(e *env, c *client) *http.Request {
			r := post(c)
			r.Body = io.NopCloser(strings.NewReader(`{"amount":99}`))
			return r
		}},
		{"tampered body and digest", 401, "bad_signature", nil, func(e *env, c *client) *http.Request {
			r := post(c)
			r.Body = io.NopCloser(strings.NewReader(`{"amount":99}`))
			r.Header.Set("Content-Digest", protocol.ContentDigest([]byte(`{"amount":99}`)))
			return r
		}},
		{"body added to a bodyless request", 400, "digest_mismatch", nil, func(e *env, c *client) *http.Request {
			r := get(c)
			r.Body = io.NopCloser(strings.NewReader("surprise"))
			r.ContentLength = 8
			return r
		}},
		{"chunked body added to a bodyless request", 400, "digest_mismatch", nil, func(e *env, c *client) *http.Request {
			r := get(c)
			r.Body = io.NopCloser(strings.NewReader("surprise"))
			r.ContentLength = -1
			return r
		}},
		{"Content-Digest added to a bodyless request", 400, "digest_mismatch", nil, func(e *env, c *client) *http.Request {
			r := get(c)
			r.Header.Set("Content-Digest", protocol.ContentDigest(nil))
			return r
		}},
		{"Content-Digest removed", 400, "digest_mismatch", nil, func(e *env, c *client) *http.Request {
			r := post(c)
			r.Header.Del("Content-Digest")
			return r
		}},
		{"signed digest of another algorithm", 400, "digest_mismatch", nil, func(e *env, c *client) *http.Request {
			l := c.rawLogin("bob")
			body := []byte("x")
			sum := sha512.Sum512(body)
			return c.signDigest(l, body, "sha-512=:"+base64.StdEncoding.EncodeToString(sum[:])+":")
		}},
		{"signed digest that does not parse", 400, "digest_mismatch", nil, func(e *env, c *client) *http.Request {
			return c.signDigest(c.rawLogin("bob"), []byte("x"), "sha-256=abc")
		}},

		// Time and replay.
		{"replayed", 401, "replay", nil, func(e *env, c *client) *http.Request {
			r := get(c)
			wantOK(e.t, e.serve(r.Clone(context.Background())))
			e.calls.Store(0)
			return r
		}},
		{"stale created", 401, "expired_signature", nil, func(e *env, c *client) *http.Request {
			r := get(c)
			e.clock.Add(61 * time.Second)
			return r
		}},
		{"future created", 401, "future_signature", nil, func(e *env, c *client) *http.Request {
			l := c.rawLogin("bob")
			l.offset = 10 * time.Second
			return c.signRaw(l, "GET", "/api/me", nil)
		}},

		// Sessions that are not (or no longer) there.
		{"unknown session", 401, "unknown_session", nil, func(e *env, c *client) *http.Request {
			l := &rawLane{seq: 1}
			rand.Read(l.lane[:])
			return c.signRaw(l, "GET", "/api/me", nil)
		}},
		{"revoked session", 401, "revoked", nil, func(e *env, c *client) *http.Request {
			if _, err := e.mgr.RevokeUser(context.Background(), "alice"); err != nil {
				e.t.Fatal(err)
			}
			return get(c)
		}},
		{"logged-out session", 401, "logout", nil, func(e *env, c *client) *http.Request {
			wantOK(e.t, e.serve(c.sign("POST", "/sv/logout", nil)))
			return get(c)
		}},
		{"idle session", 401, "expired", nil, func(e *env, c *client) *http.Request {
			e.clock.Add(31 * time.Minute)
			return get(c)
		}},
		{"future epoch", 401, "bad_signature", nil, func(e *env, c *client) *http.Request {
			l := c.rawLogin("bob")
			l.epoch = 1
			return c.signRaw(l, "GET", "/api/me", nil)
		}},
		{"old epoch after grace", 401, "reuse_detected", nil, func(e *env, c *client) *http.Request {
			l := c.rawLogin("bob")
			old := l.copy()
			old.seq = 100
			eph, _ := protocol.NewEphemeral(rand.Reader)
			wantOK(e.t, c.rotateRaw(l, eph))
			e.clock.Add(31 * time.Second)
			return c.signRaw(old, "GET", "/api/me", nil)
		}},

		// Limits and bindings.
		{"body too large", 413, "body_too_large", []envOpt{func(c *server.Config) { c.MaxBody = 1024 }}, func(e *env, c *client) *http.Request {
			return c.sign("POST", "/api/me", []byte(big))
		}},
		{"chunked body too large", 413, "body_too_large", []envOpt{func(c *server.Config) { c.MaxBody = 1024 }}, func(e *env, c *client) *http.Request {
			r := c.sign("POST", "/api/me", []byte(big))
			r.ContentLength = -1
			return r
		}},
		{"rate limited", 429, "rate_limited", []envOpt{func(c *server.Config) { c.ThrottleThreshold = 1 }}, func(e *env, c *client) *http.Request {
			e.serve(edit(get(c), "Signature", func(string) string { return "sv=:" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + ":" }))
			// Throttled: a request for a lane this node does not cache (here, none) is refused
			// before any store read. (A cached lane's valid request passes: TestThrottledAddressKeepsCachedLanes.)
			return c.newRequest("GET", "/api/x", nil)
		}},
		{"user agent changed", 401, "user_agent_mismatch", []envOpt{func(c *server.Config) { c.BindUserAgent = true }}, func(e *env, c *client) *http.Request {
			r := get(c)
			r.Header.Set("User-Agent", "curl/8.0")
			return r
		}},
		{"store down", 503, "store_unavailable", []envOpt{func(c *server.Config) { c.Store = &failStore{Store: c.Store} }}, func(e *env, c *client) *http.Request {
			e.store.(*failStore).fail.Store(true)
			return get(c)
		}},

		// Signed endpoints with bad content.
		{"rotate body not JSON", 400, "bad_request", nil, func(e *env, c *client) *http.Request {
			return c.sign("POST", "/sv/rotate", []byte("{"))
		}},
		{"rotate low-order key", 400, "bad_request", nil, func(e *env, c *client) *http.Request {
			return c.sign("POST", "/sv/rotate", pubBody([32]byte{}))
		}},
		{"rekey without a key", 400, "bad_request", nil, func(e *env, c *client) *http.Request {
			return c.sign("POST", "/sv/rekey", []byte("{}"))
		}},
		{"logout signed for another path", 401, "bad_signature", nil, func(e *env, c *client) *http.Request {
			r := c.sign("POST", "/sv/rotate", nil)
			r.RequestURI, r.URL.Path = "/sv/logout", "/sv/logout"
			return r
		}},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts...)
			c := e.newClient()
			c.login("alice")
			r := tc.make(e, c)
			calls := e.calls.Load()
			var w = e.serve(r)
			wantRefused(t, w, tc.status, tc.reason)
			if got := e.calls.Load(); got != calls {
				t.Fatal("the protected handler ran")
			}
			if w.Header().Get("Sv-Action") != "" {
				t.Error("Sv-Action on a refusal")
			}
			if !bytes.HasPrefix(w.Body.Bytes(), []byte(`{"error":`)) || w.Header().Get("Content-Type") != "application/json" {
				t.Errorf("refusal body %q", w.Body)
			}
		})
	}
}
