package main

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/directorate/directorate/fsm"
)

// parseMethod also accepts ipvsadm's names for the forwarding methods and
// its -m/-g/-i letters, so an operator's muscle memory works.
func parseMethod(flag, s string) (fsm.Method, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "nat", "masq", "masquerade", "masquerading", "m":
		return fsm.NAT, nil
	case "dr", "route", "gate", "gatewaying", "direct", "g":
		return fsm.DR, nil
	case "tun", "tunnel", "ipip", "i":
		return fsm.TUN, nil
	}
	return "", usagef("--%s: %q is not a forwarding method (want nat, dr or tun; ipvsadm's masq, route/gate/direct and ipip/tunnel also work)", flag, s)
}

func parseProtocol(s string) (fsm.Protocol, error) {
	switch p := fsm.Protocol(strings.ToLower(s)); p {
	case fsm.TCP, fsm.UDP, fsm.SCTP:
		return p, nil
	}
	return "", usagef("--proto: %q is not a protocol (want tcp, udp or sctp)", s)
}

func parseFamily(s string) (fsm.Family, error) {
	switch strings.ToLower(s) {
	case "inet", "ipv4", "4":
		return fsm.IPv4, nil
	case "inet6", "ipv6", "6":
		return fsm.IPv6, nil
	}
	return "", usagef("--family: %q is not an address family (want inet or inet6)", s)
}

func parseTunnel(s string) (fsm.TunnelType, error) {
	switch t := fsm.TunnelType(strings.ToLower(s)); t {
	case fsm.TunnelIPIP, fsm.TunnelGUE, fsm.TunnelGRE:
		return t, nil
	}
	return "", usagef("--tunnel: %q is not a tunnel type (want ipip, gue or gre)", s)
}

func parseChecksum(s string) (fsm.TunnelChecksum, error) {
	switch c := fsm.TunnelChecksum(strings.ToLower(s)); c {
	case fsm.ChecksumNone, fsm.ChecksumOn, fsm.ChecksumRemote:
		return c, nil
	}
	return "", usagef("--tunnel-checksum: %q is not a checksum mode (want nocsum, csum or remcsum)", s)
}

func parseAdmin(s string) (fsm.AdminState, error) {
	switch st := fsm.AdminState(strings.ToLower(s)); st {
	case fsm.Enabled, fsm.Drained, fsm.Disabled:
		return st, nil
	}
	return "", usagef("--admin: %q is not an admin state (want enabled, drained or disabled)", s)
}

// checkRange refuses a numeric flag outside [lo, hi], naming the flag.
func checkRange(flag string, n, lo, hi int) error {
	if n < lo || n > hi {
		return usagef("--%s: %d is out of range %d-%d", flag, n, lo, hi)
	}
	return nil
}

// serverArg is a real server as given on the command line.
type serverArg struct {
	addr netip.Addr
	port int
	// hasPort is false for a bare address, which means the service's port.
	hasPort bool
}

// parseServerArg accepts ADDR:PORT, [IPv6]:PORT, or a bare address (IPv4,
// IPv6, or bracketed IPv6) meaning the service port.
func parseServerArg(name, s string) (serverArg, error) {
	bad := func(reason string, args ...any) (serverArg, error) {
		return serverArg{}, usagef("%s %q: "+reason, append([]any{name, s}, args...)...)
	}
	if s == "" {
		return bad("empty (want ADDR:PORT, [IPv6]:PORT or ADDR)")
	}
	addrText, portText, hasPort := s, "", false
	if host, port, err := net.SplitHostPort(s); err == nil {
		addrText, portText, hasPort = host, port, true
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		addrText = s[1 : len(s)-1]
	}
	addr, err := netip.ParseAddr(addrText)
	if err != nil {
		return bad("%q is not an IP address", addrText)
	}
	if addr.Zone() != "" {
		return bad("an address with a zone cannot be a real server")
	}
	arg := serverArg{addr: addr, hasPort: hasPort}
	if hasPort {
		p, err := strconv.Atoi(portText)
		if err != nil {
			return bad("port %q is not a number", portText)
		}
		if p < 0 || p > 65535 {
			return bad("port %d is out of range 0-65535", p)
		}
		arg.port = p
	}
	return arg, nil
}

// checkHostPort validates a host:port argument such as a Raft address. The
// host must be an IP address, because clusterd's raft_addr is one and
// clusterd refuses anything else.
func checkHostPort(name, s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return usagef("%s %q: want host:port, such as 10.0.0.14:7946", name, s)
	}
	if host == "" {
		return usagef("%s %q: host is empty", name, s)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return usagef("%s %q: %q is not an IP address (a director's raft_addr is IP:PORT)", name, s, host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return usagef("%s %q: port %q is not a number in 1-65535", name, s, port)
	}
	return nil
}
