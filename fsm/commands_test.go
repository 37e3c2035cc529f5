package fsm

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestUpdateServiceRefusals(t *testing.T) {
	upd := func(name string, p ServicePatch) UpdateService { return UpdateService{Name: name, Patch: p} }
	runRefusals(t, []refusal{
		{"unknown service", upd("nope", ServicePatch{Scheduler: ptr(Scheduler("rr"))}), "service.name", ErrNotFound},
		{"empty patch", upd("web", ServicePatch{}), "patch", ErrInvalid},
		{"persistence and no_persistence", upd("web", ServicePatch{Persistence: &Persistence{Timeout: 60}, NoPersistence: true}), "patch.no_persistence", ErrInvalid},
		{"unknown scheduler", upd("web", ServicePatch{Scheduler: ptr(Scheduler("random"))}), "service.scheduler", ErrInvalid},
		{"empty scheduler", upd("web", ServicePatch{Scheduler: ptr(Scheduler(""))}), "service.scheduler", ErrInvalid},
		// fw has sh_port: leaving sh without clearing it is refused.
		{"scheduler change keeps sh flags", upd("fw", ServicePatch{Scheduler: ptr(Scheduler("rr"))}), "service.sched_flags.sh_port", ErrInvalid},
		{"mh flags on sh", upd("fw", ServicePatch{SchedFlags: &SchedFlags{MHPort: true}}), "service.sched_flags.mh_port", ErrInvalid},
		{"persistence timeout 0", upd("web", ServicePatch{Persistence: &Persistence{}}), "service.persistence.timeout", ErrInvalid},
		{"persistence prefix for inet", upd("web", ServicePatch{Persistence: &Persistence{Timeout: 60, PrefixLen: 64}}), "service.persistence.prefix_len", ErrInvalid},
		{"one-packet on tcp", upd("web", ServicePatch{OnePacket: ptr(true)}), "service.one_packet", ErrInvalid},
		{"empty method", upd("web", ServicePatch{Method: ptr(Method(""))}), "service.method", ErrInvalid},
		{"unknown method", upd("web", ServicePatch{Method: ptr(Method("fullnat"))}), "service.method", ErrInvalid},
	})
}

func TestUpdateServiceHappy(t *testing.T) {
	h := fixture(t)
	h.mustApply(
		UpdateService{Name: "web", Patch: ServicePatch{Persistence: &Persistence{Timeout: 300, PrefixLen: 24}}},
		UpdateService{Name: "dns", Patch: ServicePatch{OnePacket: ptr(true), Scheduler: ptr(Scheduler("sh")), SchedFlags: &SchedFlags{SHFallback: true}}},
		UpdateService{Name: "fw", Patch: ServicePatch{Scheduler: ptr(Scheduler("rr")), SchedFlags: &SchedFlags{}}},
		UpdateService{Name: "fw", Patch: ServicePatch{OnePacket: ptr(true)}},
		// Changing the default method leaves existing servers alone.
		UpdateService{Name: "web", Patch: ServicePatch{Method: ptr(DR)}},
	)
	web := h.service("web")
	if web.Method != DR || web.Persistence == nil || web.Persistence.Timeout != 300 || web.Persistence.PrefixLen != 24 || web.Scheduler != "wlc" {
		t.Errorf("web after patches: %+v", web)
	}
	if got := h.server("web", "10.0.0.1:8080"); got.Method != NAT {
		t.Errorf("existing server's method changed to %s with the service default", got.Method)
	}
	if dns := h.service("dns"); !dns.OnePacket || dns.Scheduler != "sh" || !dns.SchedFlags.SHFallback {
		t.Errorf("dns after patch: %+v", dns)
	}
	if fw := h.service("fw"); fw.Scheduler != "rr" || fw.SchedFlags != (SchedFlags{}) || !fw.OnePacket {
		t.Errorf("fw after patch: %+v", fw)
	}
	h.mustApply(UpdateService{Name: "web", Patch: ServicePatch{NoPersistence: true}})
	if h.service("web").Persistence != nil {
		t.Error("no_persistence kept persistence")
	}
	// A server added after the default changed takes the new default.
	h.mustApply(srvCmd("web", RealServer{Address: addr("10.0.0.2"), Port: 80}))
	if got := h.server("web", "10.0.0.2:80"); got.Method != DR {
		t.Errorf("new server method = %s, want the new default dr", got.Method)
	}
}

