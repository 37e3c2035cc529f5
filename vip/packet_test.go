package vip_test

import (
	"bytes"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/directorate/directorate/vip"
)

// cat joins byte groups so expected frames read field by field.
func cat(parts ...[]byte) []byte { return slices.Concat(parts...) }

func b(v ...byte) []byte { return v }

var (
	macA      = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x10}
	ip4       = netip.MustParseAddr("192.0.2.10")
	ip6       = netip.MustParseAddr("2001:db8::10")
	bcast     = b(0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	zero6     = b(0, 0, 0, 0, 0, 0)
	ip4Bytes  = b(192, 0, 2, 10)
	ip6Bytes  = b(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10)
	allNodes  = b(0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01)
	padTo60   = make([]byte, 60-42)
	arpHeader = b(0x00, 0x01, 0x08, 0x00, 6, 4) // Ethernet, IPv4, hlen 6, plen 4
)

func TestBuildGratuitousARP(t *testing.T) {
	cases := []struct {
		name string
		op   vip.ARPOp
		want []byte
	}{
		{"request", vip.ARPRequest, cat(
			bcast, macA, b(0x08, 0x06), // Ethernet: broadcast, from us, ARP
			arpHeader, b(0x00, 0x01), // op request
			macA, ip4Bytes, // sender: us, the VIP
			zero6, ip4Bytes, // target: unused (RFC 5227), the VIP
			padTo60)},
		{"reply", vip.ARPReply, cat(
			bcast, macA, b(0x08, 0x06),
			arpHeader, b(0x00, 0x02), // op reply
			macA, ip4Bytes,
			macA, ip4Bytes, // target repeats the sender (RFC 5944 §4.6)
			padTo60)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := vip.BuildGratuitousARP(tc.op, macA, ip4)
			if err != nil {
				t.Fatalf("BuildGratuitousARP: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("frame\n got  % x\n want % x", got, tc.want)
			}
			p, err := vip.ParseARP(got)
			if err != nil {
				t.Fatalf("ParseARP: %v", err)
			}
			if p.Op != tc.op || !p.Gratuitous() || p.SenderIP != ip4 || p.SenderMAC.String() != macA.String() ||
				p.EthSrc.String() != macA.String() || !bytes.Equal(p.EthDst, bcast) {
				t.Fatalf("parsed %+v", p)
			}
		})
	}
}

func TestBuildGratuitousARPRejects(t *testing.T) {
	cases := []struct {
		name string
		op   vip.ARPOp
		mac  net.HardwareAddr
		ip   netip.Addr
		want string
	}{
		{"IPv6", vip.ARPRequest, macA, ip6, "address: 2001:db8::10 is not IPv4"},
		{"short MAC", vip.ARPRequest, macA[:4], ip4, "hardware address"},
		{"no MAC", vip.ARPRequest, nil, ip4, "hardware address"},
		{"bad op", 3, macA, ip4, "op: 3"},
	}
	for _, tc := range cases {
		if _, err := vip.BuildGratuitousARP(tc.op, tc.mac, tc.ip); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestBuildUnsolicitedNA(t *testing.T) {
	ipv6Header := func() []byte {
		return cat(b(0x60, 0, 0, 0), // version 6
			b(0x00, 0x20),      // payload length 32
			b(58, 255),         // ICMPv6, hop limit 255
			ip6Bytes, allNodes) // from the VIP to all nodes
	}
	cases := []struct {
		name   string
		router bool
		want   []byte
	}{
		{"host", false, cat(
			b(0x33, 0x33, 0, 0, 0, 1), macA, b(0x86, 0xdd), // Ethernet: ff02::1's MAC, from us, IPv6
			ipv6Header(),
			b(136, 0), b(0xf8, 0xfd), // NA, code 0, checksum (computed independently)
			b(0x20, 0, 0, 0), // override only
			ip6Bytes,         // target
			b(2, 1), macA)},  // target link-layer address option
		{"router", true, cat(
			b(0x33, 0x33, 0, 0, 0, 1), macA, b(0x86, 0xdd),
			ipv6Header(),
			b(136, 0), b(0x78, 0xfd),
			b(0xa0, 0, 0, 0), // router and override
			ip6Bytes,
			b(2, 1), macA)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := vip.BuildUnsolicitedNA(macA, ip6, tc.router)
			if err != nil {
				t.Fatalf("BuildUnsolicitedNA: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("frame\n got  % x\n want % x", got, tc.want)
			}
			na, err := vip.ParseNA(got)
			if err != nil {
				t.Fatalf("ParseNA: %v", err)
			}
			want := vip.NA{
				EthDst: net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, EthSrc: macA,
				Src: ip6, Dst: netip.MustParseAddr("ff02::1"), HopLimit: 255,
				Router: tc.router, Override: true, Target: ip6, TargetMAC: macA,
			}
			if !reflect.DeepEqual(na, want) {
				t.Fatalf("parsed\n got  %+v\n want %+v", na, want)
			}
		})
	}
}

func TestBuildUnsolicitedNARejects(t *testing.T) {
	for _, tc := range []struct {
		mac    net.HardwareAddr
		target string
		want   string
	}{
		{macA, "192.0.2.10", "target: 192.0.2.10 is not an IPv6 unicast"},
		{macA, "::ffff:192.0.2.10", "is not an IPv6 unicast"},
		{macA, "ff02::1", "is not an IPv6 unicast"},
		{macA, "::", "is not an IPv6 unicast"},
		{macA[:5], "2001:db8::10", "hardware address"},
	} {
		if _, err := vip.BuildUnsolicitedNA(tc.mac, netip.MustParseAddr(tc.target), false); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s/%s: error %v, want %q", tc.mac, tc.target, err, tc.want)
		}
	}
}

func TestParseARPRejects(t *testing.T) {
	good, err := vip.BuildGratuitousARP(vip.ARPRequest, macA, ip4)
	if err != nil {
		t.Fatal(err)
	}
	mut := func(i int, v byte) []byte { f := slices.Clone(good); f[i] = v; return f }
	cases := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"empty", nil, "frame of 0 bytes"},
		{"truncated", good[:41], "frame of 41 bytes"},
		{"not ARP", mut(12, 0x86), "ethertype 0x8606 is not ARP"},
		{"not Ethernet", mut(15, 6), "hardware type 6"},
		{"not IPv4", mut(16, 0x86), "protocol 0x8600"},
		{"bad lengths", mut(19, 16), "lengths 6/16"},
	}
	for _, tc := range cases {
		if _, err := vip.ParseARP(tc.frame); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	// Unpadded 42-byte frames, as arping sends, parse too.
	if _, err := vip.ParseARP(good[:42]); err != nil {
		t.Errorf("unpadded frame: %v", err)
	}
}

