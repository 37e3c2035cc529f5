package vip

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// Ethernet and protocol constants the announcement frames use.
const (
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
	ethHeaderLen  = 14
	// ethMinFrame is the shortest Ethernet frame without its FCS. Frames are
	// padded to it here because some virtual NICs send runts otherwise,
	// which switches drop.
	ethMinFrame = 60

	arpLen          = 28
	arpHTypeEther   = 1
	arpPTypeIPv4    = 0x0800
	ipv6HeaderLen   = 40
	protoICMPv6     = 58
	ndpHopLimit     = 255
	naLen           = 24 // type, code, checksum, flags+reserved, target
	optTargetLLAddr = 2
)

var (
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	zeroMAC      = net.HardwareAddr{0, 0, 0, 0, 0, 0}
	// allNodesMAC is ff02::1 mapped to Ethernet (RFC 2464 §7).
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	allNodes    = netip.MustParseAddr("ff02::1")
)

// ARPOp is the ARP operation code.
type ARPOp uint16

// ARP operations.
const (
	ARPRequest ARPOp = 1
	ARPReply   ARPOp = 2
)

// ARP is an Ethernet frame carrying an ARP packet for IPv4.
type ARP struct {
	EthDst, EthSrc net.HardwareAddr
	Op             ARPOp
	SenderMAC      net.HardwareAddr
	SenderIP       netip.Addr
	TargetMAC      net.HardwareAddr
	TargetIP       netip.Addr
}

// Gratuitous reports whether the packet announces its sender's own address.
func (a ARP) Gratuitous() bool { return a.SenderIP == a.TargetIP }

// BuildGratuitousARP returns a broadcast Ethernet frame announcing that ip is
// at mac: sender and target protocol address are both ip. A request leaves
// the target hardware address zero (RFC 5227 §3, ARP announcement); a reply
// repeats mac there (RFC 5944 §4.6). Hosts differ in which kind updates
// their cache, so the announcer sends both.
func BuildGratuitousARP(op ARPOp, mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("hardware address: %q is not a 6-byte Ethernet address", mac)
	}
	if !ip.Is4() {
		return nil, fmt.Errorf("address: %s is not IPv4", ip)
	}
	tha := zeroMAC
	switch op {
	case ARPRequest:
	case ARPReply:
		tha = mac
	default:
		return nil, fmt.Errorf("op: %d is neither request (1) nor reply (2)", op)
	}
	b := make([]byte, ethMinFrame)
	copy(b[0:6], broadcastMAC)
	copy(b[6:12], mac)
	binary.BigEndian.PutUint16(b[12:14], etherTypeARP)
	p := b[ethHeaderLen:]
	binary.BigEndian.PutUint16(p[0:2], arpHTypeEther)
	binary.BigEndian.PutUint16(p[2:4], arpPTypeIPv4)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], uint16(op))
	a4 := ip.As4()
	copy(p[8:14], mac)
	copy(p[14:18], a4[:])
	copy(p[18:24], tha)
	copy(p[24:28], a4[:])
	return b, nil
}

// ParseARP decodes an Ethernet frame carrying ARP for IPv4 over Ethernet.
// Trailing padding is ignored.
func ParseARP(frame []byte) (ARP, error) {
	if len(frame) < ethHeaderLen+arpLen {
		return ARP{}, fmt.Errorf("parse ARP: frame of %d bytes is shorter than %d", len(frame), ethHeaderLen+arpLen)
	}
	if et := binary.BigEndian.Uint16(frame[12:14]); et != etherTypeARP {
		return ARP{}, fmt.Errorf("parse ARP: ethertype %#04x is not ARP", et)
	}
	p := frame[ethHeaderLen:]
	if ht, pt := binary.BigEndian.Uint16(p[0:2]), binary.BigEndian.Uint16(p[2:4]); ht != arpHTypeEther || pt != arpPTypeIPv4 || p[4] != 6 || p[5] != 4 {
		return ARP{}, fmt.Errorf("parse ARP: hardware type %d, protocol %#04x, lengths %d/%d: want Ethernet/IPv4 6/4", ht, pt, p[4], p[5])
	}
	return ARP{
		EthDst:    cloneMAC(frame[0:6]),
		EthSrc:    cloneMAC(frame[6:12]),
		Op:        ARPOp(binary.BigEndian.Uint16(p[6:8])),
		SenderMAC: cloneMAC(p[8:14]),
		SenderIP:  netip.AddrFrom4([4]byte(p[14:18])),
		TargetMAC: cloneMAC(p[18:24]),
		TargetIP:  netip.AddrFrom4([4]byte(p[24:28])),
	}, nil
}

// NA is an Ethernet frame carrying an ICMPv6 neighbour advertisement.
type NA struct {
	EthDst, EthSrc net.HardwareAddr
	Src, Dst       netip.Addr
	HopLimit       uint8
	Router         bool
	Solicited      bool
	Override       bool
	Target         netip.Addr
	// TargetMAC is the target link-layer address option; nil when absent.
	TargetMAC net.HardwareAddr
}

