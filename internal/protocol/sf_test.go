package protocol

import (
	"strings"
	"testing"

	"github.com/dunglas/httpsfv"
)

// Canonical dictionaries: each parses and serializes back to itself, and httpsfv (an independent
// RFC 8941/9651 implementation) parses it and serializes it to the same text.
var canonicalDicts = []string{
	`a=1`,
	`a`,
	`a;b`,
	`a=?0`,
	`a=?0;b`,
	`a=-999999999999999`,
	`a=999999999999999`,
	`a=0`,
	`a="", b="x\"y\\z"`,
	`a=tok, b=*t:o/k!#$%&'*+-.^_` + "`" + `|~`,
	`a=:AAAA:, b=::, c=:AQ==:, d=:AQI=:`,
	`a=(), b=(1 2 3), c=("x";p=1 y;q);r=?0;s`,
	`*a.b_c-d*=1`,
	`sv=("@method" "@authority" "@path" "@query" "content-digest");created=1700000000;keyid="ABEiM0RVZneImaq7zN3u_w.0";nonce="1";alg="hmac-sha256";tag="sessionvault"`,
	`sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:AA==:`,
	`a=(?1 ?0)`,
	`a=1;b=2;c="3";d=:AA==:;e=tok;f=?0`,
}

func TestSFCanonicalRoundTrip(t *testing.T) {
	for _, s := range canonicalDicts {
		d, err := ParseDictionary(s)
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		if got := string(d.Append(nil)); got != s {
			t.Errorf("Append(Parse(%s)) = %s", s, got)
		}
		hd, err := httpsfv.UnmarshalDictionary([]string{s})
		if err != nil {
			t.Errorf("httpsfv refuses %s: %v", s, err)
			continue
		}
		if hs, err := httpsfv.Marshal(hd); err != nil || hs != s {
			t.Errorf("httpsfv serializes %s as %s (%v)", s, hs, err)
		}
	}
}

