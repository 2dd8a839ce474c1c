package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/memstore"
)

// checkPassword stands for the application's own credential check.
func checkPassword(ctx context.Context, r *http.Request, cred json.RawMessage) (string, map[string]string, error) {
	return "", nil, server.ErrBadCredentials
}

func ExampleManager() {
	m, err := server.New(server.Config{
		Store:         memstore.New(), // boltstore.Open("sessions.db", nil) for a durable one
		StoreKey:      nil,            // a durable store needs a 32-byte key from your secret store
		Module:        nil,            // the built vault.wasm (//go:embed): the handler then serves it and client.js
		Authenticator: server.AuthenticatorFunc(checkPassword),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	mux := http.NewServeMux()
	mux.Handle("/sv/", m.Handler()) // login, logout, rotate, rekey, join, events, worker.js (+ vault.wasm, client.js with Module)
	mux.Handle("/api/", m.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := server.FromContext(r.Context())
		fmt.Fprintf(w, "hello %s\n", s.UserID)
	})))
	// log.Fatal(http.ListenAndServeTLS(":443", "cert.pem", "key.pem", mux))

	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", "/api/me", nil)) // not signed by a worker
	fmt.Println(w.Code, w.Header().Get("Sv-Error"))
	// Output: 401 missing_signature
}
