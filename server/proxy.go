package server

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ForwardedFor returns a [Config.ClientAddr] for a service behind reverse proxies or load
// balancers that append the address they received a request from to X-Forwarded-For. A request
// whose direct peer (r.RemoteAddr) is in trusted is attributed to the right-most address of
// X-Forwarded-For that is not itself in trusted (every proxy of yours is skipped; a client's own
// X-Forwarded-For entries, to the left, are never believed); a request from any other peer is
// attributed to the peer. trusted lists your proxies' addresses, such as
// netip.MustParsePrefix("10.0.0.0/8").
func ForwardedFor(trusted ...netip.Prefix) func(r *http.Request) string {
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return func(r *http.Request) string {
		peer := defaultClientAddr(r)
		a, err := netip.ParseAddr(peer)
		if err != nil || !isTrusted(a.Unmap()) {
			return peer
		}
		hops := r.Header.Values("X-Forwarded-For")
		for i := len(hops) - 1; i >= 0; i-- {
			entries := strings.Split(hops[i], ",")
			for j := len(entries) - 1; j >= 0; j-- {
				hop, ok := parseHop(entries[j])
				if !ok {
					return a.Unmap().String() // garbled by someone: the last hop we trust
				}
				a = hop
				if !isTrusted(hop) {
					return hop.String()
				}
			}
		}
		return a.String() // every hop is ours: the first one
	}
}

// parseHop reads one X-Forwarded-For entry: an address, perhaps with a port.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(h); err == nil {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}
