package lvs

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"

	"github.com/directorate/directorate/fsm"
)

func key4(proto ipvs.Protocol, addr string, port uint16) ServiceKey {
	return ServiceKey{Family: ipvs.INET, Protocol: proto, Addr: netip.MustParseAddr(addr), Port: port}
}

func TestDesiredAdminStatesAndMethods(t *testing.T) {
	st := newState()
	s := tcpService("web", "v4", 80)
	addServer(s, "10.1.0.1", 8080, 5)
	drained := addServer(s, "10.1.0.2", 8080, 7)
	drained.Admin = fsm.Drained
	disabled := addServer(s, "10.1.0.3", 8080, 9)
	disabled.Admin = fsm.Disabled
	dr := addServer(s, "10.1.0.4", 80, 3)
	dr.Method = fsm.DR
	dr.UpperThreshold, dr.LowerThreshold = 100, 50
	st.Services["web"] = s

	d := mustDesired(t, st)
	svc := d.Services[key4(ipvs.TCP, "10.0.0.1", 80)]
	if svc == nil {
		t.Fatalf("no service TCP 10.0.0.1:80 in %v", d.Services.Keys())
	}
	if svc.Name != "web" || svc.Scheduler != "wlc" || svc.Flags != 0 || svc.Timeout != 0 {
		t.Errorf("service = %+v", svc.Service)
	}
	if svc.Netmask != netmask.MaskFrom(32, 32) {
		t.Errorf("netmask of a service without persistence = %s, want 255.255.255.255", svc.Netmask)
	}
	if len(svc.Dests) != 3 {
		t.Fatalf("got %d destinations, want 3 (the disabled one absent): %+v", len(svc.Dests), svc.Dests)
	}
	want := map[string]struct {
		weight uint32
		method ipvs.ForwardType
	}{
		"10.1.0.1:8080": {5, ipvs.Masquerade},
		"10.1.0.2:8080": {0, ipvs.Masquerade},
		"10.1.0.4:80":   {3, ipvs.DirectRoute},
	}
	for _, dst := range svc.Dests {
		w, ok := want[dst.Key().String()]
		if !ok {
			t.Errorf("unexpected destination %s", dst.Key())
			continue
		}
		if dst.Weight != w.weight || dst.FwdMethod != w.method || dst.Family != ipvs.INET {
			t.Errorf("%s: weight %d method %s family %s, want %d %s inet", dst.Key(), dst.Weight, dst.FwdMethod, dst.Family, w.weight, w.method)
		}
	}
	if got := svc.Dest(netip.MustParseAddrPort("10.1.0.4:80")); got == nil || got.UpperThreshold != 100 || got.LowerThreshold != 50 {
		t.Errorf("thresholds of 10.1.0.4:80 = %+v", got)
	}
	if !d.Claims(key4(ipvs.UDP, "10.0.0.1", 53)) {
		t.Error("a service on a VIP address is not claimed")
	}
	if d.Claims(key4(ipvs.TCP, "192.0.2.1", 80)) {
		t.Error("a service on a foreign address is claimed")
	}
}

func TestDesiredPersistenceAndFlags(t *testing.T) {
	st := newState()
	p4 := tcpService("p4", "v4", 443)
	p4.Persistence = &fsm.Persistence{Timeout: 600, PrefixLen: 24}
	p4.Scheduler = "sh"
	p4.SchedFlags = fsm.SchedFlags{SHFallback: true, SHPort: true}
	st.Services["p4"] = p4

	p6 := tcpService("p6", "v6", 443)
	p6.Persistence = &fsm.Persistence{Timeout: 300, PrefixLen: 64}
	p6.Scheduler = "mh"
	p6.SchedFlags = fsm.SchedFlags{MHPort: true}
	st.Services["p6"] = p6

	full := tcpService("full", "v4", 444)
	full.Persistence = &fsm.Persistence{Timeout: 60}
	st.Services["full"] = full

	udp := tcpService("dns", "v4", 53)
	udp.Protocol = fsm.UDP
	udp.OnePacket = true
	st.Services["dns"] = udp

	d := mustDesired(t, st)
	tests := []struct {
		key     ServiceKey
		flags   ipvs.Flags
		timeout uint32
		mask    netmask.Mask
		names   []string
	}{
		{key4(ipvs.TCP, "10.0.0.1", 443), ipvs.ServicePersistent | ipvs.ServiceSchedulerOpt1 | ipvs.ServiceSchedulerOpt2, 600,
			netmask.MaskFrom4([4]byte{255, 255, 255, 0}), []string{"persistent", "sh-fallback", "sh-port"}},
		{ServiceKey{Family: ipvs.INET6, Protocol: ipvs.TCP, Addr: netip.MustParseAddr("2001:db8::1"), Port: 443},
			ipvs.ServicePersistent | ipvs.ServiceSchedulerOpt2, 300, netmask.MaskFrom(64, 128), []string{"persistent", "mh-port"}},
		{key4(ipvs.TCP, "10.0.0.1", 444), ipvs.ServicePersistent, 60, netmask.MaskFrom(32, 32), []string{"persistent"}},
		{key4(ipvs.UDP, "10.0.0.1", 53), ipvs.ServiceOnePacket, 0, netmask.MaskFrom(32, 32), []string{"one-packet"}},
	}
	for _, tt := range tests {
		s := d.Services[tt.key]
		if s == nil {
			t.Errorf("%s missing", tt.key)
			continue
		}
		if s.Flags != tt.flags || s.Timeout != tt.timeout || s.Netmask != tt.mask {
			t.Errorf("%s: flags %s timeout %d netmask %s; want %s %d %s", tt.key, s.Flags, s.Timeout, s.Netmask, tt.flags, tt.timeout, tt.mask)
		}
		if got := strings.Join(FlagNames(s.Service), ","); got != strings.Join(tt.names, ",") {
			t.Errorf("%s: FlagNames = %s, want %s", tt.key, got, strings.Join(tt.names, ","))
		}
	}
}

