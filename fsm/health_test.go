package fsm

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDurationJSON(t *testing.T) {
	var d Duration
	if err := json.Unmarshal([]byte(`"1.5s"`), &d); err != nil || d != Duration(1500*time.Millisecond) {
		t.Fatalf("\"1.5s\" decodes to %v, %v", d, err)
	}
	out, err := json.Marshal(Duration(250 * time.Millisecond))
	if err != nil || string(out) != `"250ms"` {
		t.Errorf("250ms encodes as %s, %v", out, err)
	}
	for _, bad := range []string{`1500`, `"1.5"`, `"soon"`, `""`, `true`} {
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("%s decoded to %v", bad, d)
		}
	}
	d = 7
	if err := json.Unmarshal([]byte(`null`), &d); err != nil || d != 7 {
		t.Errorf("null: %v, %v; want the value left alone", d, err)
	}
}

// checkedFixture is fixture plus a web service with two servers of weight
// 5 and 3, an http check and a quorum of 6 with hysteresis 1:
// lost below 5, regained at 7.
func checkedFixture(t *testing.T) *harness {
	t.Helper()
	h := fixture(t)
	h.mustApply(
		AddServer{Service: "web", Server: RealServer{Address: addr("10.0.0.2"), Port: 8080, Weight: 3}},
		UpdateServer{Service: "web", Address: addr("10.0.0.1"), Port: 8080, Patch: ServerPatch{Weight: ptr(5)}},
		UpdateService{Name: "web", Patch: ServicePatch{Check: &CheckConfig{Kind: CheckHTTP, Path: "/health"},
			Quorum: ptr(6), QuorumHysteresis: ptr(1), Sorry: &SorryServer{Address: addr("10.0.0.99"), Port: 8080}}},
	)
	return h
}

func health(updates ...HealthUpdate) SetHealth { return SetHealth{Updates: updates} }

func upd(service, server, state string) HealthUpdate {
	return HealthUpdate{Service: service, Server: server, State: state,
		Views: map[string]string{"d1": state, "d2": state, "d3": HealthUnknown}}
}

func TestCheckDefaultsAreStored(t *testing.T) {
	h := checkedFixture(t)
	svc := h.service("web")
	want := CheckConfig{Kind: CheckHTTP, Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout,
		Rise: DefaultCheckRise, Fall: DefaultCheckFall, Path: "/health"}
	if *svc.Check != want {
		t.Errorf("stored check %+v, want %+v", *svc.Check, want)
	}
	if svc.Sorry.Method != NAT {
		t.Errorf("sorry server method %q, want the service's nat", svc.Sorry.Method)
	}
	h.mustApply(UpdateServer{Service: "web", Address: addr("10.0.0.2"), Port: 8080,
		Patch: ServerPatch{Check: &CheckConfig{Kind: CheckDNS, Interval: Duration(500 * time.Millisecond), DNSName: "example.com"}}})
	got := h.server("web", "10.0.0.2:8080").Check
	want = CheckConfig{Kind: CheckDNS, Interval: Duration(500 * time.Millisecond), Timeout: Duration(500 * time.Millisecond),
		Rise: DefaultCheckRise, Fall: DefaultCheckFall, DNSName: "example.com", DNSType: "A"}
	if *got != want {
		t.Errorf("stored override %+v, want %+v", *got, want)
	}
	if cc := EffectiveCheck(svc, svc.Servers["10.0.0.1:8080"]); cc != svc.Check {
		t.Errorf("EffectiveCheck without an override = %+v, want the service's", cc)
	}
	h.mustApply(UpdateServer{Service: "web", Address: addr("10.0.0.2"), Port: 8080, Patch: ServerPatch{Check: &CheckConfig{Kind: CheckNone}}})
	svc = h.service("web")
	if cc := EffectiveCheck(svc, svc.Servers["10.0.0.2:8080"]); cc != nil {
		t.Errorf("EffectiveCheck with kind none = %+v, want nil", cc)
	}
}