func TestUpdateServerRefusals(t *testing.T) {
	upd := func(service, a string, port int, p ServerPatch) UpdateServer {
		return UpdateServer{Service: service, Address: addr(a), Port: port, Patch: p}
	}
	withGUE := func(t *testing.T) *harness {
		h := fixture(t)
		h.mustApply(srvCmd("web6", RealServer{Address: addr("2001:db8:1::1"), Port: 443, Tunnel: TunnelGUE, TunnelPort: 6080, TunnelChecksum: ChecksumRemote}))
		return h
	}
	cases := []refusal{
		{"unknown service", upd("nope", "10.0.0.1", 8080, ServerPatch{Weight: ptr(2)}), "service.name", ErrNotFound},
		{"unknown server", upd("web", "10.0.0.1", 80, ServerPatch{Weight: ptr(2)}), "server", ErrNotFound},
		// 8080+65536 would wrap onto 10.0.0.1:8080 if not checked first.
		{"port out of range", upd("web", "10.0.0.1", 8080+65536, ServerPatch{Weight: ptr(2)}), "server.port", ErrInvalid},
		{"empty patch", upd("web", "10.0.0.1", 8080, ServerPatch{}), "patch", ErrInvalid},
		{"weight too large", upd("web", "10.0.0.1", 8080, ServerPatch{Weight: ptr(MaxWeight + 1)}), "server.weight", ErrInvalid},
		{"dr cannot remap", upd("web", "10.0.0.1", 8080, ServerPatch{Method: ptr(DR)}), "server.port", ErrInvalid},
		{"tunnel on nat", upd("web", "10.0.0.1", 8080, ServerPatch{Tunnel: ptr(TunnelGRE)}), "server.tunnel", ErrInvalid},
		{"lower above upper", upd("web", "10.0.0.1", 8080, ServerPatch{UpperThreshold: ptr(5), LowerThreshold: ptr(6)}), "server.lower_threshold", ErrInvalid},
		{"unknown admin", upd("web", "10.0.0.1", 8080, ServerPatch{Admin: ptr(AdminState("down"))}), "server.admin", ErrInvalid},
	}
	runRefusals(t, cases)
	for _, tc := range []refusal{
		// Leaving tun with gue settings in place is refused: clear them in the same patch.
		{"tun to nat keeps gue", upd("web6", "2001:db8:1::1", 443, ServerPatch{Method: ptr(NAT)}), "server.tunnel", ErrInvalid},
		{"gue to ipip keeps port", upd("web6", "2001:db8:1::1", 443, ServerPatch{Tunnel: ptr(TunnelIPIP)}), "server.tunnel_port", ErrInvalid},
		{"gue to gre keeps remcsum", upd("web6", "2001:db8:1::1", 443, ServerPatch{Tunnel: ptr(TunnelGRE), TunnelPort: ptr(0)}), "server.tunnel_checksum", ErrInvalid},
		{"gue port cleared", upd("web6", "2001:db8:1::1", 443, ServerPatch{TunnelPort: ptr(0)}), "server.tunnel_port", ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) { withGUE(t).refuse(tc.cmd, tc.field, tc.kind) })
	}
}

func TestUpdateServerHappy(t *testing.T) {
	h := fixture(t)
	h.mustApply(
		srvCmd("web6", RealServer{Address: addr("2001:db8:1::1"), Port: 443, Tunnel: TunnelGUE, TunnelPort: 6080, TunnelChecksum: ChecksumRemote}),
		UpdateServer{Service: "web", Address: addr("10.0.0.1"), Port: 8080, Patch: ServerPatch{
			Weight: ptr(7), UpperThreshold: ptr(100), LowerThreshold: ptr(50), Admin: ptr(Drained)}},
		// Moving off gue clears its settings explicitly.
		UpdateServer{Service: "web6", Address: addr("2001:db8:1::1"), Port: 443, Patch: ServerPatch{
			Tunnel: ptr(TunnelGRE), TunnelPort: ptr(0), TunnelChecksum: ptr(ChecksumOn)}},
	)
	got := h.server("web", "10.0.0.1:8080")
	want := RealServer{Address: addr("10.0.0.1"), Port: 8080, Method: NAT, Weight: 7, UpperThreshold: 100, LowerThreshold: 50, Admin: Drained}
	if got != want {
		t.Errorf("patched server = %+v, want %+v", got, want)
	}
	if got := h.server("web6", "[2001:db8:1::1]:443"); got.Tunnel != TunnelGRE || got.TunnelPort != 0 || got.TunnelChecksum != ChecksumOn {
		t.Errorf("tunnel patch: %+v", got)
	}
}

