package protocol

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestEventSealOpen(t *testing.T) {
	rng := rand.New(rand.NewPCG(40, 40))
	for i := 0; i < 200; i++ {
		k := randKey(rng)
		e := Event{
			Type: EventType(1 + rng.IntN(4)), Lane: LaneID(randBytes(rng, 16)), Epoch: rng.Uint32(), Seq: rng.Uint64(),
			Time: int64(rng.Uint64()), Deadline: int64(rng.Uint64()), Reason: strings.Repeat("a_9", 22)[:rng.IntN(MaxReasonLen+1)],
		}
		b, err := SealEvent(&k, &e)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != eventFixedSize+len(e.Reason)+TagSize || len(b) > MaxEventSize {
			t.Fatalf("sealed length %d", len(b))
		}
		got, err := OpenEvent(&k, b)
		if err != nil || got != e {
			t.Fatalf("OpenEvent = %+v, %v", got, err)
		}
		if p, err := ParseEvent(b); err != nil || p != e {
			t.Fatalf("ParseEvent = %+v, %v", p, err)
		}
		// Every single-bit change is refused, as bad_signature or malformed, never accepted.
		for j := 0; j < len(b); j++ {
			c := bytes.Clone(b)
			c[j] ^= 1 << (j % 8)
			if _, err := OpenEvent(&k, c); err == nil {
				t.Fatalf("bit flip at %d accepted", j)
			} else if cl := ErrorClass(err); cl != "bad_signature" && cl != "malformed" && cl != "too_large" {
				t.Fatalf("bit flip at %d: %v", j, err)
			}
		}
		other := k
		other[0] ^= 1
		if _, err := OpenEvent(&other, b); ErrorClass(err) != "bad_signature" {
			t.Fatalf("other key: %v", err)
		}
		if ev, err := OpenEvent(&other, b); ev != (Event{}) {
			t.Fatalf("a refused event is returned: %+v %v", ev, err)
		}
	}
}

func TestSealEventRefuses(t *testing.T) {
	k := Key{1}
	for name, c := range map[string]struct {
		e    Event
		want string
	}{
		"type 0":           {Event{Type: 0}, "malformed"},
		"type 5":           {Event{Type: 5}, "malformed"},
		"uppercase reason": {Event{Type: EventRevoked, Reason: "Logout"}, "malformed"},
		"space in reason":  {Event{Type: EventRevoked, Reason: "log out"}, "malformed"},
		"long reason":      {Event{Type: EventRevoked, Reason: strings.Repeat("a", MaxReasonLen+1)}, "too_large"},
	} {
		if _, err := SealEvent(&k, &c.e); ErrorClass(err) != c.want {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := SealEvent(&k, &Event{Type: EventExpired, Reason: strings.Repeat("z", MaxReasonLen)}); err != nil {
		t.Fatalf("reason of MaxReasonLen: %v", err)
	}
	for typ, name := range map[EventType]string{EventRevoked: "revoked", EventRotate: "rotate", EventExpiring: "expiring", EventExpired: "expired", 0: "unknown", 9: "unknown"} {
		if typ.String() != name {
			t.Errorf("%d.String() = %s", typ, typ)
		}
	}
}

// The event key and the sign key of one epoch never verify each other's MACs.
func TestEventKeySeparation(t *testing.T) {
	k := randKey(rand.New(rand.NewPCG(41, 41)))
	ek, sk := EventKey(&k), SignKey(&k)
	b, _ := SealEvent(&ek, &Event{Type: EventRevoked, Reason: "logout"})
	for _, wrong := range []Key{sk, k} {
		if _, err := OpenEvent(&wrong, b); ErrorClass(err) != "bad_signature" {
			t.Fatalf("event opened under another key: %v", err)
		}
	}
}