func TestHealthSettingRefusals(t *testing.T) {
	chk := func(cc CheckConfig) UpdateService {
		return UpdateService{Name: "web", Patch: ServicePatch{Check: &cc}}
	}
	srvChk := func(cc CheckConfig) UpdateServer {
		return UpdateServer{Service: "web", Address: addr("10.0.0.1"), Port: 8080, Patch: ServerPatch{Check: &cc}}
	}
	sec := Duration(time.Second)
	runRefusals(t, []refusal{
		{"no kind", chk(CheckConfig{}), "service.check.kind", ErrInvalid},
		{"unknown kind", chk(CheckConfig{Kind: "icmp"}), "service.check.kind", ErrInvalid},
		{"none with settings", chk(CheckConfig{Kind: CheckNone, Interval: sec}), "service.check", ErrInvalid},
		{"negative port", chk(CheckConfig{Kind: CheckTCP, Port: -1}), "service.check.port", ErrInvalid},
		{"port too big", chk(CheckConfig{Kind: CheckTCP, Port: 65536}), "service.check.port", ErrInvalid},
		{"negative interval", chk(CheckConfig{Kind: CheckTCP, Interval: -sec}), "service.check.interval", ErrInvalid},
		{"tiny interval", chk(CheckConfig{Kind: CheckTCP, Interval: 2}), "service.check.interval", ErrInvalid},
		{"huge interval", chk(CheckConfig{Kind: CheckTCP, Interval: Duration(2 * time.Hour)}), "service.check.interval", ErrInvalid},
		{"negative timeout", chk(CheckConfig{Kind: CheckTCP, Timeout: -1}), "service.check.timeout", ErrInvalid},
		{"timeout over interval", chk(CheckConfig{Kind: CheckTCP, Interval: sec, Timeout: 2 * sec}), "service.check.timeout", ErrInvalid},
		{"huge timeout", chk(CheckConfig{Kind: CheckTCP, Interval: Duration(time.Hour), Timeout: Duration(10 * time.Minute)}), "service.check.timeout", ErrInvalid},
		{"negative jitter", chk(CheckConfig{Kind: CheckTCP, Jitter: -1}), "service.check.jitter", ErrInvalid},
		{"jitter of an interval", chk(CheckConfig{Kind: CheckTCP, Interval: sec, Jitter: sec}), "service.check.jitter", ErrInvalid},
		{"negative rise", chk(CheckConfig{Kind: CheckTCP, Rise: -1}), "service.check.rise", ErrInvalid},
		{"rise too big", chk(CheckConfig{Kind: CheckTCP, Rise: 101}), "service.check.rise", ErrInvalid},
		{"fall too big", chk(CheckConfig{Kind: CheckTCP, Fall: 101}), "service.check.fall", ErrInvalid},
		{"path on tcp", chk(CheckConfig{Kind: CheckTCP, Path: "/"}), "service.check.path", ErrInvalid},
		{"body regex on dns", chk(CheckConfig{Kind: CheckDNS, DNSName: "a.b", BodyRegex: "x"}), "service.check.body_regex", ErrInvalid},
		{"tls on http", chk(CheckConfig{Kind: CheckHTTP, TLSVerify: true}), "service.check.tls_verify", ErrInvalid},
		{"server name on http", chk(CheckConfig{Kind: CheckHTTP, ServerName: "x"}), "service.check.server_name", ErrInvalid},
		{"dns name on tcp", chk(CheckConfig{Kind: CheckTCP, DNSName: "a"}), "service.check.dns_name", ErrInvalid},
		{"command on http", chk(CheckConfig{Kind: CheckHTTP, Command: "true"}), "service.check.command", ErrInvalid},
		{"relative path", chk(CheckConfig{Kind: CheckHTTP, Path: "health"}), "service.check.path", ErrInvalid},
		{"path with space", chk(CheckConfig{Kind: CheckHTTP, Path: "/a b"}), "service.check.path", ErrInvalid},
		{"long path", chk(CheckConfig{Kind: CheckHTTP, Path: "/" + strings.Repeat("a", MaxCheckText)}), "service.check.path", ErrInvalid},
		{"host with newline", chk(CheckConfig{Kind: CheckHTTP, Host: "a\nX-Evil: 1"}), "service.check.host", ErrInvalid},
		{"status not a number", chk(CheckConfig{Kind: CheckHTTP, ExpectStatus: "2xx"}), "service.check.expect_status", ErrInvalid},
		{"status out of range", chk(CheckConfig{Kind: CheckHTTP, ExpectStatus: "200,600"}), "service.check.expect_status", ErrInvalid},
		{"status range backwards", chk(CheckConfig{Kind: CheckHTTP, ExpectStatus: "299-200"}), "service.check.expect_status", ErrInvalid},
		{"status empty item", chk(CheckConfig{Kind: CheckHTTP, ExpectStatus: "200,"}), "service.check.expect_status", ErrInvalid},
		{"bad body regex", chk(CheckConfig{Kind: CheckHTTP, BodyRegex: "ok("}), "service.check.body_regex", ErrInvalid},
		{"server name with space", chk(CheckConfig{Kind: CheckHTTPS, ServerName: "a b"}), "service.check.server_name", ErrInvalid},
		{"dns without name", chk(CheckConfig{Kind: CheckDNS}), "service.check.dns_name", ErrInvalid},
		{"dns bad name", chk(CheckConfig{Kind: CheckDNS, DNSName: "a..b"}), "service.check.dns_name", ErrInvalid},
		{"dns long label", chk(CheckConfig{Kind: CheckDNS, DNSName: strings.Repeat("a", 64) + ".com"}), "service.check.dns_name", ErrInvalid},
		{"dns unknown type", chk(CheckConfig{Kind: CheckDNS, DNSName: "a.b", DNSType: "ANY"}), "service.check.dns_type", ErrInvalid},
		{"dns lower-case type", chk(CheckConfig{Kind: CheckDNS, DNSName: "a.b", DNSType: "aaaa"}), "service.check.dns_type", ErrInvalid},
		{"dns bad expect", chk(CheckConfig{Kind: CheckDNS, DNSName: "a.b", DNSExpect: "[x"}), "service.check.dns_expect", ErrInvalid},
		{"exec without command", chk(CheckConfig{Kind: CheckExec}), "service.check.command", ErrInvalid},
		{"exec blank command", chk(CheckConfig{Kind: CheckExec, Command: "  "}), "service.check.command", ErrInvalid},
		{"exec NUL", chk(CheckConfig{Kind: CheckExec, Command: "true\x00"}), "service.check.command", ErrInvalid},
		{"check and no check", UpdateService{Name: "web", Patch: ServicePatch{Check: &CheckConfig{Kind: CheckTCP}, NoCheck: true}}, "patch.no_check", ErrInvalid},
		{"server override refused", srvChk(CheckConfig{Kind: CheckHTTPS, TLSVerify: true, Rise: 1000}), "server.check.rise", ErrInvalid},
		{"server check and no check", UpdateServer{Service: "web", Address: addr("10.0.0.1"), Port: 8080,
			Patch: ServerPatch{Check: &CheckConfig{Kind: CheckTCP}, NoCheck: true}}, "patch.no_check", ErrInvalid},
		{"down action", UpdateService{Name: "web", Patch: ServicePatch{DownAction: ptr(DownAction("drop"))}}, "service.down_action", ErrInvalid},
		{"negative quorum", UpdateService{Name: "web", Patch: ServicePatch{Quorum: ptr(-1)}}, "service.quorum", ErrInvalid},
		{"negative hysteresis", UpdateService{Name: "web", Patch: ServicePatch{Quorum: ptr(3), QuorumHysteresis: ptr(-1)}}, "service.quorum_hysteresis", ErrInvalid},
		{"hysteresis without quorum", UpdateService{Name: "web", Patch: ServicePatch{QuorumHysteresis: ptr(1)}}, "service.quorum_hysteresis", ErrInvalid},
		{"hysteresis of the quorum", UpdateService{Name: "web", Patch: ServicePatch{Quorum: ptr(3), QuorumHysteresis: ptr(3)}}, "service.quorum_hysteresis", ErrInvalid},
		{"hysteresis with sorry only", UpdateService{Name: "web", Patch: ServicePatch{QuorumHysteresis: ptr(1),
			Sorry: &SorryServer{Address: addr("10.0.0.99"), Port: 80}}}, "service.quorum_hysteresis", ErrInvalid},
		{"sorry and no sorry", UpdateService{Name: "web", Patch: ServicePatch{Sorry: &SorryServer{Address: addr("10.0.0.99"), Port: 80}, NoSorry: true}},
			"patch.no_sorry", ErrInvalid},
		{"sorry without address", UpdateService{Name: "web", Patch: ServicePatch{Sorry: &SorryServer{Port: 80}}}, "service.sorry.address", ErrInvalid},
		{"sorry bad port", UpdateService{Name: "web", Patch: ServicePatch{Sorry: &SorryServer{Address: addr("10.0.0.99")}}}, "service.sorry.port", ErrInvalid},
		{"sorry family", UpdateService{Name: "web", Patch: ServicePatch{Sorry: &SorryServer{Address: addr("2001:db8::99"), Port: 80}}},
			"service.sorry.address", ErrInvalid},
		{"sorry dr remaps", UpdateService{Name: "dns", Patch: ServicePatch{Sorry: &SorryServer{Address: addr("10.0.0.99"), Port: 5353}}},
			"service.sorry.port", ErrInvalid},
		{"sorry family with tun", UpdateService{Name: "web6", Patch: ServicePatch{Sorry: &SorryServer{Address: addr("10.0.0.99"), Port: 443}}},
			"service.sorry.address", ErrInvalid},
		{"sorry unknown method", UpdateService{Name: "web", Patch: ServicePatch{Sorry: &SorryServer{Address: addr("10.0.0.99"), Port: 80, Method: "udp"}}},
			"service.sorry.method", ErrInvalid},
		{"sorry is a real server", UpdateService{Name: "web", Patch: ServicePatch{Sorry: &SorryServer{Address: addr("10.0.0.1"), Port: 8080}}},
			"service.sorry", ErrConflict},
		{"new service sets quorum_lost", AddService{Service: Service{Name: "x", VIP: "spare", Protocol: TCP, Port: 80, Scheduler: "rr",
			Method: NAT, QuorumLost: true}}, "service.quorum_lost", ErrInvalid},
		{"new service sets health", AddService{Service: Service{Name: "x", VIP: "spare", Protocol: TCP, Port: 80, Scheduler: "rr",
			Method: NAT, Check: &CheckConfig{Kind: CheckTCP}, Servers: servers(RealServer{Address: addr("10.0.0.1"), Port: 80,
				Health: &Health{State: HealthDown}})}}, "service.servers[10.0.0.1:80].health", ErrInvalid},
		{"new server sets health", AddServer{Service: "web", Server: RealServer{Address: addr("10.0.0.5"), Port: 80,
			Health: &Health{State: HealthUp}}}, "server.health", ErrInvalid},
		{"new service bad check", AddService{Service: Service{Name: "x", VIP: "spare", Protocol: TCP, Port: 80, Scheduler: "rr",
			Method: NAT, Check: &CheckConfig{Kind: CheckExec}}}, "service.check.command", ErrInvalid},
		{"new server bad check", AddServer{Service: "web", Server: RealServer{Address: addr("10.0.0.5"), Port: 80,
			Check: &CheckConfig{Kind: CheckHTTP, BodyRegex: "("}}}, "server.check.body_regex", ErrInvalid},
	})
}

