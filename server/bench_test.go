package server_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/boltstore"
	"github.com/sessionvault/sessionvault/server/memstore"
)

// benchWriter is a ResponseWriter that keeps nothing, so that the benchmark measures the
// middleware and not the recorder.
type benchWriter struct {
	h    http.Header
	code int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *benchWriter) WriteHeader(code int)        { w.code = code }

// benchSession logs in one lane on a Manager over st and returns the Require-wrapped no-op
// handler, a vault holding the lane, and the fixed clock.
func benchSession(b *testing.B, st server.Store) (http.Handler, *vault.Vault) {
	now := time.Now().Add(2 * time.Second).Truncate(time.Second) // after any replay floor
	clk := func() time.Time { return now }
	m, err := server.New(server.Config{
		Store:    st,
		StoreKey: testStoreKey,
		Authenticator: server.AuthenticatorFunc(func(context.Context, *http.Request, json.RawMessage) (string, map[string]string, error) {
			return "bench", map[string]string{"role": "user"}, nil
		}),
		Logger: slog.New(slog.DiscardHandler),
		Now:    clk,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	v := vault.New(rand.Reader, clk)
	if err := v.BindPolicy(vault.Policy{Self: testOrigin}); err != nil {
		b.Fatal(err)
	}
	pub, _ := v.Begin(protocol.HandshakeLogin)
	body, _ := json.Marshal(map[string]any{"pub": b64u(pub[:]), "credentials": nil})
	r := httptest.NewRequest("POST", "/sv/login", strings.NewReader(string(body)))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, r)
	var rep loginReply
	if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil {
		b.Fatalf("login: %s", w.Body)
	}
	var lane protocol.LaneID
	var spub [32]byte
	copy(lane[:], mustB64uB(b, rep.Lane))
	copy(spub[:], mustB64uB(b, rep.Pub))
	if err := v.Finish(vault.Handshake{Lane: lane, ServerPub: spub, Confirm: mustB64uB(b, rep.Confirm), ServerTime: rep.ServerTime, Expires: rep.Expires}); err != nil {
		b.Fatal(err)
	}
	return m.Require(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})), v
}

func mustB64uB(b *testing.B, s string) []byte {
	b.Helper()
	out, err := b64Decode(s)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// benchRequire measures Require's verify path: parse both headers, look up the lane, HMAC,
// created window, replay check, context, and the call of a no-op handler. Requests are signed
// ahead, in chunks, outside the timer (the worker signs, not the server).
func benchRequire(b *testing.B, st server.Store) {
	h, v := benchSession(b, st)
	const chunk = 4096
	sigIn := make([][]string, chunk)
	sig := make([][]string, chunk)
	r := httptest.NewRequest("GET", "/api/items?id=42", nil)
	r.Host = testHost
	r.RemoteAddr = "192.0.2.1:50000"
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%chunk == 0 {
			b.StopTimer()
			for j := range chunk {
				s, err := v.Sign(vault.SignRequest{Method: "GET", Origin: testOrigin, Path: "/api/items", Query: "id=42"})
				if err != nil {
					b.Fatal(err)
				}
				sigIn[j], sig[j] = []string{s.SignatureInput}, []string{s.Signature}
			}
			runtime.GC() // the signing's garbage is the worker's, not the server's
			b.StartTimer()
		}
		r.Header["Signature-Input"] = sigIn[i%chunk]
		r.Header["Signature"] = sig[i%chunk]
		h.ServeHTTP(w, r)
		if w.code != 0 {
			b.Fatalf("refused: %d %v", w.code, w.h)
		}
	}
}

func BenchmarkRequire(b *testing.B) {
	b.Run("memstore", func(b *testing.B) { benchRequire(b, memstore.New()) })
	b.Run("boltstore", func(b *testing.B) {
		st, err := boltstore.Open(filepath.Join(b.TempDir(), "sv.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		benchRequire(b, st)
	})
}

// BenchmarkGolangJWTHS256 is the peer: parse and verify an HS256 JWT carrying what our
// signature carries (a key or session reference, issue time, expiry, a unique ID), with
// golang-jwt v5's recommended options.
func BenchmarkGolangJWTHS256(b *testing.B) {
	key := make([]byte, 32)
	rand.Read(key)
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Issuer:    "https://app.example",
		Subject:   "user-1234",
		Audience:  jwt.ClaimStrings{"https://app.example/api"},
		ExpiresAt: jwt.NewNumericDate(now.Add(10 * time.Minute)),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		IssuedAt:  jwt.NewNumericDate(now),
		ID:        "AAECAwQFBgcICQoLDA0ODw.0.42",
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		b.Fatal(err)
	}
	keyFunc := func(*jwt.Token) (any, error) { return key, nil }
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithIssuer("https://app.example")}
	b.Run("MapClaims", func(b *testing.B) {
		p := jwt.NewParser(opts...)
		b.ReportAllocs()
		for b.Loop() {
			t, err := p.Parse(tok, keyFunc)
			if err != nil || !t.Valid {
				b.Fatal(err)
			}
		}
	})
	b.Run("RegisteredClaims", func(b *testing.B) {
		p := jwt.NewParser(opts...)
		b.ReportAllocs()
		for b.Loop() {
			var c jwt.RegisteredClaims
			t, err := p.ParseWithClaims(tok, &c, keyFunc)
			if err != nil || !t.Valid {
				b.Fatal(err)
			}
		}
	})
}
