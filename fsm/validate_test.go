package fsm

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func pfxFrom(a string, bits int) netip.Prefix { return netip.PrefixFrom(addr(a), bits) }

func asFieldError(t *testing.T, err error) *FieldError {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want a *FieldError", err)
	}
	return fe
}

type refusal struct {
	name  string
	cmd   Command
	field string
	kind  error
}

func runRefusals(t *testing.T, cases []refusal) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fixture(t).refuse(tc.cmd, tc.field, tc.kind)
		})
	}
}

func vipCmd(name, prefix, iface string) AddVIP {
	return AddVIP{VIP: VIP{Name: name, Prefix: pfx(prefix), Interface: iface}}
}

func TestAddVIPRefusals(t *testing.T) {
	runRefusals(t, []refusal{
		{"empty name", vipCmd("", "192.0.2.30/32", ""), "vip.name", ErrInvalid},
		{"long name", vipCmd(strings.Repeat("a", 64), "192.0.2.30/32", ""), "vip.name", ErrInvalid},
		{"name starts with dash", vipCmd("-a", "192.0.2.30/32", ""), "vip.name", ErrInvalid},
		{"name starts with dot", vipCmd(".a", "192.0.2.30/32", ""), "vip.name", ErrInvalid},
		{"name with space", vipCmd("a b", "192.0.2.30/32", ""), "vip.name", ErrInvalid},
		{"name with slash", vipCmd("a/b", "192.0.2.30/32", ""), "vip.name", ErrInvalid},
		{"name with non-ASCII", vipCmd("café", "192.0.2.30/32", ""), "vip.name", ErrInvalid},
		{"duplicate name", vipCmd("v4", "192.0.2.30/32", ""), "vip.name", ErrConflict},
		{"missing prefix", AddVIP{VIP: VIP{Name: "x"}}, "vip.prefix", ErrInvalid},
		{"duplicate address", vipCmd("x", "192.0.2.10/32", ""), "vip.prefix", ErrConflict},
		{"duplicate v6 address", vipCmd("x", "2001:db8::10/128", ""), "vip.prefix", ErrConflict},
		{"IPv4-mapped", vipCmd("x", "::ffff:192.0.2.30/128", ""), "vip.prefix", ErrInvalid},
		{"unspecified v4", vipCmd("x", "0.0.0.0/32", ""), "vip.prefix", ErrInvalid},
		{"unspecified v6", vipCmd("x", "::/128", ""), "vip.prefix", ErrInvalid},
		{"loopback v4", vipCmd("x", "127.0.0.2/8", ""), "vip.prefix", ErrInvalid},
		{"loopback v6", vipCmd("x", "::1/128", ""), "vip.prefix", ErrInvalid},
		{"multicast v4", vipCmd("x", "239.1.1.1/32", ""), "vip.prefix", ErrInvalid},
		{"link-local multicast v4", vipCmd("x", "224.0.0.18/32", ""), "vip.prefix", ErrInvalid},
		{"link-local multicast v6", vipCmd("x", "ff02::1/128", ""), "vip.prefix", ErrInvalid},
		{"link-local v6", vipCmd("x", "fe80::1/64", ""), "vip.prefix", ErrInvalid},
		{"link-local v4", vipCmd("x", "169.254.1.1/16", ""), "vip.prefix", ErrInvalid},
		{"limited broadcast", vipCmd("x", "255.255.255.255/32", ""), "vip.prefix", ErrInvalid},
		{"subnet broadcast", vipCmd("x", "198.51.100.255/24", ""), "vip.prefix", ErrInvalid},
		{"prefix length 0", vipCmd("x", "198.51.100.1/0", ""), "vip.prefix", ErrInvalid},
		{"interface too long", vipCmd("x", "192.0.2.30/32", "abcdefghijklmnop"), "vip.interface", ErrInvalid},
		{"interface with slash", vipCmd("x", "192.0.2.30/32", "eth/0"), "vip.interface", ErrInvalid},
		{"interface with colon", vipCmd("x", "192.0.2.30/32", "eth0:1"), "vip.interface", ErrInvalid},
		{"interface with space", vipCmd("x", "192.0.2.30/32", "eth 0"), "vip.interface", ErrInvalid},
		{"interface with tab", vipCmd("x", "192.0.2.30/32", "eth\t0"), "vip.interface", ErrInvalid},
		{"interface dot", vipCmd("x", "192.0.2.30/32", "."), "vip.interface", ErrInvalid},
		{"interface dotdot", vipCmd("x", "192.0.2.30/32", ".."), "vip.interface", ErrInvalid},
	})
}