func TestFWMarkCheckNeedsAPort(t *testing.T) {
	h := fixture(t)
	h.mustApply(AddServer{Service: "fw", Server: RealServer{Address: addr("10.0.0.7"), Weight: 1}})
	h.refuse(UpdateService{Name: "fw", Patch: ServicePatch{Check: &CheckConfig{Kind: CheckTCP}}}, "service.check.port", ErrInvalid)
	h.refuse(AddServer{Service: "fw", Server: RealServer{Address: addr("10.0.0.8"), Check: &CheckConfig{Kind: CheckHTTP}}},
		"server.check.port", ErrInvalid)
	// An exec check needs no port, and a check with its own port is fine.
	h.mustApply(UpdateService{Name: "fw", Patch: ServicePatch{Check: &CheckConfig{Kind: CheckExec, Command: "true"}}})
	h.mustApply(UpdateService{Name: "fw", Patch: ServicePatch{Check: &CheckConfig{Kind: CheckTCP, Port: 22}}})
}

func TestServerCannotBeTheSorryServer(t *testing.T) {
	checkedFixture(t).refuse(AddServer{Service: "web", Server: RealServer{Address: addr("10.0.0.99"), Port: 8080}}, "server", ErrConflict)
}

func TestSetHealthTransitionsAndQuorum(t *testing.T) {
	h := checkedFixture(t)
	if svc := h.service("web"); !svc.QuorumUp() || HealthyWeight(svc) != 8 {
		t.Fatalf("start: quorum up %t, healthy weight %d; want true, 8", svc.QuorumUp(), HealthyWeight(svc))
	}
	// 10.0.0.2 (weight 3) down: 5 is inside the band 5..6, quorum stays.
	h.mustApply(health(upd("web", "10.0.0.2:8080", HealthDown)))
	downIdx := h.idx
	srv := h.server("web", "10.0.0.2:8080")
	if srv.Health == nil || srv.Health.State != HealthDown || srv.Health.Index != downIdx || srv.Health.Views["d3"] != HealthUnknown {
		t.Fatalf("after down: %+v", srv.Health)
	}
	if svc := h.service("web"); !svc.QuorumUp() || HealthyWeight(svc) != 5 {
		t.Errorf("weight 5 in the band: quorum up %t, weight %d", svc.QuorumUp(), HealthyWeight(svc))
	}
	// The same state again refreshes the views and keeps the index.
	h.mustApply(health(HealthUpdate{Service: "web", Server: "10.0.0.2:8080", State: HealthDown, Views: map[string]string{"d1": HealthDown}}))
	srv = h.server("web", "10.0.0.2:8080")
	if srv.Health.Index != downIdx || !maps.Equal(srv.Health.Views, map[string]string{"d1": HealthDown}) {
		t.Errorf("repeat: %+v, want index %d and the new views", srv.Health, downIdx)
	}
	// Both down: 0 < 5, quorum lost. Unknown servers and services, and a
	// server without a check, are skipped without refusing the batch.
	h.mustApply(health(upd("web", "10.0.0.1:8080", HealthDown), upd("web", "10.9.9.9:80", HealthDown),
		upd("gone", "10.0.0.1:8080", HealthDown), upd("dns", "10.0.0.2:53", HealthDown)))
	if svc := h.service("web"); svc.QuorumUp() {
		t.Error("both down: quorum still up")
	}
	if _, ok := h.service("web").Servers["10.9.9.9:80"]; ok {
		t.Error("an update created a server")
	}
	// 10.0.0.1 (5) up: 5 < 7, still lost (hysteresis).
	h.mustApply(health(upd("web", "10.0.0.1:8080", HealthUp)))
	if svc := h.service("web"); svc.QuorumUp() {
		t.Error("weight 5 after loss: quorum regained below quorum+hysteresis")
	}
	// Both up: 8 >= 7, regained.
	h.mustApply(health(upd("web", "10.0.0.2:8080", HealthUp)))
	if svc := h.service("web"); !svc.QuorumUp() {
		t.Error("weight 8: quorum not regained")
	}
	// Admin state counts too: draining 10.0.0.1 leaves 3 < 5.
	h.mustApply(UpdateServer{Service: "web", Address: addr("10.0.0.1"), Port: 8080, Patch: ServerPatch{Admin: ptr(Drained)}})
	if svc := h.service("web"); svc.QuorumUp() || HealthyWeight(svc) != 3 {
		t.Errorf("drained: quorum up %t, weight %d", svc.QuorumUp(), HealthyWeight(svc))
	}
	// Lowering the quorum regains it at once.
	h.mustApply(UpdateService{Name: "web", Patch: ServicePatch{Quorum: ptr(2)}})
	if svc := h.service("web"); !svc.QuorumUp() {
		t.Error("quorum 2 with weight 3: not regained")
	}
	// Deleting servers loses it.
	h.mustApply(DeleteServer{Service: "web", Address: addr("10.0.0.2"), Port: 8080})
	if svc := h.service("web"); svc.QuorumUp() {
		t.Error("no enabled server left: quorum still up")
	}
}

