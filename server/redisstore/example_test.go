package redisstore_test

import (
	"context"
	"log"
	"time"

	"github.com/sessionvault/sessionvault/server/redisstore"
)

// Each node opens the same Redis and subscribes to the notices of the others: a session deleted
// on any node (logout, revocation, reuse detected) is announced with its lanes, and a node that
// lost its subscription for a while is told to resync when it is back.
func ExampleStore_Subscribe() {
	ctx := context.Background()
	st, err := redisstore.Open("redis://127.0.0.1:6379/0", &redisstore.Options{IdleTimeout: 30 * time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	stop, err := st.Subscribe(ctx, func(n redisstore.Notice) {
		if n.Resync {
			// Notices may have been missed: re-check every lane with an open event
			// connection (st.Lane returns a *server.GoneError for a deleted one).
			return
		}
		for _, lane := range n.Lanes {
			_ = lane // re-check the lane, then send it a "revoked" event and drop its caches
		}
	})
	if err != nil {
		log.Fatal(err) // Redis is down: retry later
	}
	defer stop()
}