// BuildUnsolicitedNA returns an Ethernet frame advertising that target is at
// mac (RFC 4861 §7.2.6): to all nodes (ff02::1), hop limit 255, override set
// so neighbours replace a cached entry, solicited clear, and the target
// link-layer address option. Its source is the target itself, as Linux's
// own unsolicited advertisements use. router sets the R flag; it should
// mirror whether the sender forwards IPv6, since a clear flag makes
// neighbours drop routes they learned through this address.
func BuildUnsolicitedNA(mac net.HardwareAddr, target netip.Addr, router bool) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("hardware address: %q is not a 6-byte Ethernet address", mac)
	}
	if !target.Is6() || target.Is4In6() || target.IsMulticast() || target.IsUnspecified() {
		return nil, fmt.Errorf("target: %s is not an IPv6 unicast address", target)
	}
	body := make([]byte, naLen-4+8)
	if router {
		body[0] |= 0x80
	}
	body[0] |= 0x20 // override
	t16 := target.As16()
	copy(body[4:20], t16[:])
	body[20], body[21] = optTargetLLAddr, 1
	copy(body[22:28], mac)
	icmpMsg, err := marshalICMPv6(target, allNodes, body)
	if err != nil {
		return nil, err
	}

	b := make([]byte, 0, ethHeaderLen+ipv6HeaderLen+len(icmpMsg))
	b = append(b, allNodesMAC...)
	b = append(b, mac...)
	b = binary.BigEndian.AppendUint16(b, etherTypeIPv6)
	b = append(b, 0x60, 0, 0, 0) // version 6, traffic class and flow label 0
	b = binary.BigEndian.AppendUint16(b, uint16(len(icmpMsg)))
	b = append(b, protoICMPv6, ndpHopLimit)
	b = append(b, t16[:]...)
	d16 := allNodes.As16()
	b = append(b, d16[:]...)
	return append(b, icmpMsg...), nil
}

// marshalICMPv6 builds a neighbour advertisement with its checksum, which
// covers the IPv6 pseudo-header.
func marshalICMPv6(src, dst netip.Addr, body []byte) ([]byte, error) {
	m := icmp.Message{Type: ipv6.ICMPTypeNeighborAdvertisement, Body: &icmp.RawBody{Data: body}}
	out, err := m.Marshal(icmp.IPv6PseudoHeader(src.AsSlice(), dst.AsSlice()))
	if err != nil {
		return nil, fmt.Errorf("marshal neighbour advertisement: %w", err)
	}
	return out, nil
}

// ParseNA decodes an Ethernet frame carrying an IPv6 neighbour advertisement
// with no extension headers, and verifies its ICMPv6 checksum.
func ParseNA(frame []byte) (NA, error) {
	if len(frame) < ethHeaderLen+ipv6HeaderLen {
		return NA{}, fmt.Errorf("parse NA: frame of %d bytes is shorter than %d", len(frame), ethHeaderLen+ipv6HeaderLen)
	}
	if et := binary.BigEndian.Uint16(frame[12:14]); et != etherTypeIPv6 {
		return NA{}, fmt.Errorf("parse NA: ethertype %#04x is not IPv6", et)
	}
	ip := frame[ethHeaderLen:]
	if v := ip[0] >> 4; v != 6 {
		return NA{}, fmt.Errorf("parse NA: IP version %d is not 6", v)
	}
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if ip[6] != protoICMPv6 {
		return NA{}, fmt.Errorf("parse NA: next header %d is not ICMPv6 (%d)", ip[6], protoICMPv6)
	}
	if plen > len(ip)-ipv6HeaderLen {
		return NA{}, fmt.Errorf("parse NA: payload length %d exceeds the %d bytes captured", plen, len(ip)-ipv6HeaderLen)
	}
	msg := ip[ipv6HeaderLen : ipv6HeaderLen+plen]
	if len(msg) < naLen {
		return NA{}, fmt.Errorf("parse NA: ICMPv6 message of %d bytes is shorter than %d", len(msg), naLen)
	}
	if msg[0] != byte(ipv6.ICMPTypeNeighborAdvertisement) || msg[1] != 0 {
		return NA{}, fmt.Errorf("parse NA: ICMPv6 type %d code %d is not a neighbour advertisement (136/0)", msg[0], msg[1])
	}
	na := NA{
		EthDst:    cloneMAC(frame[0:6]),
		EthSrc:    cloneMAC(frame[6:12]),
		Src:       netip.AddrFrom16([16]byte(ip[8:24])),
		Dst:       netip.AddrFrom16([16]byte(ip[24:40])),
		HopLimit:  ip[7],
		Router:    msg[4]&0x80 != 0,
		Solicited: msg[4]&0x40 != 0,
		Override:  msg[4]&0x20 != 0,
		Target:    netip.AddrFrom16([16]byte(msg[8:24])),
	}
	want, err := marshalICMPv6(na.Src, na.Dst, msg[4:])
	if err != nil {
		return NA{}, fmt.Errorf("parse NA: %w", err)
	}
	if !bytes.Equal(want[2:4], msg[2:4]) {
		return NA{}, fmt.Errorf("parse NA: checksum %#04x, want %#04x", binary.BigEndian.Uint16(msg[2:4]), binary.BigEndian.Uint16(want[2:4]))
	}
	for opts := msg[naLen:]; len(opts) > 0; {
		if len(opts) < 2 {
			return NA{}, fmt.Errorf("parse NA: truncated option header (%d bytes left)", len(opts))
		}
		olen := int(opts[1]) * 8
		if olen == 0 {
			return NA{}, fmt.Errorf("parse NA: option type %d has length 0", opts[0])
		}
		if olen > len(opts) {
			return NA{}, fmt.Errorf("parse NA: option type %d of %d bytes exceeds the %d left", opts[0], olen, len(opts))
		}
		if opts[0] == optTargetLLAddr && olen >= 8 {
			na.TargetMAC = cloneMAC(opts[2:8])
		}
		opts = opts[olen:]
	}
	return na, nil
}

func cloneMAC(b []byte) net.HardwareAddr { return net.HardwareAddr(bytes.Clone(b)) }