func TestQuorumRule(t *testing.T) {
	for _, tc := range []struct {
		quorum, hyst, weight int
		sorry, was, wantLost bool
	}{
		{0, 0, 0, false, false, false}, // no quorum
		{0, 0, 0, false, true, false},
		{0, 0, 0, true, false, true}, // sorry only: quorum 1
		{0, 0, 1, true, true, false},
		{10, 2, 7, false, false, true},
		{10, 2, 8, false, false, false},
		{10, 2, 11, false, true, true},
		{10, 2, 12, false, true, false},
		{10, 0, 9, false, false, true},
		{10, 0, 10, false, true, false},
	} {
		svc := &Service{Quorum: tc.quorum, QuorumHysteresis: tc.hyst,
			Servers: servers(RealServer{Address: addr("10.0.0.1"), Port: 80, Weight: tc.weight, Admin: Enabled})}
		if tc.sorry {
			svc.Sorry = &SorryServer{Address: addr("10.0.0.2"), Port: 80}
		}
		if got := nextQuorumLost(svc, tc.was); got != tc.wantLost {
			t.Errorf("%+v: lost = %t", tc, got)
		}
	}
}

func TestUncheckedServerLosesHealth(t *testing.T) {
	h := checkedFixture(t)
	h.mustApply(health(upd("web", "10.0.0.1:8080", HealthDown), upd("web", "10.0.0.2:8080", HealthDown)))
	// A different check keeps the agreed state until a new agreement.
	h.mustApply(UpdateService{Name: "web", Patch: ServicePatch{Check: &CheckConfig{Kind: CheckTCP}}})
	if srv := h.server("web", "10.0.0.1:8080"); srv.Health == nil || srv.Health.State != HealthDown {
		t.Errorf("changing the check dropped the health: %+v", srv.Health)
	}
	// Kind none on one server: that server is up again.
	h.mustApply(UpdateServer{Service: "web", Address: addr("10.0.0.1"), Port: 8080, Patch: ServerPatch{Check: &CheckConfig{Kind: CheckNone}}})
	if srv := h.server("web", "10.0.0.1:8080"); srv.Health != nil {
		t.Errorf("a server with check none keeps health %+v", srv.Health)
	}
	if h.service("web").QuorumUp() {
		t.Error("weight 5 after loss must not regain quorum 6 with hysteresis 1")
	}
	// An update for it now is skipped.
	h.mustApply(health(upd("web", "10.0.0.1:8080", HealthDown)))
	if srv := h.server("web", "10.0.0.1:8080"); srv.Health != nil {
		t.Errorf("an unchecked server got health %+v", srv.Health)
	}
	// Removing the service's check clears the rest, and the service,
	// with all weight healthy, regains quorum.
	h.mustApply(UpdateService{Name: "web", Patch: ServicePatch{NoCheck: true}})
	svc := h.service("web")
	for key, srv := range svc.Servers {
		if srv.Health != nil {
			t.Errorf("%s keeps health %+v without a check", key, srv.Health)
		}
	}
	if !svc.QuorumUp() {
		t.Error("all servers up again: quorum not regained")
	}
}

