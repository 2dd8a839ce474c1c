package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/heapprofiler"
)

// HeapSnapshot is a V8 heap snapshot of one session's isolate (the page's, or
// a worker's), taken after a full GC, with its strings decoded into views to
// search:
//
//   - Raw: the snapshot JSON as V8 wrote it (strings JSON-escaped).
//   - Latin1: every string, one byte per UTF-16 code unit (units above 0xFF
//     become 0x00), strings separated by 0x00 0x00. A "binary string" holding
//     key bytes shows the raw bytes here.
//   - UTF16LE, UTF16BE: every string's code units as bytes, both orders. A
//     string whose code units are made of key bytes shows them here.
//
// V8 writes snapshot strings lossily (measured on Chromium 156): a NUL unit
// becomes a space, a lone surrogate becomes "???", and a surrogate pair
// becomes one unit, the code point's low 16 bits. HeapSnapshot.Find applies
// the same mapping to the raw forms of a secret, so a binary or UTF-16 string
// holding key bytes is still found (the positive control plants such strings).
//
// What a snapshot does not hold: the bytes of ArrayBuffers and typed arrays
// (nor wasm memory). Runtime.queryObjects cannot list those either (Blink
// hides objects with embedder fields from it). Bytes reach the page from the
// worker only by postMessage, which Tab.WorkerMessages records, or from the
// network, which Tab.Traffic records.
//
// V8 cuts long strings at --heap-snapshot-string-limit, which the harness
// raises to 10 MB.
type HeapSnapshot struct {
	Raw     []byte
	Latin1  []byte
	UTF16LE []byte
	UTF16BE []byte
	Strings int // number of strings
}

// Haystacks returns the snapshot's views, named after where.
func (h *HeapSnapshot) Haystacks(where string) []Haystack {
	return []Haystack{
		{where + " heap snapshot (JSON)", h.Raw},
		{where + " heap snapshot (strings, latin1)", h.Latin1},
		{where + " heap snapshot (strings, UTF-16LE)", h.UTF16LE},
		{where + " heap snapshot (strings, UTF-16BE)", h.UTF16BE},
	}
}

// Find searches every view of the snapshot for every secret: the JSON and
// the latin1 view for all of Encodings (the raw form mapped as V8 maps
// strings), the UTF-16 views for the raw bytes read as code units at both
// byte alignments ("raw" and "raw+1").
func (h *HeapSnapshot) Find(where string, secrets ...[]byte) []Finding {
	hs := h.Haystacks(where)
	var out []Finding
	for i, s := range secrets {
		enc := Encodings(s)
		out = append(out, findNeedles(hs[0].Name, hs[0].Bytes, i, enc)...)
		l1 := append([]Needle(nil), enc...)
		for j := range l1 {
			if l1[j].Name == "raw" {
				l1[j].Bytes = snapshotUnits(bytesAsUnits(s), viewLatin1)
			}
		}
		out = append(out, findNeedles(hs[1].Name, hs[1].Bytes, i, l1)...)
		for k, be := range []bool{false, true} {
			var ns []Needle
			for off, name := range []string{"raw", "raw+1"} {
				if u := pairsAsUnits(s[off:], be); len(u) >= 4 {
					mode := viewUTF16LE
					if be {
						mode = viewUTF16BE
					}
					ns = append(ns, Needle{name, snapshotUnits(u, mode)})
				}
			}
			out = append(out, findNeedles(hs[2+k].Name, hs[2+k].Bytes, i, ns)...)
		}
	}
	return out
}

func bytesAsUnits(b []byte) []uint16 {
	u := make([]uint16, len(b))
	for i, c := range b {
		u[i] = uint16(c)
	}
	return u
}