func TestUpdateServerEmptyMethodTakesServiceDefault(t *testing.T) {
	h := fixture(t)
	h.mustApply(
		srvCmd("web", RealServer{Address: addr("10.0.0.2"), Port: 80, Method: NAT}),
		UpdateService{Name: "web", Patch: ServicePatch{Method: ptr(DR)}},
		UpdateServer{Service: "web", Address: addr("10.0.0.2"), Port: 80, Patch: ServerPatch{Method: ptr(Method("")), Admin: ptr(AdminState(""))}},
	)
	if got := h.server("web", "10.0.0.2:80"); got.Method != DR || got.Admin != Enabled {
		t.Errorf("empty method/admin in a patch: %+v, want dr/enabled", got)
	}
}

func TestDeletes(t *testing.T) {
	runRefusals(t, []refusal{
		{"unknown vip", DeleteVIP{Name: "nope"}, "vip.name", ErrNotFound},
		{"unknown service", DeleteService{Name: "nope"}, "service.name", ErrNotFound},
		{"server of unknown service", DeleteServer{Service: "nope", Address: addr("10.0.0.1"), Port: 8080}, "service.name", ErrNotFound},
		{"unknown server", DeleteServer{Service: "web", Address: addr("10.0.0.1"), Port: 8081}, "server", ErrNotFound},
		{"server port out of range", DeleteServer{Service: "web", Address: addr("10.0.0.1"), Port: 8080 - 65536}, "server.port", ErrInvalid},
	})

	t.Run("vip in use", func(t *testing.T) {
		h := fixture(t)
		fe := h.refuse(DeleteVIP{Name: "v4"}, "vip.name", ErrConflict)
		if !strings.Contains(fe.Reason, "dns, web:") {
			t.Errorf("reason %q does not name the services in order", fe.Reason)
		}
	})

	t.Run("happy", func(t *testing.T) {
		h := fixture(t)
		h.mustApply(
			DeleteServer{Service: "web", Address: addr("10.0.0.1"), Port: 8080},
			DeleteService{Name: "web6"},
			DeleteVIP{Name: "v6"},
			DeleteVIP{Name: "spare"},
		)
		h.f.Read(func(s *State) {
			if s.Services["web"].Servers != nil {
				t.Errorf("web servers after deleting the last: %v", s.Services["web"].Servers)
			}
			if _, ok := s.Services["web6"]; ok {
				t.Error("web6 still there")
			}
			if got := slices.Sorted(maps.Keys(s.VIPs)); !slices.Equal(got, []string{"v4"}) {
				t.Errorf("VIPs = %v", got)
			}
		})
		// The freed identities and addresses can be used again.
		h.mustApply(
			AddVIP{VIP: VIP{Name: "v6b", Prefix: pfx("2001:db8::10/64")}},
			svcCmd(Service{Name: "web6", VIP: "v6b", Protocol: TCP, Port: 443, Scheduler: "rr", Method: NAT}),
			srvCmd("web", RealServer{Address: addr("10.0.0.1"), Port: 8080}),
		)
	})

	t.Run("force", func(t *testing.T) {
		h := fixture(t)
		h.mustApply(
			svcCmd(Service{Name: "fwv", FWMark: 8, VIP: "v4", Scheduler: "rr", Method: DR}),
			DeleteVIP{Name: "v4", Force: true},
		)
		h.f.Read(func(s *State) {
			if got := slices.Sorted(maps.Keys(s.Services)); !slices.Equal(got, []string{"fw", "web6"}) {
				t.Errorf("services after force delete = %v, want [fw web6]", got)
			}
			if _, ok := s.VIPs["v4"]; ok {
				t.Error("v4 still there")
			}
		})
		// The deleted services' identities are free again.
		h.mustApply(
			AddVIP{VIP: VIP{Name: "v4", Prefix: pfx("192.0.2.10/24")}},
			svcCmd(Service{Name: "web", VIP: "v4", Protocol: TCP, Port: 80, Scheduler: "rr", Method: NAT}),
			svcCmd(Service{Name: "fwv", FWMark: 8, Family: IPv4, Scheduler: "rr", Method: DR}),
		)
	})
}

