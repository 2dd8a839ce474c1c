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
// X-Forwarded-For that is not itself in trusted (every proxy of yours is skipped, and a client's
// own X-Forwarded-For entries, to the left of the address your proxy appended, are not
// believed); a request from any other peer is attributed to the peer. trusted must list your
// proxies only (netip.MustParsePrefix("10.0.1.0/24")): a client whose own address is in it is
// trusted too, and may name any address.
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
		a = a.Unmap()
		hops := r.Header.Values("X-Forwarded-For")
		for i := len(hops) - 1; i >= 0; i-- {
			entries := strings.Split(hops[i], ",")
			for j := len(entries) - 1; j >= 0; j-- {
				hop, ok := parseHop(entries[j])
				if !ok {
					return a.String() // garbled by someone: the last hop we trust
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
	a, err := netip.ParseAddr(s)
	if err != nil {
		h, _, err2 := net.SplitHostPort(s)
		if err2 != nil {
			return netip.Addr{}, false
		}
		if a, err = netip.ParseAddr(h); err != nil {
			return netip.Addr{}, false
		}
	}
	if a.Zone() != "" { // no proxy writes one; it would carry arbitrary text into the logs
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