func TestParseNARejects(t *testing.T) {
	good, err := vip.BuildUnsolicitedNA(macA, ip6, false)
	if err != nil {
		t.Fatal(err)
	}
	mut := func(i int, v byte) []byte { f := slices.Clone(good); f[i] = v; return f }
	const icmp = 14 + 40
	cases := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"empty", nil, "frame of 0 bytes"},
		{"not IPv6", mut(13, 0x00), "ethertype 0x8600 is not IPv6"},
		{"version 4", mut(14, 0x40), "IP version 4"},
		{"extension header", mut(20, 0), "next header 0 is not ICMPv6"},
		{"payload beyond capture", good[:len(good)-1], "payload length 32 exceeds the 31 bytes"},
		{"short message", append(mut(19, 8), 0), "message of 8 bytes"},
		{"neighbour solicitation", mut(icmp, 135), "type 135 code 0 is not a neighbour advertisement"},
		{"bad checksum", mut(icmp+2, 0), "checksum 0x00fd, want 0xf8fd"},
		{"zero-length option", withOption(t, good, 0), "option type 2 has length 0"},
		{"option past the end", withOption(t, good, 2), "option type 2 of 16 bytes exceeds the 8 left"},
	}
	for _, tc := range cases {
		if _, err := vip.ParseNA(tc.frame); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// withOption rewrites the target link-layer option's length and fixes the
// checksum, so only the option is wrong.
func withOption(t *testing.T, frame []byte, length byte) []byte {
	t.Helper()
	f := slices.Clone(frame)
	f[len(f)-7] = length
	fixChecksum(f)
	return f
}

// fixChecksum recomputes the ICMPv6 checksum of a frame built by
// BuildUnsolicitedNA: the one's-complement sum of the pseudo-header (source,
// destination, length, next header) and the message.
func fixChecksum(f []byte) {
	ip := f[14:]
	msg := ip[40:]
	msg[2], msg[3] = 0, 0
	var sum uint32
	add := func(p []byte) {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(p[i])<<8 | uint32(p[i+1])
		}
		if len(p)%2 == 1 {
			sum += uint32(p[len(p)-1]) << 8
		}
	}
	add(ip[8:40])
	add([]byte{0, 0, byte(len(msg) >> 8), byte(len(msg)), 0, 0, 0, 58})
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	msg[2], msg[3] = byte(^sum>>8), byte(^sum)
}

func TestParseNAWithoutOptionAndUnknownOption(t *testing.T) {
	good, err := vip.BuildUnsolicitedNA(macA, ip6, false)
	if err != nil {
		t.Fatal(err)
	}
	// Drop the option: a solicited-style NA without a link-layer address.
	short := slices.Clone(good[:len(good)-8])
	short[14+5] = 24
	fixChecksum(short)
	na, err := vip.ParseNA(short)
	if err != nil || na.TargetMAC != nil || na.Target != ip6 {
		t.Fatalf("NA without option: %+v, %v", na, err)
	}
	// An unknown option type is skipped.
	unknown := slices.Clone(good)
	unknown[len(unknown)-8] = 14
	fixChecksum(unknown)
	na, err = vip.ParseNA(unknown)
	if err != nil || na.TargetMAC != nil {
		t.Fatalf("NA with unknown option: %+v, %v", na, err)
	}
}

func FuzzParseARP(f *testing.F) {
	for _, op := range []vip.ARPOp{vip.ARPRequest, vip.ARPReply} {
		frame, err := vip.BuildGratuitousARP(op, macA, ip4)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
		f.Add(frame[:42])
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		p, err := vip.ParseARP(frame)
		if err != nil {
			return
		}
		if !p.SenderIP.Is4() || !p.TargetIP.Is4() || len(p.SenderMAC) != 6 || len(p.TargetMAC) != 6 {
			t.Fatalf("parsed an impossible packet: %+v", p)
		}
	})
}

func FuzzParseNA(f *testing.F) {
	for _, r := range []bool{false, true} {
		frame, err := vip.BuildUnsolicitedNA(macA, ip6, r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		na, err := vip.ParseNA(frame)
		if err != nil {
			return
		}
		if !na.Target.Is6() || !na.Src.Is6() || (na.TargetMAC != nil && len(na.TargetMAC) != 6) {
			t.Fatalf("parsed an impossible packet: %+v", na)
		}
	})
}
