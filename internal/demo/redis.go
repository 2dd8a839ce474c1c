package demo

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/redisstore"
)

// openRedis opens the redisstore at url (a redis://, rediss:// or unix:// URL) and checks that
// Redis answers, so that a wrong address is said at start rather than as 503s. Once running, a
// Redis that goes away makes the demo answer 503 until it is back.
func openRedis(url string, idle time.Duration) (*redisstore.Store, error) {
	if !strings.HasPrefix(url, "redis://") && !strings.HasPrefix(url, "rediss://") && !strings.HasPrefix(url, "unix://") {
		return nil, errors.New(`demo: -store must be "bolt", "mem" or a Redis URL (redis://host:port/db)`)
	}
	if idle == 0 {
		idle = server.DefaultIdleTimeout
	}
	st, err := redisstore.Open(url, &redisstore.Options{IdleTimeout: idle})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := st.Ping(ctx); err != nil {
		st.Close()
		return nil, errors.New("demo: Redis at " + RedactURL(url) + " does not answer: " + err.Error())
	}
	return st, nil
}

// RedactURL drops the password of a store URL (redis://user:pass@host), for logs and messages;
// other values come back as they are.
func RedactURL(url string) string {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return url
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = "…@" + rest[at+1:]
	}
	return scheme + "://" + rest
}
