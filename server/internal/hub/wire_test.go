package hub

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

var authSeeds = []string{
	`{"type":"auth","keyid":"bGFuZS0wMDAwMDAwMDAwMQ.3","tag":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","since":5}`,
	`{"type":"auth","keyid":"bGFuZS0wMDAwMDAwMDAwMQ.0","tag":"__________________________________________8"}`,
	`{"type":"auth","keyid":"a.1","tag":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","since":0,"extra":[1,2]}`,
	`{"type":"auth","keyid":"a.1","tag":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","since":0}`,
	`{"type":"auth","keyid":"a.1","tag":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB","since":0}`,
	`{"type":"auth","keyid":"a b","tag":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`,
	`{"type":"auth","keyid":"a.1","tag":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","since":-1}`,
	`{"type":"auth","keyid":"a.1","tag":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","since":1.5}`,
	`{"type":"auth","keyid":"a.1","tag":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","since":18446744073709551616}`,
	`{"type":"ready"}`,
	`{"type":"auth"}`,
	`[]`,
	`null`,
	``,
	`{"type":"auth","keyid":"` + strings.Repeat("a", 65) + `","tag":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`,
}

func TestParseAuth(t *testing.T) {
	for i, s := range authSeeds {
		a, err := parseAuth([]byte(s))
		valid := i < 3
		if (err == nil) != valid {
			t.Errorf("%q: %v", s, err)
		}
		if i == 0 && (a.keyid != "bGFuZS0wMDAwMDAwMDAwMQ.3" || a.since != 5 || len(a.tag) != 32) {
			t.Errorf("%+v", a)
		}
	}
}

func FuzzParseAuth(f *testing.F) {
	if len(authSeeds) == 0 {
		f.Fatal("no seeds")
	}
	for _, s := range authSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseAuth(b)
		if err != nil {
			return
		}
		if len(a.tag) != 32 || a.keyid == "" || len(a.keyid) > maxKeyIDLen || !isKeyIDChars(a.keyid) {
			t.Fatalf("accepted %+v", a)
		}
		// Encoding what was parsed and parsing it again gives the same values.
		enc := fmt.Appendf(nil, `{"type":"auth","keyid":%q,"tag":%q,"since":%d}`, a.keyid, base64.RawURLEncoding.EncodeToString(a.tag), a.since)
		a2, err := parseAuth(enc)
		if err != nil || a2.keyid != a.keyid || !bytes.Equal(a2.tag, a.tag) || a2.since != a.since {
			t.Fatalf("round trip: %+v %v", a2, err)
		}
	})
}

func TestServerMessages(t *testing.T) {
	c := bytes.Repeat([]byte{0xfb}, ChallengeSize)
	if got, want := string(challengeMsg(c)), `{"type":"challenge","challenge":"-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s"}`; got != want {
		t.Errorf("challenge %s", got)
	}
	if got := string(refusedMsg("revoked")); got != `{"type":"refused","reason":"revoked"}` {
		t.Errorf("refused %s", got)
	}
	for s, ok := range map[string]bool{"revoked": true, "a_1": true, "": false, "Revoked": false, `a"`: false, strings.Repeat("a", 65): false} {
		if validReason(s) != ok {
			t.Errorf("validReason(%q)", s)
		}
	}
}