func TestReplaceState(t *testing.T) {
	rich := configState(t)
	h := fixture(t)
	h.mustApply(ReplaceState{State: *rich})
	if got := h.f.Index(); got != h.idx {
		t.Errorf("index after replace = %d, want the entry's %d", got, h.idx)
	}
	want := rich.Clone()
	want.Index = 0
	var wantBuf strings.Builder
	if err := WriteState(&wantBuf, want); err != nil {
		t.Fatal(err)
	}
	if got := stateBytes(t, h.f); string(got) != wantBuf.String() {
		t.Errorf("state after replace:\n%s\nwant\n%s", got, wantBuf.String())
	}

	// Defaults are resolved as on add.
	h.mustApply(ReplaceState{State: State{
		VIPs: map[string]*VIP{"a": {Name: "a", Prefix: pfx("192.0.2.1/32")}},
		Services: map[string]*Service{"s": {Name: "s", VIP: "a", Protocol: TCP, Port: 80, Scheduler: "rr", Method: DR,
			Servers: servers(RealServer{Address: addr("10.0.0.1"), Port: 80})}},
	}})
	if got := h.server("s", "10.0.0.1:80"); got.Method != DR || got.Admin != Enabled {
		t.Errorf("replace did not resolve defaults: %+v", got)
	}
	if got := h.service("s").Family; got != IPv4 {
		t.Errorf("replace did not derive the family: %q", got)
	}
	// An empty state is a valid state.
	h.mustApply(ReplaceState{})
	h.f.Read(func(s *State) {
		if s.VIPs == nil || s.Services == nil || len(s.VIPs)+len(s.Services) != 0 {
			t.Errorf("after an empty replace: %+v", s)
		}
	})
}

func TestReplaceStateRefusals(t *testing.T) {
	vip := func(name, p string) *VIP { return &VIP{Name: name, Prefix: pfx(p)} }
	svc := func(name, v string, port int) *Service {
		return &Service{Name: name, VIP: v, Protocol: TCP, Port: port, Scheduler: "rr", Method: NAT}
	}
	st := func(vips []*VIP, svcs ...*Service) ReplaceState {
		s := State{VIPs: map[string]*VIP{}, Services: map[string]*Service{}}
		for _, v := range vips {
			s.VIPs[v.Name] = v
		}
		for _, x := range svcs {
			s.Services[x.Name] = x
		}
		return ReplaceState{State: s}
	}
	twoVIPs := []*VIP{vip("a", "192.0.2.1/32"), vip("b", "192.0.2.2/32")}
	badWeight := svc("s", "a", 80)
	badWeight.Servers = servers(RealServer{Address: addr("10.0.0.1"), Port: 80, Weight: -1})
	runRefusals(t, []refusal{
		{"null vip", ReplaceState{State: State{VIPs: map[string]*VIP{"a": nil}}}, "vips[a]", ErrInvalid},
		{"vip key mismatch", ReplaceState{State: State{VIPs: map[string]*VIP{"a": vip("b", "192.0.2.1/32")}}}, "vips[a].name", ErrInvalid},
		{"bad vip name", st([]*VIP{vip("-", "192.0.2.1/32")}), "vips[-].name", ErrInvalid},
		{"first bad vip in name order", st([]*VIP{vip("z", "127.0.0.1/32"), vip("m", "0.0.0.0/32")}), "vips[m].prefix", ErrInvalid},
		{"duplicate vip address", st([]*VIP{vip("a", "192.0.2.1/32"), vip("b", "192.0.2.1/24")}), "vips[b].prefix", ErrConflict},
		{"null service", ReplaceState{State: State{Services: map[string]*Service{"s": nil}}}, "services[s]", ErrInvalid},
		{"service without vip", st(twoVIPs, &Service{Name: "x"}), "services[x].vip", ErrInvalid},
		{"service missing vip", st(twoVIPs, svc("s", "c", 80)), "services[s].vip", ErrNotFound},
		{"duplicate identity", st(twoVIPs, svc("s1", "a", 80), svc("s2", "a", 80)), "services[s2].port", ErrConflict},
		{"bad server", st(twoVIPs, badWeight), "services[s].servers[10.0.0.1:80].weight", ErrInvalid},
		{"services checked after vips", st([]*VIP{vip("z", "0.0.0.0/32")}, svc("a", "nope", 80)), "vips[z].prefix", ErrInvalid},
	})
	t.Run("service key mismatch", func(t *testing.T) {
		h := fixture(t)
		h.refuse(ReplaceState{State: State{Services: map[string]*Service{"x": svc("y", "a", 80)}}}, "services[x].name", ErrInvalid)
	})
}