func TestDesiredFWMark(t *testing.T) {
	st := newState()
	st.Services["m4"] = &fsm.Service{Name: "m4", FWMark: 7, Family: fsm.IPv4, Scheduler: "rr", Method: fsm.DR, Servers: map[string]*fsm.RealServer{}}
	st.Services["m6"] = &fsm.Service{Name: "m6", FWMark: 7, VIP: "v6", Scheduler: "rr", Method: fsm.DR}
	addServer(st.Services["m4"], "10.1.0.1", 0, 1)

	d := mustDesired(t, st)
	k4 := ServiceKey{Family: ipvs.INET, FWMark: 7}
	k6 := ServiceKey{Family: ipvs.INET6, FWMark: 7}
	if d.Services[k4] == nil || d.Services[k6] == nil {
		t.Fatalf("keys = %v, want FWM 7 in both families", d.Services.Keys())
	}
	if k4.String() != "FWM 7 inet" || k6.String() != "FWM 7 inet6" {
		t.Errorf("key strings %q %q", k4, k6)
	}
	if d.Services[k4].Dests[0].Port != 0 {
		t.Errorf("fwmark destination port = %d, want 0", d.Services[k4].Dests[0].Port)
	}
	if !d.Claims(ServiceKey{Family: ipvs.INET6, FWMark: 7}) || d.Claims(ServiceKey{Family: ipvs.INET, FWMark: 8}) {
		t.Error("Claims is wrong for firewall marks")
	}
}

func TestDesiredTunnels(t *testing.T) {
	st := newState()
	s := tcpService("t", "v4", 80)
	s.Method = fsm.TUN
	gue := addServer(s, "10.1.0.1", 80, 1)
	gue.Tunnel, gue.TunnelPort, gue.TunnelChecksum = fsm.TunnelGUE, 6080, fsm.ChecksumRemote
	gre := addServer(s, "10.1.0.2", 80, 1)
	gre.Tunnel, gre.TunnelChecksum = fsm.TunnelGRE, fsm.ChecksumOn
	v6 := addServer(s, "2001:db8::10", 80, 1) // TUN may cross families
	_ = v6
	badGUE := addServer(s, "10.1.0.3", 80, 1)
	badGUE.Tunnel = fsm.TunnelGUE // no port
	badCsum := addServer(s, "10.1.0.4", 80, 1)
	badCsum.TunnelChecksum = fsm.ChecksumRemote // ipip
	nat6 := addServer(s, "2001:db8::11", 80, 1)
	nat6.Method = fsm.NAT // NAT may not cross families
	st.Services["t"] = s

	d, err := DesiredFromState(st)
	for _, field := range []string{
		"services[t].servers[10.1.0.3:80].tunnel_port",
		"services[t].servers[10.1.0.4:80].tunnel_checksum",
		"services[t].servers[[2001:db8::11]:80].address",
	} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("error %v does not name %s", err, field)
		}
	}
	var fe *fsm.FieldError
	if !errors.As(err, &fe) || !errors.Is(err, fsm.ErrInvalid) {
		t.Errorf("error %v is not an invalid *fsm.FieldError", err)
	}
	svc := d.Services[key4(ipvs.TCP, "10.0.0.1", 80)]
	if svc == nil || len(svc.Dests) != 3 {
		t.Fatalf("want the service with its 3 good servers, got %+v", svc)
	}
	g := svc.Dest(netip.MustParseAddrPort("10.1.0.1:80"))
	if g.TunnelType != ipvs.GUE || g.TunnelPort != 6080 || g.TunnelFlags != ipvs.TunnelEncapRemoteChecksum {
		t.Errorf("gue destination = %+v", g.Destination)
	}
	r := svc.Dest(netip.MustParseAddrPort("10.1.0.2:80"))
	if r.TunnelType != ipvs.GRE || r.TunnelPort != 0 || r.TunnelFlags != ipvs.TunnelEncapChecksum {
		t.Errorf("gre destination = %+v", r.Destination)
	}
	if x := svc.Dest(netip.MustParseAddrPort("[2001:db8::10]:80")); x == nil || x.Family != ipvs.INET6 {
		t.Errorf("cross-family tunnel destination = %+v", x)
	}
}