// Inputs RFC 8941 parses (mostly) but this protocol refuses as non-canonical or unsupported.
var nonCanonicalDicts = map[string]string{
	"":                   "empty",
	" a=1":               "leading space",
	"a=1 ":               "trailing space",
	"a=1,b=2":            "no space after comma",
	"a=1 , b=2":          "space before comma",
	"a=1,  b=2":          "two spaces after comma",
	"a=1,\tb=2":          "tab after comma",
	"a=1, a=2":           "duplicate key",
	"a;b;b":              "duplicate parameter",
	"a=01":               "leading zero",
	"a=-0":               "negative zero",
	"a=-":                "sign alone",
	"a=1.5":              "decimal",
	"a=1.":               "decimal point",
	"a=1234567890123456": "16-digit integer",
	"a=?1":               "explicit true member",
	"a;b=?1":             "explicit true parameter",
	"a=?2":               "bad boolean",
	"a=?":                "truncated boolean",
	`a="x`:               "unterminated string",
	`a="\x"`:             "bad escape",
	`a="\`:               "truncated escape",
	"a=\"\x01\"":         "control character in string",
	"a=\"\xc3\xa9\"":     "non-ASCII in string",
	"a=:AAA:":            "base64 without padding",
	"a=:AAF=:":           "base64 with non-zero trailing bits",
	"a=:AA=A:":           "padding inside base64",
	"a=:AA\nAA:":         "newline inside base64 (the decoder would skip it)",
	"a=:AA\rAA:":         "carriage return inside base64",
	"a=:AA AA==:":        "space inside base64",
	"a=:-_8=:":           "base64url alphabet",
	"a=:AAAA":            "unterminated byte sequence",
	"a=( 1)":             "space after (",
	"a=(1 )":             "space before )",
	"a=(1  2)":           "two spaces in inner list",
	"a=(1,2)":            "comma in inner list",
	"a=(1":               "unterminated inner list",
	"a=(1); b":           "space before parameter",
	"a=1; b":             "space before parameter key",
	"A=1":                "uppercase key",
	"1a=1":               "key starting with a digit",
	"a=1,":               "trailing comma",
	"a=1, ":              "trailing comma and space",
	"a=@1":               "date (RFC 9651)",
	`a=%"x"`:             "display string (RFC 9651)",
	"a=é":                "non-ASCII token",
	"a=b c":              "two items",
	"a==1":               "double =",
	"a=":                 "missing value",
}

func TestSFRefusesNonCanonical(t *testing.T) {
	for s, why := range nonCanonicalDicts {
		d, err := ParseDictionary(s)
		if err == nil {
			t.Errorf("%s (%q): accepted as %q", why, s, d.Append(nil))
			continue
		}
		if c := ErrorClass(err); c != "malformed" {
			t.Errorf("%s: class %q (%v)", why, c, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error message has a raw newline: %q", why, err)
		}
	}
}

func TestSFLimits(t *testing.T) {
	long := "a=\"" + strings.Repeat("x", MaxFieldLen) + "\""
	if _, err := ParseDictionary(long); ErrorClass(err) != "too_large" {
		t.Fatalf("long field: %v", err)
	}
	if _, err := ParseDictionary(long[:MaxFieldLen-1] + "\""); err != nil {
		t.Fatalf("field of exactly MaxFieldLen: %v", err)
	}
	items := "a=(" + strings.TrimSuffix(strings.Repeat("1 ", 64), " ") + ")"
	if _, err := ParseDictionary(items); err != nil {
		t.Fatalf("64 items: %v", err)
	}
	if _, err := ParseDictionary(items[:len(items)-1] + " 1)"); ErrorClass(err) != "too_large" {
		t.Fatalf("65 items: %v", err)
	}
	var ps strings.Builder
	ps.WriteString("a")
	for i := 0; i < 33; i++ {
		ps.WriteString(";k" + itoa(i))
	}
	if _, err := ParseDictionary(ps.String()); ErrorClass(err) != "too_large" {
		t.Fatalf("33 parameters: %v", err)
	}
}

func TestSFValues(t *testing.T) {
	d, err := ParseDictionary(`a=-12;p="q\"r", b=:AQI=:, c=tok/x, d, e=("s" 7;n);z=?0`)
	if err != nil {
		t.Fatal(err)
	}
	check := func(ok bool, what string) {
		t.Helper()
		if !ok {
			t.Fatalf("%s: %+v", what, d)
		}
	}
	a, ok := d.Get("a")
	check(ok && a.Item.Kind == KindInteger && a.Item.Int == -12 && a.Raw == `-12;p="q\"r"`, "a")
	p, ok := ParamValue(a.Params, "p")
	check(ok && p.Kind == KindString && p.Str == `q"r`, "a;p")
	_, ok = ParamValue(a.Params, "nope")
	check(!ok, "absent parameter")
	b, _ := d.Get("b")
	check(b.Item.Kind == KindBytes && string(b.Item.Bytes) == "\x01\x02", "b")
	c, _ := d.Get("c")
	check(c.Item.Kind == KindToken && c.Item.Str == "tok/x", "c")
	dd, _ := d.Get("d")
	check(dd.Item.Kind == KindBoolean && dd.Item.Bool && dd.Raw == "", "d")
	e, _ := d.Get("e")
	check(e.IsInner && len(e.Inner) == 2 && e.Inner[0].Str == "s" && e.Inner[1].Int == 7 && len(e.Inner[1].Params) == 1 && e.Raw == `("s" 7;n);z=?0`, "e")
	_, ok = d.Get("nope")
	check(!ok, "absent member")

	items, params, err := ParseInnerList(e.Raw)
	if err != nil || len(items) != 2 || len(params) != 1 || string(AppendInnerList(nil, items, params)) != e.Raw {
		t.Fatalf("ParseInnerList(%s) = %v %v %v", e.Raw, items, params, err)
	}
	for _, bad := range []string{"", "1", "(1", "(1) ", "(1);", "(1)x"} {
		if _, _, err := ParseInnerList(bad); ErrorClass(err) != "malformed" {
			t.Errorf("ParseInnerList(%q): %v", bad, err)
		}
	}
}

func TestSFErrorQuotesInput(t *testing.T) {
	_, err := ParseDictionary("a=\"\x01" + strings.Repeat("y", 100))
	msg := err.Error()
	if !strings.Contains(msg, `\x01`) || !strings.HasSuffix(msg, `..."`) || len(msg) > 200 {
		t.Fatalf("message %q", msg)
	}
}
