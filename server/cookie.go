package server

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// The browser-session cookie (PROTOCOL.md section 3.2) names the session to the boot-script and
// join endpoints. It carries the session ID sealed under a key derived from Config.StoreKey:
//
//	value      = b64url(0x01 || nonce [12] || AES-256-GCM(cookie key, nonce, session ID, aad))
//	aad        = "sessionvault/v1 cookie"
//	cookie key = HKDF-SHA256(StoreKey, salt = nil, info = "sessionvault/v1 cookie-seal", 32)
//
// So the cookie reveals nothing (not even the session's handle) to whoever sees it, a store thief
// (who holds session IDs but not the StoreKey) cannot make one, and every node that shares the
// StoreKey reads it. It is HttpOnly, so page script cannot read it; alone it authorizes nothing
// but a boot script's ticket, which the browser only hands to a fresh worker (see join.go).
const (
	cookieVersion  = 1
	cookieAAD      = "sessionvault/v1 cookie"
	cookieKeyInfo  = "sessionvault/v1 cookie-seal"
	cookieNonceLen = 12
	cookieRawLen   = 1 + cookieNonceLen + 32 + 16
	// cookieMaxLen bounds what is decoded: anything longer is not ours.
	cookieMaxLen = 128
)

var errCookie = errors.New("server: join cookie does not open")

type cookieSealer struct{ sealBox }

func newCookieSealer(storeKey []byte, rand io.Reader) (*cookieSealer, error) {
	b, err := newSealBox(storeKey, cookieKeyInfo, rand)
	return &cookieSealer{b}, err
}

// seal returns the cookie value naming sessionID.
func (c *cookieSealer) seal(sessionID []byte) (string, error) {
	out := make([]byte, 1+cookieNonceLen, cookieRawLen)
	out[0] = cookieVersion
	if _, err := io.ReadFull(c.rand, out[1:]); err != nil {
		return "", err
	}
	out = c.aead.Seal(out, out[1:1+cookieNonceLen], sessionID, []byte(cookieAAD))
	return b64.EncodeToString(out), nil
}

// open returns the session ID a cookie value names, or errCookie.
func (c *cookieSealer) open(v string) ([]byte, error) {
	if len(v) > cookieMaxLen {
		return nil, errCookie
	}
	raw, err := b64.Strict().DecodeString(v)
	if err != nil || len(raw) < 1+cookieNonceLen+16 || raw[0] != cookieVersion {
		return nil, errCookie
	}
	id, err := c.aead.Open(nil, raw[1:1+cookieNonceLen], raw[1+cookieNonceLen:], []byte(cookieAAD))
	if err != nil || len(id) == 0 {
		return nil, errCookie
	}
	return id, nil
}

// cookieSession returns the session ID of the request's join cookie: ok false without one,
// errCookie for one that does not open (forged, from another StoreKey, or mangled). Several
// cookies of the name (a __Host- cookie cannot be shadowed by a subdomain, but be strict): the
// first that opens.
func (m *Manager) cookieSession(r *http.Request) (id []byte, present bool, err error) {
	for _, c := range r.CookiesNamed(m.join.cookieName) {
		present = true
		if id, err = m.join.cookies.open(c.Value); err == nil {
			return id, true, nil
		}
	}
	if present {
		return nil, true, errCookie
	}
	return nil, false, nil
}

// setCookie gives the browser the join cookie of sess (at login and re-key). It is a session
// cookie unless JoinConfig.CookieLifetime asks for a lifetime, which never outlasts the session.
// A sealing failure (the random source) leaves the login standing without join.
func (m *Manager) setCookie(w http.ResponseWriter, r *http.Request, sess *Session) {
	if m.join.disabled {
		return
	}
	if r.TLS == nil && !strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") && !loopbackHost(m.authorityOf(r)) {
		// At most once a minute: every login of a misconfigured site would say the same.
		if m.plainHTTP.Allow(m.now(), time.Minute) {
			m.log.LogAttrs(r.Context(), slog.LevelWarn, "sessionvault", slog.String("event", "insecure_transport"),
				slog.String("host", clip(m.authorityOf(r))),
				slog.String("cause", "a login over plain HTTP to a host other than localhost: browsers drop the Secure join cookie, so reloads and new tabs will not keep sessions; serve the site over HTTPS (logged at most once a minute)"))
		}
	}
	v, err := m.join.cookies.seal(sess.ID)
	if err != nil {
		return
	}
	var b strings.Builder
	b.WriteString(m.join.cookieName)
	b.WriteByte('=')
	b.WriteString(v)
	b.WriteString("; Path=/; Secure; HttpOnly; SameSite=Strict")
	if life := m.join.cookieLifetime; life > 0 {
		if left := sess.Expires.Sub(m.now()); left < life {
			life = left
		}
		secs := int64(life / time.Second)
		if secs < 1 {
			secs = 1
		}
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.FormatInt(secs, 10))
	}
	w.Header().Add("Set-Cookie", b.String())
}

// clearCookie tells the browser to drop the join cookie: at logout, and when a request brings
// one that does not open (it never will). Not for a cookie whose session has ended: the clear
// would land after, and delete, the cookie of a login made meanwhile in another tab (bootTicket).
func (m *Manager) clearCookie(w http.ResponseWriter) {
	if m.join.disabled {
		return
	}
	w.Header().Add("Set-Cookie", m.join.cookieName+"=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

// clearSiteData sends Clear-Site-Data: "cookies" with a logout, if JoinConfig.ClearSiteData.
func (m *Manager) clearSiteData(w http.ResponseWriter) {
	if !m.join.disabled && m.join.clearSiteData {
		w.Header().Set("Clear-Site-Data", `"cookies"`)
	}
}

// loopbackHost reports whether host[:port] is localhost (or a name under it) or a loopback
// address: the hosts where browsers keep Secure cookies over plain HTTP.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