func TestSetHealthRefusals(t *testing.T) {
	ok := upd("web", "10.0.0.1:8080", HealthDown)
	with := func(f func(u *HealthUpdate)) SetHealth {
		u := ok
		u.Views = maps.Clone(ok.Views)
		f(&u)
		return health(u)
	}
	manyViews := map[string]string{}
	for i := range MaxHealthViews + 1 {
		manyViews[strings.Repeat("d", i+1)] = HealthUp
	}
	runRefusals(t, []refusal{
		{"no updates", SetHealth{}, "updates", ErrInvalid},
		{"bad service name", with(func(u *HealthUpdate) { u.Service = "a b" }), "updates[0].service", ErrInvalid},
		{"bad server key", with(func(u *HealthUpdate) { u.Server = "10.0.0.1" }), "updates[0].server", ErrInvalid},
		{"non-canonical server key", with(func(u *HealthUpdate) { u.Server = "[2001:DB8::1]:80" }), "updates[0].server", ErrInvalid},
		{"unknown state", with(func(u *HealthUpdate) { u.State = HealthUnknown }), "updates[0].state", ErrInvalid},
		{"bad view", with(func(u *HealthUpdate) { u.Views["d1"] = "maybe" }), "updates[0].views[d1]", ErrInvalid},
		{"empty director id", with(func(u *HealthUpdate) { u.Views[""] = HealthUp }), "updates[0].views", ErrInvalid},
		{"too many views", with(func(u *HealthUpdate) { u.Views = manyViews }), "updates[0].views", ErrInvalid},
		{"duplicate", health(ok, upd("dns", "10.0.0.1:53", HealthUp), ok), "updates[2]", ErrInvalid},
	})
}

