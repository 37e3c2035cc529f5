package netns

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

// TestARPFrames checks the sampler's frames without root: the request it
// sends parses back to what it asks, and parseARP refuses what is not
// IPv4-over-Ethernet ARP.
func TestARPFrames(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.100")
	req := arpRequest(proberMAC, proberIP, vip)
	if len(req) != minFrameLen {
		t.Fatalf("request is %d bytes, want the Ethernet minimum %d", len(req), minFrameLen)
	}
	if !bytes.Equal(req[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) || !bytes.Equal(req[6:12], proberMAC) {
		t.Fatalf("request's Ethernet addresses are %x → %x, want %s → broadcast", req[6:12], req[0:6], proberMAC)
	}
	got, ok := parseARP(req)
	want := arpPacket{op: opRequest, senderMAC: proberMAC, senderIP: proberIP, targetIP: vip}
	if !ok || got.op != want.op || got.senderMAC.String() != want.senderMAC.String() || got.senderIP != want.senderIP || got.targetIP != want.targetIP {
		t.Fatalf("parseARP(request) = %+v, %t; want %+v", got, ok, want)
	}

	// A reply as a director's kernel sends it: the VIP's owner answers the
	// sampler.
	owner := net.HardwareAddr{0x02, 0x00, 0xc0, 0x00, 0x02, 0x01}
	reply := arpRequest(owner, vip, proberIP)
	copy(reply[0:6], proberMAC)
	reply[14+7] = opReply
	if got, ok := parseARP(reply); !ok || got.op != opReply || got.senderMAC.String() != owner.String() || got.senderIP != vip || got.targetIP != proberIP {
		t.Fatalf("parseARP(reply) = %+v, %t", got, ok)
	}

	for name, mutate := range map[string]func([]byte) []byte{
		"truncated":     func(f []byte) []byte { return f[:arpFrameLen-1] },
		"IPv4 frame":    func(f []byte) []byte { f[12], f[13] = 0x08, 0x00; return f },
		"not Ethernet":  func(f []byte) []byte { f[15] = 6; return f },
		"IPv6 protocol": func(f []byte) []byte { f[16], f[17] = 0x86, 0xdd; return f },
		"long hardware": func(f []byte) []byte { f[18] = 8; return f },
		"long protocol": func(f []byte) []byte { f[19] = 16; return f },
	} {
		f := mutate(arpRequest(proberMAC, proberIP, vip))
		if got, ok := parseARP(f); ok {
			t.Errorf("%s: parseARP accepted %x as %+v", name, f, got)
		}
	}
}