// TestReplaceStateFirstErrorIsDeterministic feeds a state with many errors
// many times: map iteration order changes between runs, the reported error
// must not.
func TestReplaceStateFirstErrorIsDeterministic(t *testing.T) {
	st := State{VIPs: map[string]*VIP{}, Services: map[string]*Service{}}
	for i := range 20 {
		name := fmt.Sprintf("v%02d", i)
		st.VIPs[name] = &VIP{Name: name, Prefix: pfx(fmt.Sprintf("192.0.2.%d/32", i+1))}
		s := &Service{Name: fmt.Sprintf("s%02d", i), VIP: name, Protocol: TCP, Port: 80, Scheduler: "rr", Method: DR}
		s.Servers = map[string]*RealServer{}
		for j := range 20 {
			srv := &RealServer{Address: addr(fmt.Sprintf("10.0.%d.%d", i, j+1)), Port: 81 + j} // DR remaps: all invalid
			s.Servers[srv.Key()] = srv
		}
		st.Services[s.Name] = s
	}
	f := New()
	var first error
	for i := range 50 {
		err := f.Check(ReplaceState{State: st})
		if err == nil {
			t.Fatal("an invalid state passed")
		}
		if i == 0 {
			first = err
			// Server keys sort as strings: 10.0.0.10:90 before 10.0.0.1:81.
			if fe := asFieldError(t, err); fe.Field != "services[s00].servers[10.0.0.10:90].port" {
				t.Errorf("first error %v, want the first service's first server key", err)
			}
		} else if err.Error() != first.Error() {
			t.Fatalf("run %d reported %v, run 0 %v", i, err, first)
		}
	}
}

func TestCheckDoesNotModifyTheCommand(t *testing.T) {
	h := fixture(t)
	cmd := &AddService{Service: Service{Name: "new", VIP: "v4", Protocol: TCP, Port: 81, Scheduler: "rr", Method: DR,
		Servers: servers(RealServer{Address: addr("10.0.0.1"), Port: 81})}}
	if err := h.f.Check(cmd); err != nil {
		t.Fatal(err)
	}
	if cmd.Service.Family != "" || cmd.Service.Servers["10.0.0.1:81"].Method != "" || cmd.Service.Servers["10.0.0.1:81"].Admin != "" {
		t.Errorf("Check filled in the caller's command: %+v %+v", cmd.Service, cmd.Service.Servers["10.0.0.1:81"])
	}
	if _, ok := h.f.Clone().Services["new"]; ok {
		t.Error("Check applied the command")
	}
}

// TestAddDoesNotAliasTheCommand changes a command after it was applied:
// the state must not see it.
func TestAddDoesNotAliasTheCommand(t *testing.T) {
	s := newStore()
	commit, err := s.prepare(AddVIP{VIP: VIP{Name: "v", Prefix: pfx("192.0.2.1/32")}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	cmd := AddService{Service: Service{Name: "s", VIP: "v", Protocol: TCP, Port: 80, Scheduler: "rr", Method: NAT,
		Persistence: &Persistence{Timeout: 60},
		Servers:     servers(RealServer{Address: addr("10.0.0.1"), Port: 80})}}
	if commit, err = s.prepare(cmd, 2); err != nil {
		t.Fatal(err)
	}
	commit()
	cmd.Service.Persistence.Timeout = 1
	cmd.Service.Servers["10.0.0.1:80"].Weight = 99
	cmd.Service.Servers["x"] = nil
	got := s.state.Services["s"]
	if got.Persistence.Timeout != 60 || got.Servers["10.0.0.1:80"].Weight != 0 || len(got.Servers) != 1 {
		t.Errorf("state aliases the command: %+v", got)
	}
	rs := ReplaceState{State: *s.state.Clone()}
	if commit, err = s.prepare(rs, 3); err != nil {
		t.Fatal(err)
	}
	commit()
	rs.State.Services["s"].Servers["10.0.0.1:80"].Weight = 42
	rs.State.VIPs["v"].Interface = "eth9"
	if s.state.Services["s"].Servers["10.0.0.1:80"].Weight != 0 || s.state.VIPs["v"].Interface != "" {
		t.Error("state aliases a replace command")
	}
}

func TestCheckAcceptsPointersAndRefusesNil(t *testing.T) {
	h := fixture(t)
	if err := h.f.Check(&AddVIP{VIP: VIP{Name: "x", Prefix: pfx("192.0.2.40/32")}}); err != nil {
		t.Errorf("pointer command: %v", err)
	}
	if err := h.f.Check(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil command: %v", err)
	}
	if err := h.f.Check((*AddVIP)(nil)); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil *AddVIP: %v", err)
	}
	if err := h.f.Check(foreignCommand{}); !errors.Is(err, ErrUnsupportedCommand) {
		t.Errorf("foreign command: %v", err)
	}
}

type foreignCommand struct{}

func (foreignCommand) Type() CommandType { return "foreign" }