func TestHealthChangesAreScoped(t *testing.T) {
	h := checkedFixture(t)
	since := h.idx
	h.mustApply(health(upd("web", "10.0.0.1:8080", HealthDown), upd("gone", "10.0.0.1:8080", HealthDown)))
	got, full, _ := changedSince(h.f, since)
	if full || !slices.Equal(got, []string{"gone", "web"}) {
		t.Errorf("health.set changed %v full=%t, want [gone web]", got, full)
	}
}

func TestRestoreChecksHealth(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		edit      func(st *State)
	}{
		{"health without a check", `services[fwv].servers[[2001:db8:1::3]:8443].health: the server is not checked`, func(st *State) {
			st.Services["fwv"].Servers["[2001:db8:1::3]:8443"].Health = &Health{State: HealthUp}
		}},
		{"unknown state", `services[web].servers[10.0.0.1:8080].health.state`, func(st *State) {
			st.Services["web"].Servers["10.0.0.1:8080"].Health.State = HealthUnknown
		}},
		{"bad view", `services[web].servers[10.0.0.1:8080].health.views[d1]`, func(st *State) {
			st.Services["web"].Servers["10.0.0.1:8080"].Health.Views["d1"] = "x"
		}},
		{"bad check", `services[dns].check.timeout`, func(st *State) {
			st.Services["dns"].Check.Timeout = Duration(time.Hour)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := richState(t)
			tc.edit(st)
			err := New().Restore(bytes.NewReader(mustSnapshot(t, st)))
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Restore: %v, want %q", err, tc.msg)
			}
		})
	}
	// QuorumLost inside the band is history, and a snapshot keeps it
	// either way; outside the band it is recomputed.
	for _, was := range []bool{false, true} {
		st := richState(t)
		web := st.Services["web"]
		delete(web.Servers, "[2001:db8:1::1]:80")
		web.Servers["10.0.0.1:8080"].Health = nil // weight 10: inside 8..11
		web.QuorumLost = was
		f := New()
		if err := f.Restore(bytes.NewReader(mustSnapshot(t, st))); err != nil {
			t.Fatalf("%v: %v", was, err)
		}
		if got := f.Clone().Services["web"].QuorumLost; got != was {
			t.Errorf("restored quorum_lost %t inside the band, want %t", got, was)
		}
	}
}