func TestInvalidPrefixLengthRefusedByCheckAndEncode(t *testing.T) {
	// A prefix with an out-of-range length cannot even be encoded (it
	// would not decode on the other directors); Check names the field.
	h := fixture(t)
	cmd := AddVIP{VIP: VIP{Name: "x", Prefix: pfxFrom("192.0.2.30", 33)}}
	err := h.f.Check(cmd)
	fe := asFieldError(t, err)
	if fe.Field != "vip.prefix" || fe.Kind != ErrInvalid {
		t.Errorf("Check: %v", err)
	}
	if _, err := Encode(cmd); err == nil {
		t.Error("Encode of an unencodable prefix succeeded")
	}
}

func TestVIPNameLimits(t *testing.T) {
	h := fixture(t)
	h.mustApply(
		vipCmd(strings.Repeat("a", MaxNameLen), "192.0.2.30/32", ""),
		vipCmd("A.b_c-9", "192.0.2.31/32", "enp0s31f6.100"),
		vipCmd("9", "192.0.2.32/31", strings.Repeat("e", 15)),
		vipCmd("net", "198.51.100.0/24", ""), // the network address is a usable host on Linux
	)
}

func svcCmd(svc Service) AddService { return AddService{Service: svc} }

func TestAddServiceRefusals(t *testing.T) {
	ok := Service{Name: "new", VIP: "v4", Protocol: TCP, Port: 8443, Scheduler: "wlc", Method: NAT}
	with := func(f func(*Service)) AddService {
		svc := *ok.Clone()
		f(&svc)
		return svc2cmd(svc)
	}
	fwm := func(f func(*Service)) AddService {
		return with(func(s *Service) {
			s.VIP, s.Protocol, s.Port, s.FWMark, s.Family = "", "", 0, 9, IPv4
			f(s)
		})
	}
	runRefusals(t, []refusal{
		{"empty name", with(func(s *Service) { s.Name = "" }), "service.name", ErrInvalid},
		{"bad name", with(func(s *Service) { s.Name = "a:b" }), "service.name", ErrInvalid},
		{"long name", with(func(s *Service) { s.Name = strings.Repeat("s", 64) }), "service.name", ErrInvalid},
		{"duplicate name", with(func(s *Service) { s.Name = "web" }), "service.name", ErrConflict},
		{"no vip, no fwmark", with(func(s *Service) { s.VIP = "" }), "service.vip", ErrInvalid},
		{"unknown vip", with(func(s *Service) { s.VIP = "nope" }), "service.vip", ErrNotFound},
		{"unknown vip with fwmark", fwm(func(s *Service) { s.VIP = "nope" }), "service.vip", ErrNotFound},
		{"no protocol", with(func(s *Service) { s.Protocol = "" }), "service.protocol", ErrInvalid},
		{"bad protocol", with(func(s *Service) { s.Protocol = "icmp" }), "service.protocol", ErrInvalid},
		{"port 0", with(func(s *Service) { s.Port = 0 }), "service.port", ErrInvalid},
		{"port 65536", with(func(s *Service) { s.Port = 65536 }), "service.port", ErrInvalid},
		{"negative port", with(func(s *Service) { s.Port = -1 }), "service.port", ErrInvalid},
		{"negative fwmark", fwm(func(s *Service) { s.FWMark = -1 }), "service.fwmark", ErrInvalid},
		{"fwmark too large", fwm(func(s *Service) { s.FWMark = 1 << 32 }), "service.fwmark", ErrInvalid},
		{"fwmark with protocol", fwm(func(s *Service) { s.Protocol = TCP }), "service.protocol", ErrInvalid},
		{"fwmark with port", fwm(func(s *Service) { s.Port = 80 }), "service.port", ErrInvalid},
		{"fwmark without family", fwm(func(s *Service) { s.Family = "" }), "service.family", ErrInvalid},
		{"unknown family", fwm(func(s *Service) { s.Family = "ipx" }), "service.family", ErrInvalid},
		{"family does not match vip", with(func(s *Service) { s.Family = IPv6 }), "service.family", ErrInvalid},
		{"fwmark family does not match vip", fwm(func(s *Service) { s.VIP, s.Family = "v6", IPv4 }), "service.family", ErrInvalid},
		{"same vip, protocol and port", with(func(s *Service) { s.Port = 80 }), "service.port", ErrConflict},
		{"same fwmark and family", fwm(func(s *Service) { s.FWMark = 7 }), "service.fwmark", ErrConflict},
		{"same fwmark and family, family derived from vip", fwm(func(s *Service) { s.FWMark, s.VIP, s.Family = 7, "spare", "" }), "service.fwmark", ErrConflict},
		{"no scheduler", with(func(s *Service) { s.Scheduler = "" }), "service.scheduler", ErrInvalid},
		{"unknown scheduler", with(func(s *Service) { s.Scheduler = "random" }), "service.scheduler", ErrInvalid},
		{"sh_port without sh", with(func(s *Service) { s.SchedFlags.SHPort = true }), "service.sched_flags.sh_port", ErrInvalid},
		{"sh_fallback without sh", with(func(s *Service) { s.Scheduler, s.SchedFlags.SHFallback = "mh", true }), "service.sched_flags.sh_fallback", ErrInvalid},
		{"mh_port without mh", with(func(s *Service) { s.Scheduler, s.SchedFlags.MHPort = "sh", true }), "service.sched_flags.mh_port", ErrInvalid},
		{"mh_fallback without mh", with(func(s *Service) { s.SchedFlags.MHFallback = true }), "service.sched_flags.mh_fallback", ErrInvalid},
		{"persistence timeout 0", with(func(s *Service) { s.Persistence = &Persistence{} }), "service.persistence.timeout", ErrInvalid},
		{"persistence timeout too long", with(func(s *Service) { s.Persistence = &Persistence{Timeout: MaxPersistenceTimeout + 1} }), "service.persistence.timeout", ErrInvalid},
		{"persistence prefix too long for inet", with(func(s *Service) { s.Persistence = &Persistence{Timeout: 60, PrefixLen: 33} }), "service.persistence.prefix_len", ErrInvalid},
		{"persistence prefix negative", with(func(s *Service) { s.Persistence = &Persistence{Timeout: 60, PrefixLen: -1} }), "service.persistence.prefix_len", ErrInvalid},
		{"persistence prefix too long for inet6", with(func(s *Service) { s.VIP, s.Persistence = "v6", &Persistence{Timeout: 60, PrefixLen: 129} }), "service.persistence.prefix_len", ErrInvalid},
		{"persistence prefix too long for fwmark inet", fwm(func(s *Service) { s.Persistence = &Persistence{Timeout: 60, PrefixLen: 64} }), "service.persistence.prefix_len", ErrInvalid},
		{"one-packet on tcp", with(func(s *Service) { s.OnePacket = true }), "service.one_packet", ErrInvalid},
		{"one-packet on sctp", with(func(s *Service) { s.Protocol, s.OnePacket = SCTP, true }), "service.one_packet", ErrInvalid},
		{"no method", with(func(s *Service) { s.Method = "" }), "service.method", ErrInvalid},
		{"unknown method", with(func(s *Service) { s.Method = "fullnat" }), "service.method", ErrInvalid},
		{"bad server", with(func(s *Service) {
			s.Servers = servers(RealServer{Address: addr("10.0.0.1"), Port: 80, Weight: 1},
				RealServer{Address: addr("10.0.0.2"), Port: 80, Weight: MaxWeight + 1})
		}), "service.servers[10.0.0.2:80].weight", ErrInvalid},
		{"first bad server in key order", with(func(s *Service) {
			s.Servers = servers(RealServer{Address: addr("10.0.0.9"), Port: 80, Weight: -1},
				RealServer{Address: addr("10.0.0.10"), Port: 80, Admin: "up"})
		}), "service.servers[10.0.0.10:80].admin", ErrInvalid},
		{"server key mismatch", with(func(s *Service) {
			s.Servers = map[string]*RealServer{"10.0.0.1:81": {Address: addr("10.0.0.1"), Port: 80}}
		}), "service.servers[10.0.0.1:81]", ErrInvalid},
		{"null server", with(func(s *Service) {
			s.Servers = map[string]*RealServer{"10.0.0.1:80": nil}
		}), "service.servers[10.0.0.1:80]", ErrInvalid},
		{"dr server remaps port", with(func(s *Service) {
			s.Method = DR
			s.Servers = servers(RealServer{Address: addr("10.0.0.1"), Port: 80})
		}), "service.servers[10.0.0.1:80].port", ErrInvalid},
	})
}

