package vault_test

import (
	"crypto/rand"
	"fmt"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
)

// A login and one signed request. The server's half (normally the server package) is inlined
// from the protocol package.
func ExampleVault() {
	now := func() time.Time { return time.Unix(1767268800, 0) }
	v := vault.New(rand.Reader, now)
	v.BindPolicy(vault.Policy{Self: "https://app.example"})
	clientPub, _ := v.Begin(protocol.HandshakeLogin) // sent with the credentials

	// Server: its own ephemeral key, the lane, the shared key and its confirmation.
	lane := protocol.LaneID{1, 2, 3}
	srv, _ := protocol.NewEphemeral(rand.Reader)
	serverPub := srv.Public()
	tr := protocol.HandshakeTranscript(protocol.HandshakeLogin, clientPub, serverPub, lane, nil)
	key, _ := protocol.Handshake(srv, clientPub, tr, lane)
	confirm := protocol.Confirm(&key, tr)

	err := v.Finish(vault.Handshake{Lane: lane, ServerPub: serverPub, Confirm: confirm[:], ServerTime: now().UnixMilli()})
	fmt.Println(v.State(), err)

	sig, _ := v.Sign(vault.SignRequest{Method: "GET", Origin: "https://app.example", Path: "/api/me"})
	fmt.Println("Signature-Input:", sig.SignatureInput)

	// Server: verify under the lane's sign key.
	signKey := protocol.SignKey(&key)
	signed, _ := protocol.ParseSigned(sig.SignatureInput, sig.Signature)
	err = protocol.NewVerifier(&signKey).Verify(signed, &protocol.Request{Method: "GET", Authority: "app.example", Path: "/api/me"})
	fmt.Println("verified:", err == nil)
	// Output:
	// active <nil>
	// Signature-Input: sv=("@method" "@authority" "@path" "@query");created=1767268800;keyid="AQIDAAAAAAAAAAAAAAAAAA.0";nonce="1";alg="hmac-sha256";tag="sessionvault"
	// verified: true
}
