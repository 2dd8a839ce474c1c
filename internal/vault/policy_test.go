package vault

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

func TestPolicyBoundOnce(t *testing.T) {
	h := newHarness(t, 0) // appPolicy bound
	for _, p := range []Policy{
		appPolicy,
		{Self: "https://evil.example"},
		{Self: appOrigin, Origins: []string{"https://evil.example"}, Methods: []string{"OPTIONS"}},
		{Self: "not an origin"}, // even invalid input gets policy_bound, not bad_input
	} {
		before := snapshot(h.v)
		wantCode(t, h.v.BindPolicy(p), CodePolicyBound)
		unchanged(t, h.v, before, "a second bind")
	}
	// Through the ABI too.
	code, _ := call(t, h.v, msg(OpPolicy, sfield(1, "https://evil.example"), lfield(2, "https://evil.example")))
	if code != CodePolicyBound {
		t.Fatalf("second OpPolicy: %s", code)
	}
	h.login()
	h.sign(getMe)
	_, err := h.v.Sign(SignRequest{Method: "GET", Origin: "https://evil.example", Path: "/"})
	wantCode(t, err, CodePolicyDenied)
	_, err = h.v.Sign(SignRequest{Method: "OPTIONS", Origin: appOrigin, Path: "/"})
	wantCode(t, err, CodePolicyDenied)
}

// A refused bind binds nothing: a later valid bind succeeds.
func TestPolicyRefusedBindBindsNothing(t *testing.T) {
	v := New(newRand(1), (&clock{t0}).now)
	wantCode(t, v.BindPolicy(Policy{Self: "https://app.example", Methods: []string{"get"}}), CodeBadInput)
	if v.policy != nil {
		t.Fatal("a refused policy was bound")
	}
	if err := v.BindPolicy(appPolicy); err != nil {
		t.Fatal(err)
	}
}

// The vault keeps its own copy: the caller's slices changing later changes nothing.
func TestPolicyCopied(t *testing.T) {
	origins := []string{appOrigin}
	prefixes := []string{"/api/"}
	methods := []string{"GET"}
	h := &harness{t: t, local: &clock{t0}, remote: &clock{t0}}
	h.v = New(newRand(1), h.local.now)
	h.srv = newFakeServer(t, h.remote, 2)
	if err := h.v.BindPolicy(Policy{Self: appOrigin, Origins: origins, Prefixes: prefixes, Methods: methods}); err != nil {
		t.Fatal(err)
	}
	origins[0], prefixes[0], methods[0] = "https://evil.example", "/", "DELETE"
	h.login()
	h.sign(SignRequest{Method: "GET", Origin: appOrigin, Path: "/api/x"})
	for _, r := range []SignRequest{
		{Method: "GET", Origin: "https://evil.example", Path: "/api/x"},
		{Method: "GET", Origin: appOrigin, Path: "/admin"},
		{Method: "DELETE", Origin: appOrigin, Path: "/api/x"},
	} {
		_, err := h.v.Sign(r)
		wantCode(t, err, CodePolicyDenied)
	}
}

// Default: same origin only, every path, the usual methods.
func TestPolicyDefault(t *testing.T) {
	h := active(t)
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
		h.sign(SignRequest{Method: m, Origin: appOrigin, Path: "/any/path"})
	}
	h.sign(SignRequest{Method: "GET", Origin: appOrigin, Path: "/"})
	for _, r := range []SignRequest{
		{Method: "GET", Origin: "https://api.example", Path: "/"},
		{Method: "GET", Origin: "https://sub.app.example", Path: "/"},
		{Method: "GET", Origin: "http://app.example", Path: "/"},
		{Method: "GET", Origin: "https://app.example:443", Path: "/"},
		{Method: "GET", Origin: "https://app.example:8443", Path: "/"},
		{Method: "GET", Origin: "https://APP.example", Path: "/"},
		{Method: "GET", Origin: "https://app.example/", Path: "/"},
		{Method: "GET", Origin: "https://app.example.", Path: "/"},
		{Method: "GET", Origin: "https://app.example.evil.example", Path: "/"},
		{Method: "GET", Origin: "https://app.example@evil.example", Path: "/"},
		{Method: "GET", Origin: "null", Path: "/"},
		{Method: "GET", Origin: "", Path: "/"},
		{Method: "OPTIONS", Origin: appOrigin, Path: "/"},
		{Method: "TRACE", Origin: appOrigin, Path: "/"},
		{Method: "CONNECT", Origin: appOrigin, Path: "/"},
		{Method: "get", Origin: appOrigin, Path: "/"},
		{Method: "", Origin: appOrigin, Path: "/"},
	} {
		before := snapshot(h.v)
		_, err := h.v.Sign(r)
		wantCode(t, err, CodePolicyDenied)
		unchanged(t, h.v, before, "a denied request")
	}
}