func svc2cmd(svc Service) AddService { return AddService{Service: svc} }

func TestAddServiceHappy(t *testing.T) {
	h := fixture(t)
	h.mustApply(
		svcCmd(Service{Name: "fw6", FWMark: 7, Family: IPv6, Scheduler: "rr", Method: DR}),
		svcCmd(Service{Name: "fwv", FWMark: 8, VIP: "spare", Scheduler: "rr", Method: DR, OnePacket: true}),
		svcCmd(Service{Name: "dns-tcp", VIP: "v4", Protocol: TCP, Port: 53, Scheduler: "wrr", Method: DR}),
		svcCmd(Service{Name: "sctp", VIP: "v4", Protocol: SCTP, Port: 53, Scheduler: "lc", Method: NAT}),
		svcCmd(Service{Name: "web6-80", VIP: "v6", Protocol: TCP, Port: 80, Family: IPv6, Scheduler: "mh",
			SchedFlags: SchedFlags{MHFallback: true, MHPort: true}, Persistence: &Persistence{Timeout: MaxPersistenceTimeout, PrefixLen: 64}, Method: NAT}),
		svcCmd(Service{Name: "syslog", VIP: "v4", Protocol: UDP, Port: 514, Scheduler: "sh", OnePacket: true,
			SchedFlags: SchedFlags{SHFallback: true, SHPort: true}, Persistence: &Persistence{Timeout: 1}, Method: NAT}),
		svcCmd(Service{Name: "empty-servers", VIP: "v4", Protocol: TCP, Port: 81, Scheduler: "rr", Method: NAT, Servers: map[string]*RealServer{}}),
	)
	if got := h.service("fwv").Family; got != IPv4 {
		t.Errorf("fwmark service family derived from its VIP = %q, want inet", got)
	}
	if got := h.service("dns-tcp").Family; got != IPv4 {
		t.Errorf("family derived from VIP = %q, want inet", got)
	}
	for _, s := range []string{"fw6", "fwv", "dns-tcp", "sctp", "web6-80", "syslog"} {
		h.service(s)
	}
	if h.service("empty-servers").Servers != nil {
		t.Error("an empty servers map was stored as such; want nil, so equal states snapshot equally")
	}
}