// TestHealthCommandsDoNotAlias changes commands after Check and after
// their change was committed: neither the caller's command nor the state
// may see the other's changes.
func TestHealthCommandsDoNotAlias(t *testing.T) {
	h := checkedFixture(t)
	cc := &CheckConfig{Kind: CheckHTTP}
	sorry := &SorryServer{Address: addr("10.0.0.98"), Port: 8080}
	upd := &UpdateService{Name: "web", Patch: ServicePatch{Check: cc, Sorry: sorry}}
	if err := h.f.Check(upd); err != nil {
		t.Fatal(err)
	}
	if *cc != (CheckConfig{Kind: CheckHTTP}) || sorry.Method != "" {
		t.Errorf("Check filled in the caller's command: %+v %+v", *cc, *sorry)
	}

	s := h.f.s
	commit, err := s.prepare(*upd, 100)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	cc.Path, sorry.Port = "/x", 1
	srvCheck := &CheckConfig{Kind: CheckTCP}
	add := AddServer{Service: "web", Server: RealServer{Address: addr("10.0.0.5"), Port: 8080, Weight: 1, Check: srvCheck}}
	if commit, err = s.prepare(add, 101); err != nil {
		t.Fatal(err)
	}
	commit()
	srvCheck.Port = 9
	views := map[string]string{"d1": HealthDown}
	sh := SetHealth{Updates: []HealthUpdate{{Service: "web", Server: "10.0.0.5:8080", State: HealthDown, Views: views}}}
	if commit, err = s.prepare(sh, 102); err != nil {
		t.Fatal(err)
	}
	commit()
	views["d1"] = HealthUp
	web := s.state.Services["web"]
	if web.Check.Path != "/" || web.Sorry.Port != 8080 {
		t.Errorf("state aliases an update's check or sorry server: %+v %+v", *web.Check, *web.Sorry)
	}
	srv := web.Servers["10.0.0.5:8080"]
	if srv.Check.Port != 0 || srv.Health.Views["d1"] != HealthDown || srv.Health.Index != 102 {
		t.Errorf("state aliases a command: check %+v health %+v", *srv.Check, *srv.Health)
	}
}