func TestPolicyEnforced(t *testing.T) {
	h := newHarness(t, 0)
	h.v = New(newRand(1), h.local.now)
	err := h.v.BindPolicy(Policy{
		Self:     appOrigin,
		Origins:  []string{appOrigin, "https://api.example:8443", "http://localhost:8080"},
		Prefixes: []string{"/api", "/v1/"},
		Methods:  []string{"GET", "POST", "DELETE"},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.login()
	const api = "https://api.example:8443"
	cases := []struct {
		method, origin, path string
		ok                   bool
	}{
		// prefixes: "/api" matches itself and below it, "/v1/" only below it
		{"GET", appOrigin, "/api", true},
		{"GET", appOrigin, "/api/", true},
		{"GET", appOrigin, "/api/x", true},
		{"GET", appOrigin, "/api/x/y.json", true},
		{"GET", appOrigin, "/api/x/", true},
		{"GET", appOrigin, "/api/%41", true},
		{"GET", appOrigin, "/api/a%20b", true},
		{"GET", appOrigin, "/api/x;v=1", true},
		{"GET", appOrigin, "/api/...", true},
		{"GET", appOrigin, "/apix", false},
		{"GET", appOrigin, "/api-x", false},
		{"GET", appOrigin, "/api.json", false},
		{"GET", appOrigin, "/ap", false},
		{"GET", appOrigin, "/", false},
		{"GET", appOrigin, "/admin", false},
		{"GET", appOrigin, "/API/x", false},
		{"GET", appOrigin, "/v1", false},
		{"GET", appOrigin, "/v1x", false},
		{"GET", appOrigin, "/v1/", true},
		{"GET", appOrigin, "/v1/users", true},
		// dot segments, raw and encoded
		{"GET", appOrigin, "/api/../admin", false},
		{"GET", appOrigin, "/api/./x", false},
		{"GET", appOrigin, "/api/.", false},
		{"GET", appOrigin, "/api/..", false},
		{"GET", appOrigin, "/api/%2e%2e/admin", false},
		{"GET", appOrigin, "/api/%2E%2E/admin", false},
		{"GET", appOrigin, "/api/.%2e/admin", false},
		{"GET", appOrigin, "/api/%2e./admin", false},
		{"GET", appOrigin, "/api/%2e/x", false},
		{"GET", appOrigin, "/v1/%2e%2E/admin", false},
		// dot segments with a path parameter (Tomcat and Spring strip ";..." before resolving)
		{"GET", appOrigin, "/api/..;/admin", false},
		{"GET", appOrigin, "/api/..;x=1/admin", false},
		{"GET", appOrigin, "/api/.;/x", false},
		// encoded and doubled slashes, backslashes
		{"GET", appOrigin, "/api%2Fx", false},
		{"GET", appOrigin, "/api%2fx", false},
		{"GET", appOrigin, "/api/x%2F..%2Fadmin", false},
		{"GET", appOrigin, "//evil", false},
		{"GET", appOrigin, "//evil.example/api", false},
		{"GET", appOrigin, "/api//x", false},
		{"GET", appOrigin, "/api/x//", false},
		{"GET", appOrigin, "/api\\x", false},
		{"GET", appOrigin, "/api/\\..\\admin", false},
		{"GET", appOrigin, "/api%5cx", false},
		{"GET", appOrigin, "/api%5Cx", false},
		// query and fragment do not belong in the path
		{"GET", appOrigin, "/api?x=1", false},
		{"GET", appOrigin, "/api/x?y", false},
		{"GET", appOrigin, "/api#x", false},
		{"GET", appOrigin, "/api/x#/../admin", false},
		// not absolute, not printable ASCII
		{"GET", appOrigin, "", false},
		{"GET", appOrigin, "api/x", false},
		{"GET", appOrigin, "/api/ x", false},
		{"GET", appOrigin, "/api/\tx", false},
		{"GET", appOrigin, "/api/\x00", false},
		{"GET", appOrigin, "/api/\x7f", false},
		{"GET", appOrigin, "/api/\r\nX: y", false},
		{"GET", appOrigin, "/api/é", false},
		{"GET", appOrigin, "/api/\u2025", false},
		// methods are case sensitive and listed
		{"POST", appOrigin, "/api/x", true},
		{"DELETE", appOrigin, "/api/x", true},
		{"get", appOrigin, "/api/x", false},
		{"Get", appOrigin, "/api/x", false},
		{"post", appOrigin, "/api/x", false},
		{"PUT", appOrigin, "/api/x", false},
		{"PATCH", appOrigin, "/api/x", false},
		{"HEAD", appOrigin, "/api/x", false},
		{"GET ", appOrigin, "/api/x", false},
		{"", appOrigin, "/api/x", false},
		// origins match exactly: scheme, host and port
		{"GET", api, "/api/x", true},
		{"GET", "http://localhost:8080", "/api/x", true},
		{"GET", "https://api.example", "/api/x", false},
		{"GET", "https://api.example:443", "/api/x", false},
		{"GET", "https://api.example:8444", "/api/x", false},
		{"GET", "https://api.example:08443", "/api/x", false},
		{"GET", "http://api.example:8443", "/api/x", false},
		{"GET", "https://localhost:8080", "/api/x", false},
		{"GET", "http://localhost", "/api/x", false},
		{"GET", "http://app.example", "/api/x", false},
		{"GET", "https://app.example:443", "/api/x", false},
		{"GET", "HTTPS://app.example", "/api/x", false},
		{"GET", "https://APP.EXAMPLE", "/api/x", false},
		{"GET", "https://app.example/", "/api/x", false},
		{"GET", "https://evil.example", "/api/x", false},
		{"GET", "https://app.example.evil.example", "/api/x", false},
		{"GET", "https://evil.example#https://app.example", "/api/x", false},
		{"GET", "app.example", "/api/x", false},
		{"GET", "", "/api/x", false},
	}
	for _, c := range cases {
		r := SignRequest{Method: c.method, Origin: c.origin, Path: c.path}
		before := snapshot(h.v)
		sig, err := h.v.Sign(r)
		if c.ok {
			if err != nil {
				t.Errorf("%s %s%q: %v", c.method, c.origin, c.path, err)
				continue
			}
			if _, err := h.srv.verify(r, sig); err != nil {
				t.Errorf("%s %s%q: server refuses: %v", c.method, c.origin, c.path, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s %s%q: signed, want policy_denied", c.method, c.origin, c.path)
			continue
		}
		if !isCode(err, CodePolicyDenied) {
			t.Errorf("%s %s%q: %v, want policy_denied", c.method, c.origin, c.path, err)
		}
		unchanged(t, h.v, before, "a denied request")
	}
}

func isCode(err error, code string) bool {
	e, ok := err.(*Error)
	return ok && e.Code == code
}

func TestPolicyBadInput(t *testing.T) {
	long := "https://" + strings.Repeat("a", maxPolicyItem-len("https://")+1)
	many := func(f func(i int) string) []string {
		s := make([]string, maxPolicyItems+1)
		for i := range s {
			s[i] = f(i)
		}
		return s
	}
	host := func(i int) string { return "https://h" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".example" }
	path := func(i int) string { return "/p" + string(rune('a'+i%26)) + string(rune('a'+i/26)) }
	meth := func(i int) string { return "M" + string(rune('A'+i%26)) + string(rune('A'+i/26)) }
	cases := []struct {
		name string
		p    Policy
		code string
	}{
		{"self missing", Policy{}, CodeBadInput},
		{"self bare host", Policy{Self: "app.example"}, CodeBadInput},
		{"self no host", Policy{Self: "https://"}, CodeBadInput},
		{"self with slash", Policy{Self: "https://app.example/"}, CodeBadInput},
		{"self with path", Policy{Self: "https://app.example/api"}, CodeBadInput},
		{"self with query", Policy{Self: "https://app.example?x"}, CodeBadInput},
		{"self upper case", Policy{Self: "https://App.example"}, CodeBadInput},
		{"self upper scheme", Policy{Self: "HTTPS://app.example"}, CodeBadInput},
		{"self other scheme", Policy{Self: "ftp://app.example"}, CodeBadInput},
		{"self null", Policy{Self: "null"}, CodeBadInput},
		{"self wildcard", Policy{Self: "*"}, CodeBadInput},
		{"self userinfo", Policy{Self: "https://u@app.example"}, CodeBadInput},
		{"self space", Policy{Self: "https://app .example"}, CodeBadInput},
		{"self too long", Policy{Self: long}, CodeBadInput},
		{"origin wildcard", Policy{Self: appOrigin, Origins: []string{appOrigin, "*"}}, CodeBadInput},
		{"origin null", Policy{Self: appOrigin, Origins: []string{"null"}}, CodeBadInput},
		{"origin empty", Policy{Self: appOrigin, Origins: []string{""}}, CodeBadInput},
		{"origin with path", Policy{Self: appOrigin, Origins: []string{"https://a.example/x"}}, CodeBadInput},
		{"origin upper", Policy{Self: appOrigin, Origins: []string{"https://A.example"}}, CodeBadInput},
		{"origin too long", Policy{Self: appOrigin, Origins: []string{long}}, CodeBadInput},
		{"prefix relative", Policy{Self: appOrigin, Prefixes: []string{"api"}}, CodeBadInput},
		{"prefix relative dot", Policy{Self: appOrigin, Prefixes: []string{"./api"}}, CodeBadInput},
		{"prefix empty", Policy{Self: appOrigin, Prefixes: []string{""}}, CodeBadInput},
		{"prefix dot dot", Policy{Self: appOrigin, Prefixes: []string{"/api/../x"}}, CodeBadInput},
		{"prefix trailing dot dot", Policy{Self: appOrigin, Prefixes: []string{"/api/.."}}, CodeBadInput},
		{"prefix encoded dots", Policy{Self: appOrigin, Prefixes: []string{"/api/%2e%2e/"}}, CodeBadInput},
		{"prefix encoded slash", Policy{Self: appOrigin, Prefixes: []string{"/a%2Fb"}}, CodeBadInput},
		{"prefix double slash", Policy{Self: appOrigin, Prefixes: []string{"//x"}}, CodeBadInput},
		{"prefix inner double slash", Policy{Self: appOrigin, Prefixes: []string{"/api//"}}, CodeBadInput},
		{"prefix backslash", Policy{Self: appOrigin, Prefixes: []string{"/a\\b"}}, CodeBadInput},
		{"prefix query", Policy{Self: appOrigin, Prefixes: []string{"/a?b"}}, CodeBadInput},
		{"prefix fragment", Policy{Self: appOrigin, Prefixes: []string{"/a#b"}}, CodeBadInput},
		{"prefix space", Policy{Self: appOrigin, Prefixes: []string{"/a b"}}, CodeBadInput},
		{"prefix non-ASCII", Policy{Self: appOrigin, Prefixes: []string{"/é"}}, CodeBadInput},
		{"prefix dot dot param", Policy{Self: appOrigin, Prefixes: []string{"/api/..;/"}}, CodeBadInput},
		{"prefix too long", Policy{Self: appOrigin, Prefixes: []string{"/" + strings.Repeat("a", maxPolicyItem)}}, CodeBadInput},
		{"method lower", Policy{Self: appOrigin, Methods: []string{"get"}}, CodeBadInput},
		{"method mixed", Policy{Self: appOrigin, Methods: []string{"GET", "Post"}}, CodeBadInput},
		{"method empty", Policy{Self: appOrigin, Methods: []string{""}}, CodeBadInput},
		{"method dash", Policy{Self: appOrigin, Methods: []string{"G-T"}}, CodeBadInput},
		{"method space", Policy{Self: appOrigin, Methods: []string{"GET "}}, CodeBadInput},
		{"method wildcard", Policy{Self: appOrigin, Methods: []string{"*"}}, CodeBadInput},
		{"method too long", Policy{Self: appOrigin, Methods: []string{strings.Repeat("A", 17)}}, CodeBadInput},
		{"too many origins", Policy{Self: appOrigin, Origins: many(host)}, CodeTooLarge},
		{"too many prefixes", Policy{Self: appOrigin, Prefixes: many(path)}, CodeTooLarge},
		{"too many methods", Policy{Self: appOrigin, Methods: many(meth)}, CodeTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := New(newRand(1), (&clock{t0}).now)
			wantCode(t, v.BindPolicy(c.p), c.code)
			if v.policy != nil {
				t.Fatal("a refused policy was bound")
			}
			// The same through the ABI.
			fs := []protocol.Field{sfield(1, c.p.Self)}
			if c.p.Origins != nil {
				fs = append(fs, lfield(2, c.p.Origins...))
			}
			if c.p.Prefixes != nil {
				fs = append(fs, lfield(3, c.p.Prefixes...))
			}
			if c.p.Methods != nil {
				fs = append(fs, lfield(4, c.p.Methods...))
			}
			code, _ := call(t, v, msg(OpPolicy, fs...))
			switch {
			case c.code == CodeTooLarge:
				// The ABI's list decoder refuses the 33rd item itself (as bad_input).
				if code != CodeTooLarge && code != CodeBadInput {
					t.Fatalf("ABI: %s", code)
				}
			case c.name == "self too long":
				if code != CodeTooLarge { // the ABI bounds the field before the policy sees it
					t.Fatalf("ABI: %s", code)
				}
			case code != c.code:
				t.Fatalf("ABI: %s, want %s", code, c.code)
			}
			if v.policy != nil {
				t.Fatal("a refused policy was bound through the ABI")
			}
		})
	}

	// The limits themselves are allowed.
	all := func(s []string) []string { return s[:maxPolicyItems] }
	v := New(newRand(1), (&clock{t0}).now)
	if err := v.BindPolicy(Policy{Self: appOrigin, Origins: all(many(host)), Prefixes: all(many(path)), Methods: all(many(meth))}); err != nil {
		t.Fatalf("policy at the limits: %v", err)
	}
}

// The policy through the ABI, lists included, means the same as through BindPolicy.
func TestPolicyABI(t *testing.T) {
	h := &harness{t: t, local: &clock{t0}, remote: &clock{t0}}
	h.v = New(newRand(1), h.local.now)
	h.srv = newFakeServer(t, h.remote, 2)
	mustCall(t, h.v, msg(OpPolicy, sfield(1, appOrigin), lfield(2, appOrigin, "https://api.example"),
		lfield(3, "/api/"), lfield(4, "GET")))
	h.login()
	h.sign(SignRequest{Method: "GET", Origin: "https://api.example", Path: "/api/x"})
	for _, r := range []SignRequest{
		{Method: "POST", Origin: appOrigin, Path: "/api/x"},
		{Method: "GET", Origin: appOrigin, Path: "/api"},
		{Method: "GET", Origin: "https://other.example", Path: "/api/x"},
	} {
		_, err := h.v.Sign(r)
		wantCode(t, err, CodePolicyDenied)
	}
}

// TestCleanPathSegments checks cleanPath's allocation-free segment scan against the plain
// strings.Split formulation on random paths over the characters that matter to it.
func TestCleanPathSegments(t *testing.T) {
	splitOK := func(p string) bool {
		for _, seg := range strings.Split(p, "/") {
			if i := strings.IndexByte(seg, ';'); i >= 0 {
				seg = seg[:i]
			}
			if seg == "." || seg == ".." {
				return false
			}
		}
		return true
	}
	// cleanPath's other rules, which the segment scan does not replace.
	charsOK := func(p string) bool {
		if p == "" || p[0] != '/' || strings.Contains(p, "//") {
			return false
		}
		for i := 0; i < len(p); i++ {
			if c := p[i]; c <= 0x20 || c >= 0x7f || c == '\\' || c == '?' || c == '#' || c == '%' {
				return false
			}
		}
		return true
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "/.;ax"
	seen := map[bool]int{}
	for range 200000 {
		b := []byte{'/'}
		for range rng.IntN(12) {
			b = append(b, alphabet[rng.IntN(len(alphabet))])
		}
		p := string(b)
		want := charsOK(p) && splitOK(p)
		if got := cleanPath(p); got != want {
			t.Fatalf("cleanPath(%q) = %v, want %v", p, got, want)
		}
		seen[want]++
	}
	if seen[true] < 1000 || seen[false] < 1000 {
		t.Fatalf("inputs too one-sided: %v", seen)
	}
}

// The session endpoints: the worker's own POSTs to them on its origin are signed whatever the
// page's prefixes and methods say (a page policy of /api/ and GET must not stop rotation or
// logout), and nothing else is.
func TestPolicyEndpoints(t *testing.T) {
	for _, bad := range [][]string{{"/"}, {"/sv"}, {"sv/"}, {"/a/../"}, {"/sv/", strings.Repeat("/x", 200) + "/"}} {
		v := New(newRand(1), (&clock{t0}).now)
		wantCode(t, v.BindPolicy(Policy{Self: appOrigin, Endpoints: bad}), CodeBadInput)
	}
	h := &harness{t: t, local: &clock{t0}, remote: &clock{t0}}
	h.v = New(newRand(1), h.local.now)
	h.srv = newFakeServer(t, h.remote, 2)
	code, _ := call(t, h.v, msg(OpPolicy, sfield(1, appOrigin), lfield(3, "/api/"), lfield(4, "GET"), lfield(5, "/sv/", "/auth/v1/")))
	if code != "" {
		t.Fatalf("OpPolicy with endpoints: %s", code)
	}
	h.login()
	for _, r := range []SignRequest{
		{Method: "POST", Origin: appOrigin, Path: "/sv/rotate"},
		{Method: "POST", Origin: appOrigin, Path: "/auth/v1/logout"},
		{Method: "GET", Origin: appOrigin, Path: "/api/me"},
	} {
		if _, err := h.v.Sign(r); err != nil {
			t.Errorf("%s %s: %v", r.Method, r.Path, err)
		}
	}
	for _, r := range []SignRequest{
		{Method: "GET", Origin: appOrigin, Path: "/sv/rotate"},               // not POST
		{Method: "POST", Origin: appOrigin, Path: "/api/me"},                 // the page's methods hold
		{Method: "POST", Origin: "https://evil.example", Path: "/sv/rotate"}, // not Self
		{Method: "POST", Origin: appOrigin, Path: "/sv/../admin/x"},          // not clean
		{Method: "POST", Origin: appOrigin, Path: "/svx/rotate"},
	} {
		_, err := h.v.Sign(r)
		wantCode(t, err, CodePolicyDenied)
	}
}