func srvCmd(service string, srv RealServer) AddServer {
	return AddServer{Service: service, Server: srv}
}

func TestAddServerRefusals(t *testing.T) {
	web := func(f func(*RealServer)) AddServer { // web: v4 tcp 80, nat
		srv := RealServer{Address: addr("10.0.0.2"), Port: 8080, Weight: 1}
		f(&srv)
		return srvCmd("web", srv)
	}
	web6 := func(f func(*RealServer)) AddServer { // web6: v6 tcp 443, tun
		srv := RealServer{Address: addr("2001:db8:1::2"), Port: 443, Weight: 1}
		f(&srv)
		return srvCmd("web6", srv)
	}
	runRefusals(t, []refusal{
		{"unknown service", srvCmd("nope", RealServer{Address: addr("10.0.0.2"), Port: 80}), "service.name", ErrNotFound},
		{"missing address", web(func(s *RealServer) { s.Address = netip.Addr{} }), "server.address", ErrInvalid},
		{"unspecified", web(func(s *RealServer) { s.Address = addr("0.0.0.0") }), "server.address", ErrInvalid},
		{"unspecified v6", web6(func(s *RealServer) { s.Address = addr("::") }), "server.address", ErrInvalid},
		{"multicast", web(func(s *RealServer) { s.Address = addr("224.0.0.5") }), "server.address", ErrInvalid},
		{"multicast v6", web6(func(s *RealServer) { s.Address = addr("ff02::2") }), "server.address", ErrInvalid},
		{"broadcast", web(func(s *RealServer) { s.Address = addr("255.255.255.255") }), "server.address", ErrInvalid},
		{"IPv4-mapped", web(func(s *RealServer) { s.Address = addr("::ffff:10.0.0.2") }), "server.address", ErrInvalid},
		{"zone", web6(func(s *RealServer) { s.Address = addr("2001:db8::2%eth0") }), "server.address", ErrInvalid},
		{"link-local v6", web6(func(s *RealServer) { s.Address = addr("fe80::2") }), "server.address", ErrInvalid},
		{"port 0 on a port service", web(func(s *RealServer) { s.Port = 0 }), "server.port", ErrInvalid},
		{"port 65536", web(func(s *RealServer) { s.Port = 65536 }), "server.port", ErrInvalid},
		{"negative port on fwmark", srvCmd("fw", RealServer{Address: addr("10.0.0.2"), Port: -1}), "server.port", ErrInvalid},
		{"unknown method", web(func(s *RealServer) { s.Method = "fullnat" }), "server.method", ErrInvalid},
		{"dr remaps port", web(func(s *RealServer) { s.Method = DR }), "server.port", ErrInvalid},
		{"tun remaps port", web(func(s *RealServer) { s.Method = TUN }), "server.port", ErrInvalid},
		{"dr remaps port by default", srvCmd("dns", RealServer{Address: addr("10.0.0.2"), Port: 5353}), "server.port", ErrInvalid},
		{"fwmark dr with a port", srvCmd("fw", RealServer{Address: addr("10.0.0.2"), Port: 80}), "server.port", ErrInvalid},
		{"fwmark tun with a port", srvCmd("fw", RealServer{Address: addr("10.0.0.2"), Port: 80, Method: TUN}), "server.port", ErrInvalid},
		{"mixed family with nat", web(func(s *RealServer) { s.Address = addr("2001:db8:1::2") }), "server.address", ErrInvalid},
		{"mixed family with dr", srvCmd("dns", RealServer{Address: addr("2001:db8:1::2"), Port: 53}), "server.address", ErrInvalid},
		{"mixed family with dr on fwmark", srvCmd("fw", RealServer{Address: addr("2001:db8:1::2")}), "server.address", ErrInvalid},
		{"tunnel with nat", web(func(s *RealServer) { s.Tunnel = TunnelIPIP }), "server.tunnel", ErrInvalid},
		{"tunnel port with nat", web(func(s *RealServer) { s.TunnelPort = 6080 }), "server.tunnel_port", ErrInvalid},
		{"tunnel checksum with dr", srvCmd("dns", RealServer{Address: addr("10.0.0.2"), Port: 53, TunnelChecksum: ChecksumOn}), "server.tunnel_checksum", ErrInvalid},
		{"unknown tunnel", web6(func(s *RealServer) { s.Tunnel = "vxlan" }), "server.tunnel", ErrInvalid},
		{"gue without port", web6(func(s *RealServer) { s.Tunnel = TunnelGUE }), "server.tunnel_port", ErrInvalid},
		{"gue port 65536", web6(func(s *RealServer) { s.Tunnel, s.TunnelPort = TunnelGUE, 65536 }), "server.tunnel_port", ErrInvalid},
		{"ipip with port", web6(func(s *RealServer) { s.TunnelPort = 6080 }), "server.tunnel_port", ErrInvalid},
		{"gre with port", web6(func(s *RealServer) { s.Tunnel, s.TunnelPort = TunnelGRE, 6080 }), "server.tunnel_port", ErrInvalid},
		{"ipip with csum", web6(func(s *RealServer) { s.TunnelChecksum = ChecksumOn }), "server.tunnel_checksum", ErrInvalid},
		{"explicit ipip with nocsum", web6(func(s *RealServer) { s.Tunnel, s.TunnelChecksum = TunnelIPIP, ChecksumNone }), "server.tunnel_checksum", ErrInvalid},
		{"gre with remcsum", web6(func(s *RealServer) { s.Tunnel, s.TunnelChecksum = TunnelGRE, ChecksumRemote }), "server.tunnel_checksum", ErrInvalid},
		{"unknown checksum", web6(func(s *RealServer) { s.Tunnel, s.TunnelChecksum = TunnelGRE, "crc" }), "server.tunnel_checksum", ErrInvalid},
		{"negative weight", web(func(s *RealServer) { s.Weight = -1 }), "server.weight", ErrInvalid},
		{"weight too large", web(func(s *RealServer) { s.Weight = MaxWeight + 1 }), "server.weight", ErrInvalid},
		{"negative upper threshold", web(func(s *RealServer) { s.UpperThreshold = -1 }), "server.upper_threshold", ErrInvalid},
		{"upper threshold too large", web(func(s *RealServer) { s.UpperThreshold = MaxThreshold + 1 }), "server.upper_threshold", ErrInvalid},
		{"negative lower threshold", web(func(s *RealServer) { s.LowerThreshold = -1 }), "server.lower_threshold", ErrInvalid},
		{"lower above upper", web(func(s *RealServer) { s.UpperThreshold, s.LowerThreshold = 100, 101 }), "server.lower_threshold", ErrInvalid},
		{"unknown admin", web(func(s *RealServer) { s.Admin = "up" }), "server.admin", ErrInvalid},
		{"duplicate", web(func(s *RealServer) { s.Address, s.Port = addr("10.0.0.1"), 8080 }), "server", ErrConflict},
	})
}