func TestDesiredErrorsHoldOrSkip(t *testing.T) {
	st := newState()
	badSched := tcpService("badflags", "v4", 80)
	badSched.SchedFlags = fsm.SchedFlags{MHFallback: true} // scheduler is wlc
	st.Services["badflags"] = badSched
	noVIP := tcpService("novip", "gone", 80)
	st.Services["novip"] = noVIP
	zeroPort := tcpService("zeroport", "v4", 0)
	st.Services["zeroport"] = zeroPort
	a := tcpService("a", "v4", 8080)
	st.Services["a"] = a
	b := tcpService("b", "v4", 8080) // same kernel service as "a"
	st.Services["b"] = b

	d, err := DesiredFromState(st)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"services[badflags].sched_flags: mh_fallback and mh_port need the mh scheduler",
		`services[novip].vip: VIP "gone" does not exist`,
		"services[zeroport].port: 0 (every port) needs persistence",
		`services[b]: is the same kernel service (TCP 10.0.0.1:8080) as service "a"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if !errors.Is(err, fsm.ErrConflict) || !errors.Is(err, fsm.ErrNotFound) {
		t.Errorf("error kinds missing: %v", err)
	}
	if _, ok := d.Held[key4(ipvs.TCP, "10.0.0.1", 80)]; !ok {
		t.Error("a service with bad flags is not held")
	}
	if _, ok := d.Held[key4(ipvs.TCP, "10.0.0.1", 0)]; !ok {
		t.Error("a service with port 0 and no persistence is not held")
	}
	if s := d.Services[key4(ipvs.TCP, "10.0.0.1", 8080)]; s == nil || s.Name != "a" {
		t.Errorf("the first of two services with one identity should stay desired, got %+v", s)
	}
	if len(d.Services) != 1 {
		t.Errorf("desired services = %v, want only TCP 10.0.0.1:8080", d.Services.Keys())
	}
}

func TestDesiredNilState(t *testing.T) {
	d, err := DesiredFromState(nil)
	if err != nil || len(d.Services) != 0 {
		t.Fatalf("DesiredFromState(nil) = %v, %v", d, err)
	}
}

func TestKeyStringsAndOrder(t *testing.T) {
	keys := []ServiceKey{
		{Family: ipvs.INET6, FWMark: 3},
		{Family: ipvs.INET6, Protocol: ipvs.UDP, Addr: netip.MustParseAddr("2001:db8::1"), Port: 53},
		{Family: ipvs.INET, FWMark: 9},
		key4(ipvs.UDP, "10.0.0.1", 53),
		key4(ipvs.TCP, "10.0.0.2", 80),
		key4(ipvs.TCP, "10.0.0.1", 443),
		key4(ipvs.TCP, "10.0.0.1", 80),
		{Family: ipvs.INET, Protocol: ipvs.SCTP, Addr: netip.MustParseAddr("10.0.0.1"), Port: 9},
	}
	tab := make(Table)
	for _, k := range keys {
		tab[k] = &Service{}
	}
	var got []string
	for _, k := range tab.Keys() {
		got = append(got, k.String())
	}
	want := []string{
		"TCP 10.0.0.1:80", "TCP 10.0.0.1:443", "TCP 10.0.0.2:80", "UDP 10.0.0.1:53", "SCTP 10.0.0.1:9",
		"FWM 9 inet", "UDP [2001:db8::1]:53", "FWM 3 inet6",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("order:\n got %q\nwant %q", got, want)
	}
	op := Op{Kind: AddDest, Service: ipvs.Service{Family: ipvs.INET, Protocol: ipvs.TCP, Address: netip.MustParseAddr("10.0.0.1"), Port: 80},
		Dest: ipvs.Destination{Address: netip.MustParseAddr("10.0.0.2"), Port: 80}}
	if op.String() != "add destination 10.0.0.2:80 to TCP 10.0.0.1:80" {
		t.Errorf("op string %q", op)
	}
}