// pairsAsUnits reads b as UTF-16 code units, little- or big-endian.
func pairsAsUnits(b []byte, bigEndian bool) []uint16 {
	u := make([]uint16, len(b)/2)
	for i := range u {
		if bigEndian {
			u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
		} else {
			u[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
		}
	}
	return u
}

// The byte views of a snapshot's strings.
const (
	viewLatin1 = iota
	viewUTF16LE
	viewUTF16BE
)

// snapshotUnits maps code units as V8's snapshot writer does (see
// HeapSnapshot) and returns them as the bytes of a view. Surrogates at
// either end are dropped first: whether they pair depends on units outside
// the needle.
func snapshotUnits(u []uint16, view int) []byte {
	isSur := func(x uint16) bool { return x >= 0xD800 && x <= 0xDFFF }
	for len(u) > 0 && isSur(u[0]) {
		u = u[1:]
	}
	for len(u) > 0 && isSur(u[len(u)-1]) {
		u = u[:len(u)-1]
	}
	var m []uint16
	for i := 0; i < len(u); i++ {
		x := u[i]
		switch {
		case x == 0:
			m = append(m, ' ')
		case x >= 0xD800 && x <= 0xDBFF && i+1 < len(u) && u[i+1] >= 0xDC00 && u[i+1] <= 0xDFFF:
			cp := 0x10000 + (uint32(x-0xD800)<<10 | uint32(u[i+1]-0xDC00))
			m = append(m, uint16(cp))
			i++
		case isSur(x):
			m = append(m, '?', '?', '?')
		default:
			m = append(m, x)
		}
	}
	var out []byte
	for _, x := range m {
		switch view {
		case viewLatin1:
			if x > 0xFF {
				x = 0 // as parseSnapshot writes it
			}
			out = append(out, byte(x))
		case viewUTF16LE:
			out = append(out, byte(x), byte(x>>8))
		default:
			out = append(out, byte(x>>8), byte(x))
		}
	}
	return out
}

// HeapSnapshot takes a heap snapshot of the session's isolate. It collects
// garbage first, so unreachable values do not count.
func (s *Session) HeapSnapshot(ctx context.Context) (*HeapSnapshot, error) {
	if err := s.Call(ctx, heapprofiler.CommandEnable, nil, nil); err != nil {
		return nil, err
	}
	defer s.Call(context.WithoutCancel(ctx), heapprofiler.CommandDisable, nil, nil)
	if err := s.Call(ctx, heapprofiler.CommandCollectGarbage, nil, nil); err != nil {
		return nil, err
	}
	buf := new(bytes.Buffer)
	s.mu.Lock()
	if s.chunks != nil {
		s.mu.Unlock()
		return nil, errors.New("a heap snapshot of this session is already being taken")
	}
	s.chunks = buf
	s.mu.Unlock()
	// The chunks arrive as events before the reply, on the same reader
	// goroutine, so they are all in buf when Call returns.
	_, err := cdp.Call(ctx, s, heapprofiler.TakeHeapSnapshot, heapprofiler.TakeHeapSnapshotParams{
		ReportProgress:      new(false),
		CaptureNumericValue: new(true),
	})
	s.mu.Lock()
	s.chunks = nil
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return parseSnapshot(buf.Bytes())
}

// parseSnapshot decodes the "strings" array of a snapshot into code units,
// without a JSON library: a general decoder would turn lone surrogates into
// U+FFFD and lose the units a UTF-16 view needs.
func parseSnapshot(raw []byte) (*HeapSnapshot, error) {
	h := &HeapSnapshot{Raw: raw}
	i := bytes.LastIndex(raw, []byte(`"strings":`))
	if i < 0 {
		return nil, fmt.Errorf("heap snapshot (%d bytes) has no strings", len(raw))
	}
	i += len(`"strings":`)
	for i < len(raw) && raw[i] != '[' {
		i++
	}
	i++
	var units []uint16
	for {
		for i < len(raw) && (raw[i] == ' ' || raw[i] == '\n' || raw[i] == '\r' || raw[i] == '\t' || raw[i] == ',') {
			i++
		}
		if i >= len(raw) {
			return nil, errors.New("heap snapshot: strings array not terminated")
		}
		if raw[i] == ']' {
			break
		}
		if raw[i] != '"' {
			return nil, fmt.Errorf("heap snapshot: unexpected %q at %d in the strings array", raw[i], i)
		}
		var err error
		units, i, err = jsonStringUnits(raw, i+1, units[:0])
		if err != nil {
			return nil, err
		}
		h.Strings++
		for _, u := range units {
			if u <= 0xFF {
				h.Latin1 = append(h.Latin1, byte(u))
			} else {
				h.Latin1 = append(h.Latin1, 0)
			}
			h.UTF16LE = append(h.UTF16LE, byte(u), byte(u>>8))
			h.UTF16BE = append(h.UTF16BE, byte(u>>8), byte(u))
		}
		h.Latin1 = append(h.Latin1, 0, 0)
		h.UTF16LE = append(h.UTF16LE, 0, 0, 0, 0)
		h.UTF16BE = append(h.UTF16BE, 0, 0, 0, 0)
	}
	return h, nil
}

// jsonStringUnits decodes the JSON string starting after its opening quote
// at raw[i], appending its UTF-16 code units to units. It returns the index
// after the closing quote.
func jsonStringUnits(raw []byte, i int, units []uint16) ([]uint16, int, error) {
	for i < len(raw) {
		c := raw[i]
		switch {
		case c == '"':
			return units, i + 1, nil
		case c == '\\':
			if i+1 >= len(raw) {
				return nil, 0, errors.New("heap snapshot: truncated escape")
			}
			switch e := raw[i+1]; e {
			case 'u':
				if i+6 > len(raw) {
					return nil, 0, errors.New("heap snapshot: truncated \\u escape")
				}
				v, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
				if err != nil {
					return nil, 0, fmt.Errorf("heap snapshot: bad escape %q", raw[i:i+6])
				}
				units = append(units, uint16(v))
				i += 6
				continue
			case 'n':
				units = append(units, '\n')
			case 'r':
				units = append(units, '\r')
			case 't':
				units = append(units, '\t')
			case 'b':
				units = append(units, '\b')
			case 'f':
				units = append(units, '\f')
			default: // \" \\ \/
				units = append(units, uint16(e))
			}
			i += 2
		case c < utf8.RuneSelf:
			units = append(units, uint16(c))
			i++
		default:
			r, n := utf8.DecodeRune(raw[i:])
			units = utf16.AppendRune(units, r)
			i += n
		}
	}
	return nil, 0, errors.New("heap snapshot: unterminated string")
}

// GlobalsDump serializes what is reachable from the session's global object
// (to a few levels; typed arrays and ArrayBuffers as hex) into one string: a
// check that no global, however nested, holds a key, bytes included. Values
// kept in module scope or closures are not reachable from the global; heap
// snapshots cover the strings among those.
func (s *Session) GlobalsDump(ctx context.Context) ([]byte, error) {
	var out string
	if err := s.Eval(ctx, globalsDumpJS, &out); err != nil {
		return nil, err
	}
	return []byte(out), nil
}

const globalsDumpJS = `(() => {
  const seen = new WeakSet();
  const parts = [];
  const hex = (u) => Array.from(u, (b) => b.toString(16).padStart(2, "0")).join("");
  const walk = (v, depth, path) => {
    if (parts.length > 200000) return;
    if (v === null || v === undefined) return;
    const t = typeof v;
    if (t === "string") { parts.push(path + "=" + v); return; }
    if (t === "number" || t === "boolean" || t === "bigint") { parts.push(path + "=" + String(v)); return; }
    if (t !== "object" && t !== "function") return;
    if (seen.has(v)) return;
    seen.add(v);
    try {
      if (v instanceof ArrayBuffer) { if (v.byteLength <= (1 << 20)) parts.push(path + "=" + hex(new Uint8Array(v))); return; }
      if (ArrayBuffer.isView(v)) { if (v.byteLength <= (1 << 20)) parts.push(path + "=" + hex(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))); return; }
    } catch {}
    if (depth <= 0) return;
    let keys = [];
    try { keys = Reflect.ownKeys(v); } catch { return; }
    for (const k of keys) {
      if (typeof k === "symbol") continue;
      let d;
      try { d = Object.getOwnPropertyDescriptor(v, k); } catch { continue; }
      if (!d || !("value" in d)) continue; // no getters: they could have effects
      walk(d.value, depth - 1, path + "." + k);
    }
  };
  walk(globalThis, 5, "globalThis");
  return parts.join("\n");
})()`

// PlantSecret is the positive control of every secret search: it makes the
// session's isolate generate 32 random bytes and keep them inside a closure
// (the global holds only the function, so no property path reaches them) as
// a binary string, a UTF-16 string of the byte pairs, standard base64,
// unpadded base64url and upper-case hex. It returns the bytes. The planted value never crosses the
// protocol in those forms (only as lower-case hex), so a search that finds
// them proves it would find a leaked key in the same form.
func (s *Session) PlantSecret(ctx context.Context) ([]byte, error) {
	var h string
	if err := s.Eval(ctx, plantJS, &h); err != nil {
		return nil, err
	}
	return hex.DecodeString(h)
}

// CheckPlanted returns what is missing from a snapshot taken after
// PlantSecret (nil when the control passed): each planted form must be found
// in the view that shows it.
func (h *HeapSnapshot) CheckPlanted(where string, planted []byte) []string {
	found := map[string]bool{}
	for _, f := range h.Find(where, planted) {
		found[f.Encoding+" in "+f.Where] = true
	}
	var missing []string
	for _, want := range []string{
		"raw in " + where + " heap snapshot (strings, latin1)",   // the binary string
		"raw in " + where + " heap snapshot (strings, UTF-16LE)", // the UTF-16 string
		"base64 in " + where + " heap snapshot (JSON)",
		"base64url-nopad in " + where + " heap snapshot (JSON)",
		"HEX in " + where + " heap snapshot (JSON)",
	} {
		if !found[want] {
			missing = append(missing, want)
		}
	}
	return missing
}

const plantJS = `(() => {
  const b = crypto.getRandomValues(new Uint8Array(32));
  let bin = "";
  for (const x of b) bin += String.fromCharCode(x);
  let u16 = "";
  for (let i = 0; i < b.length; i += 2) u16 += String.fromCharCode(b[i] | (b[i + 1] << 8));
  const kept = {
    bin: bin.split("").join(""),
    u16: u16.split("").join(""),
    b64: btoa(bin),
    b64url: btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""),
    HEX: Array.from(b, (x) => x.toString(16).padStart(2, "0").toUpperCase()).join(""),
  };
  const keep = () => kept;
  (globalThis.__svE2EKeep ||= new Set()).add(keep);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
})()`

// AssertHeapClean is the whole heap check with its control: it plants a value
// in the session's isolate (PlantSecret), takes a heap snapshot, fails the
// test at once if the planted value is not found in every form, and reports
// every finding of secrets as a LEAK error. It returns the snapshot.
func AssertHeapClean(tb *Tab, s *Session, secrets ...[]byte) *HeapSnapshot {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 2*callTimeout)
	defer cancel()
	planted, err := s.PlantSecret(ctx)
	if err != nil {
		tb.t.Fatalf("%s: planting the control value: %v", s, err)
	}
	snap, err := s.HeapSnapshot(ctx)
	if err != nil {
		tb.t.Fatalf("%s: heap snapshot: %v", s, err)
	}
	if missing := snap.CheckPlanted(s.String(), planted); len(missing) > 0 {
		tb.t.Fatalf("%s: positive control failed, the search cannot be trusted: planted %x not found as %v", s, planted, missing)
	}
	for _, f := range snap.Find(s.String(), secrets...) {
		tb.t.Errorf("LEAK: %s", f)
	}
	return snap
}