func TestAddServerHappy(t *testing.T) {
	h := fixture(t)
	h.mustApply(
		// NAT remaps ports; empty method and admin take the defaults.
		srvCmd("web", RealServer{Address: addr("10.0.0.2"), Port: 9090, Weight: MaxWeight, UpperThreshold: MaxThreshold, LowerThreshold: MaxThreshold}),
		srvCmd("web", RealServer{Address: addr("127.0.0.1"), Port: 8080, Admin: Drained}),
		// Mixed families with TUN, every tunnel type and checksum mode it allows.
		srvCmd("web", RealServer{Address: addr("2001:db8:1::1"), Port: 80, Method: TUN}),
		srvCmd("web6", RealServer{Address: addr("10.0.0.3"), Port: 443, Tunnel: TunnelGUE, TunnelPort: 6080, TunnelChecksum: ChecksumRemote}),
		srvCmd("web6", RealServer{Address: addr("2001:db8:1::3"), Port: 443, Tunnel: TunnelGRE, TunnelChecksum: ChecksumOn}),
		srvCmd("web6", RealServer{Address: addr("2001:db8:1::4"), Port: 443, Tunnel: TunnelGUE, TunnelPort: 1, TunnelChecksum: ChecksumNone}),
		srvCmd("web6", RealServer{Address: addr("2001:db8:1::5"), Port: 443, Tunnel: TunnelIPIP}),
		// DR keeps the service port; a firewall-mark service takes port 0.
		srvCmd("dns", RealServer{Address: addr("10.0.0.4"), Port: 53, Weight: 0, Admin: Disabled}),
		srvCmd("fw", RealServer{Address: addr("10.0.0.5")}),
		srvCmd("fw", RealServer{Address: addr("10.0.0.6"), Port: 8080, Method: NAT, UpperThreshold: 10, LowerThreshold: 10}),
		srvCmd("fw", RealServer{Address: addr("10.0.0.7"), Port: 0, Method: NAT}),
		// A lower threshold without an upper one is accepted (the kernel ignores it).
		srvCmd("web", RealServer{Address: addr("10.0.0.8"), Port: 80, LowerThreshold: 5}),
	)
	if got := h.server("web", "10.0.0.2:9090"); got.Method != NAT || got.Admin != Enabled {
		t.Errorf("defaults not resolved: %+v", got)
	}
	if got := h.server("dns", "10.0.0.4:53"); got.Method != DR || got.Admin != Disabled {
		t.Errorf("dr service default: %+v", got)
	}
	if got := h.server("web6", "[2001:db8:1::5]:443"); got.Tunnel != TunnelIPIP || got.Method != TUN {
		t.Errorf("tun server: %+v", got)
	}
	if got := h.server("fw", "10.0.0.5:0"); got.Method != DR || got.Port != 0 {
		t.Errorf("fwmark dr server: %+v", got)
	}
}
