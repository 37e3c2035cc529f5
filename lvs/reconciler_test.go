package lvs

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"

	"github.com/directorate/directorate/fsm"
)

// webState is two services with three servers each, and a drained and a
// disabled server.
func webState() *fsm.State {
	st := newState()
	web := tcpService("web", "v4", 80)
	addServer(web, "10.1.0.1", 8080, 10)
	addServer(web, "10.1.0.2", 8080, 20)
	addServer(web, "10.1.0.3", 8080, 30).Admin = fsm.Drained
	addServer(web, "10.1.0.4", 8080, 30).Admin = fsm.Disabled
	st.Services["web"] = web
	dns := tcpService("dns", "v6", 53)
	dns.Protocol = fsm.UDP
	dns.Scheduler = "rr"
	addServer(dns, "2001:db8:1::1", 53, 1)
	addServer(dns, "2001:db8:1::2", 53, 1)
	st.Services["dns"] = dns
	return st
}

var webKey = ServiceKey{Family: ipvs.INET, Protocol: ipvs.TCP, Addr: netip.MustParseAddr("10.0.0.1"), Port: 80}

type rig struct {
	t     *testing.T
	fake  *Fake
	clock *fakeClock
	r     *Reconciler
}

func newRig(t *testing.T, opts Options) *rig {
	rg := &rig{t: t, fake: NewFake(), clock: newFakeClock()}
	opts.Now = rg.clock.Now
	if opts.ResyncInterval == 0 {
		opts.ResyncInterval = time.Minute
	}
	if opts.RemoveGrace == 0 {
		// Most tests check the plan itself; retire_test.go covers
		// the quiescing of removed destinations.
		opts.RemoveGrace = -1
	}
	rg.r = NewReconciler(rg.fake, testLogger(t), opts)
	return rg
}

// reconcile runs one reconcile, expecting success, and returns the ops
// it sent.
func (rg *rig) reconcile(st *fsm.State) ([]Op, Result) {
	rg.t.Helper()
	rg.fake.Reset()
	res, err := rg.r.Reconcile(rg.t.Context(), mustDesired(rg.t, st))
	if err != nil {
		rg.t.Fatalf("Reconcile: %v", err)
	}
	ops := rg.fake.Ops()
	if res.Ops.Total() != len(ops) {
		rg.t.Fatalf("Result counts %d ops, backend saw %d", res.Ops.Total(), len(ops))
	}
	return ops, res
}

func opStrings(ops []Op) []string {
	out := make([]string, len(ops))
	for i, op := range ops {
		out[i] = op.String()
	}
	return out
}

func requireOps(t *testing.T, got []Op, want ...string) {
	t.Helper()
	if strings.Join(opStrings(got), "\n") != strings.Join(want, "\n") {
		t.Fatalf("ops:\n got %q\nwant %q", opStrings(got), want)
	}
}

func TestConvergeFromEmpty(t *testing.T) {
	rg := newRig(t, Options{})
	st := webState()
	ops, res := rg.reconcile(st)
	want := OpCounts{AddService: 2, AddDest: 5}
	if res.Ops != want || !res.Resynced || res.Failed.Total() != 0 || res.Index != 1 {
		t.Fatalf("result = %+v, want ops %+v, resynced", res, want)
	}
	// Services before their destinations.
	for i, op := range ops {
		if op.Kind == AddService && i >= 2 {
			t.Errorf("add service at position %d, after destinations: %q", i, opStrings(ops))
		}
	}
	requireInSync(t, mustDesired(t, st), rg.fake)
	if got := rg.fake.Table()[webKey].Dest(netip.MustParseAddrPort("10.1.0.3:8080")); got == nil || got.Weight != 0 {
		t.Errorf("drained server = %+v, want weight 0", got)
	}
}

func TestNoOpReconcileMakesNoCalls(t *testing.T) {
	rg := newRig(t, Options{ResyncInterval: -1}) // read every time
	st := webState()
	rg.reconcile(st)
	ops, res := rg.reconcile(st)
	if len(ops) != 0 || res.Ops.Total() != 0 {
		t.Fatalf("no-op reconcile sent %q", opStrings(ops))
	}
	if list, apply := rg.fake.Calls(); list != 1 || apply != 0 {
		t.Fatalf("no-op reconcile made %d List and %d Apply calls, want 1 and 0", list, apply)
	}
}

func TestWeightChangeIsOneSetDest(t *testing.T) {
	rg := newRig(t, Options{})
	st := webState()
	rg.reconcile(st)
	st.Services["web"].Servers["10.1.0.2:8080"].Weight = 99
	ops, _ := rg.reconcile(st)
	requireOps(t, ops, "update destination 10.1.0.2:8080 of TCP 10.0.0.1:80")
	if ops[0].Dest.Weight != 99 || ops[0].Dest.FwdMethod != ipvs.Masquerade {
		t.Errorf("op carries %+v", ops[0].Dest)
	}
	if got := rg.fake.Table()[webKey].Dest(netip.MustParseAddrPort("10.1.0.2:8080")); got.Weight != 99 {
		t.Errorf("kernel weight = %d", got.Weight)
	}
}

func TestServiceAttributeChangesAreOneSetService(t *testing.T) {
	rg := newRig(t, Options{})
	st := webState()
	rg.reconcile(st)

	st.Services["web"].Scheduler = "sh"
	st.Services["web"].SchedFlags = fsm.SchedFlags{SHPort: true}
	ops, _ := rg.reconcile(st)
	requireOps(t, ops, "update service TCP 10.0.0.1:80")
	if ops[0].Service.Scheduler != "sh" || ops[0].Service.Flags != ipvs.ServiceSchedulerOpt2 {
		t.Errorf("op carries %+v", ops[0].Service)
	}

	st.Services["web"].Persistence = &fsm.Persistence{Timeout: 120, PrefixLen: 16}
	ops, _ = rg.reconcile(st)
	requireOps(t, ops, "update service TCP 10.0.0.1:80")

	st.Services["web"].Persistence.PrefixLen = 24
	ops, _ = rg.reconcile(st)
	requireOps(t, ops, "update service TCP 10.0.0.1:80")
	if ops[0].Service.Netmask.String() != "255.255.255.0" || ops[0].Service.Timeout != 120 {
		t.Errorf("op carries %+v", ops[0].Service)
	}

	// Changing the method of every server is a SET_DEST each, in place.
	st.Services["web"].Method = fsm.DR
	for _, rs := range st.Services["web"].Servers {
		rs.Port = 80
	}
	ops, _ = rg.reconcile(st)
	if n := len(ops); n != 6 { // three servers moved port: 3 adds + 3 deletes
		t.Fatalf("ops = %q", opStrings(ops))
	}
	requireInSync(t, mustDesired(t, st), rg.fake)
}

func TestDriftRepairAndCacheTrust(t *testing.T) {
	rg := newRig(t, Options{ResyncInterval: time.Minute})
	st := webState()
	rg.reconcile(st)

	rg.fake.Flush() // someone ran ipvsadm -C
	ops, res := rg.reconcile(st)
	if len(ops) != 0 || res.Resynced {
		t.Fatalf("within the resync interval the cache should be trusted; got ops %q resynced %v", opStrings(ops), res.Resynced)
	}
	if list, _ := rg.fake.Calls(); list != 0 {
		t.Fatalf("List called %d times within the resync interval", list)
	}

	rg.clock.Advance(time.Minute)
	ops, res = rg.reconcile(st)
	if !res.Resynced || res.Ops != (OpCounts{AddService: 2, AddDest: 5}) {
		t.Fatalf("resync: result %+v ops %q", res, opStrings(ops))
	}
	requireInSync(t, mustDesired(t, st), rg.fake)

	// Drift inside a service: a weight changed and a destination removed.
	rg.fake.Mutate(func(tab Table) {
		s := tab[webKey]
		s.Dests[0].Weight = 1
		s.Dests = s.Dests[1:]
	})
	rg.r.Invalidate()
	ops, _ = rg.reconcile(st)
	requireOps(t, ops, "add destination 10.1.0.1:8080 to TCP 10.0.0.1:80")
	requireInSync(t, mustDesired(t, st), rg.fake)
}

func TestForeignServicesUntouched(t *testing.T) {
	rg := newRig(t, Options{ResyncInterval: -1})
	foreign := &Service{Service: ipvs.Service{
		Family: ipvs.INET, Protocol: ipvs.TCP, Address: netip.MustParseAddr("192.0.2.1"), Port: 80,
		Scheduler: "rr", Netmask: fullMask(ipvs.INET),
	}, Dests: []Destination{{Destination: ipvs.Destination{Address: netip.MustParseAddr("192.0.2.10"), Port: 80, Family: ipvs.INET, Weight: 1}}}}
	foreignMark := &Service{Service: ipvs.Service{Family: ipvs.INET, FWMark: 99, Scheduler: "rr", Netmask: fullMask(ipvs.INET)}}
	rg.fake.Put(foreign)
	rg.fake.Put(foreignMark)

	st := webState()
	rg.reconcile(st)
	delete(st.Services, "web")
	delete(st.Services, "dns")
	ops, _ := rg.reconcile(st)
	if len(ops) != 2 {
		t.Fatalf("ops = %q, want the two services deleted", opStrings(ops))
	}
	tab := rg.fake.Table()
	if len(tab) != 2 || tab[foreign.Key()] == nil || tab[foreignMark.Key()] == nil || len(tab[foreign.Key()].Dests) != 1 {
		t.Fatalf("foreign services were touched: %v", tab.Keys())
	}
	rep := Diff(mustDesired(t, st), tab, nil)
	if !rep.InSync || rep.Services[0].State != Foreign || rep.Services[1].State != Foreign {
		t.Fatalf("report = %+v", rep)
	}
}

func TestDeletedServiceRemovedWithOneOp(t *testing.T) {
	rg := newRig(t, Options{})
	st := webState()
	rg.reconcile(st)
	delete(st.Services, "web")
	ops, res := rg.reconcile(st)
	// The kernel removes a service's destinations with it.
	requireOps(t, ops, "delete service TCP 10.0.0.1:80")
	if res.Ops.DeleteService != 1 {
		t.Errorf("result %+v", res)
	}
	if rg.fake.Table()[webKey] != nil {
		t.Fatal("service still in the kernel")
	}
}

func TestDestinationOrder(t *testing.T) {
	rg := newRig(t, Options{})
	st := webState()
	rg.reconcile(st)

	web := st.Services["web"]
	delete(web.Servers, "10.1.0.1:8080")
	delete(web.Servers, "10.1.0.2:8080")
	addServer(web, "10.1.0.9", 8080, 5)
	web.Servers["10.1.0.3:8080"].Admin = fsm.Enabled
	addServer(st.Services["dns"], "2001:db8:1::3", 53, 1)
	st.Services["new"] = tcpService("new", "v4", 8443)
	addServer(st.Services["new"], "10.1.0.7", 8443, 1)

	ops, _ := rg.reconcile(st)
	// New services first, then new and changed destinations, then
	// removed ones, so a service never runs out of real servers.
	requireOps(t, ops,
		"add service TCP 10.0.0.1:8443",
		"add destination 10.1.0.9:8080 to TCP 10.0.0.1:80",
		"add destination 10.1.0.7:8443 to TCP 10.0.0.1:8443",
		"add destination [2001:db8:1::3]:53 to UDP [2001:db8::1]:53",
		"update destination 10.1.0.3:8080 of TCP 10.0.0.1:80",
		"delete destination 10.1.0.1:8080 from TCP 10.0.0.1:80",
		"delete destination 10.1.0.2:8080 from TCP 10.0.0.1:80",
	)
	requireInSync(t, mustDesired(t, st), rg.fake)
}

func TestFailedOpsAreReportedAndTheRestApplied(t *testing.T) {
	rg := newRig(t, Options{ResyncInterval: time.Hour})
	bad := netip.MustParseAddr("10.1.0.2")
	rg.fake.FailOps(func(op Op) error {
		if op.Kind == AddDest && op.Dest.Address == bad {
			return syscall.EINVAL
		}
		return nil
	})
	st := webState()
	res, err := rg.r.Reconcile(t.Context(), mustDesired(t, st))
	if err == nil {
		t.Fatal("no error")
	}
	if !errors.Is(err, syscall.EINVAL) {
		t.Errorf("errors.Is(EINVAL) is false for %v", err)
	}
	if !strings.Contains(err.Error(), "add destination 10.1.0.2:8080 to TCP 10.0.0.1:80: invalid argument") ||
		!strings.Contains(err.Error(), "cannot route to the real server") {
		t.Errorf("error = %v", err)
	}
	oes := OpErrors(err)
	if len(oes) != 1 || oes[0].Op.Dest.Address != bad {
		t.Fatalf("OpErrors = %v", oes)
	}
	if res.Failed != (OpCounts{AddDest: 1}) || res.Ops.Total() != 7 {
		t.Errorf("result = %+v", res)
	}
	tab := rg.fake.Table()
	if s, d := tab.Count(); s != 2 || d != 4 {
		t.Errorf("table has %d services, %d dests; want every other op applied (2, 4)", s, d)
	}

	// The failure forces a full read next time, well within the resync
	// interval, and only the failed op is retried.
	rg.fake.FailOps(nil)
	ops, res := rg.reconcile(st)
	if !res.Resynced {
		t.Error("no re-read after a failed op")
	}
	requireOps(t, ops, "add destination 10.1.0.2:8080 to TCP 10.0.0.1:80")
}

func TestListFailure(t *testing.T) {
	rg := newRig(t, Options{})
	rg.fake.FailList(syscall.ENOBUFS)
	_, err := rg.r.Reconcile(t.Context(), mustDesired(t, webState()))
	if !errors.Is(err, syscall.ENOBUFS) || !strings.Contains(err.Error(), "read the IPVS table") {
		t.Fatalf("err = %v", err)
	}
	if _, apply := rg.fake.Calls(); apply != 0 {
		t.Fatal("Apply called without a table")
	}
}

func TestManagedRule(t *testing.T) {
	svcOn := func(addr string, port uint16) *Service {
		return &Service{Service: ipvs.Service{Family: ipvs.INET, Protocol: ipvs.TCP, Address: netip.MustParseAddr(addr), Port: port, Scheduler: "rr", Netmask: fullMask(ipvs.INET)}}
	}
	t.Run("stale service on a VIP address after a restart", func(t *testing.T) {
		rg := newRig(t, Options{})
		rg.fake.Put(svcOn("10.0.0.1", 8080)) // left over, no longer configured
		rg.fake.Put(svcOn("192.0.2.1", 80))  // foreign
		ops, _ := rg.reconcile(webState())
		if rg.fake.Table()[svcOn("10.0.0.1", 8080).Key()] != nil {
			t.Fatalf("stale service on a VIP kept; ops %q", opStrings(ops))
		}
		if rg.fake.Table()[svcOn("192.0.2.1", 80).Key()] == nil {
			t.Fatal("foreign service removed")
		}
	})
	t.Run("service and VIP deleted: the record remembers", func(t *testing.T) {
		rg := newRig(t, Options{})
		st := webState()
		rg.reconcile(st)
		delete(st.Services, "web")
		delete(st.VIPs, "v4")
		ops, _ := rg.reconcile(st)
		requireOps(t, ops, "delete service TCP 10.0.0.1:80")
	})
	t.Run("service and VIP deleted while down: foreign unless owned", func(t *testing.T) {
		st := webState()
		delete(st.Services, "web")
		delete(st.VIPs, "v4")
		for _, owned := range []bool{false, true} {
			rg := newRig(t, Options{})
			if owned {
				rg.r = NewReconciler(rg.fake, testLogger(t), Options{Now: rg.clock.Now, RemoveGrace: -1, OwnedPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
			}
			rg.fake.Put(svcOn("10.0.0.1", 80))
			rg.reconcile(st)
			if kept := rg.fake.Table()[webKey] != nil; kept == owned {
				t.Errorf("owned prefix %v: service kept = %v", owned, kept)
			}
		}
	})
	t.Run("owned firewall marks", func(t *testing.T) {
		rg := newRig(t, Options{OwnedFWMarks: []FWMarkRange{{First: 100, Last: 199}}})
		for _, m := range []uint32{99, 100, 199, 200} {
			rg.fake.Put(&Service{Service: ipvs.Service{Family: ipvs.INET, FWMark: m, Scheduler: "rr", Netmask: fullMask(ipvs.INET)}})
		}
		rg.reconcile(newState())
		var left []uint32
		for _, k := range rg.fake.Table().Keys() {
			left = append(left, k.FWMark)
		}
		if len(left) != 2 || left[0] != 99 || left[1] != 200 {
			t.Errorf("marks left = %v, want [99 200]", left)
		}
	})
	t.Run("held services are left alone", func(t *testing.T) {
		rg := newRig(t, Options{})
		st := webState()
		rg.reconcile(st)
		st.Services["web"].SchedFlags = fsm.SchedFlags{MHPort: true} // not expressible with wlc
		st.Services["web"].Servers["10.1.0.1:8080"].Weight = 1
		rg.fake.Reset()
		d, err := DesiredFromState(st)
		if err == nil {
			t.Fatal("no conversion error")
		}
		if _, err := rg.r.Reconcile(t.Context(), d); err != nil {
			t.Fatal(err)
		}
		if ops := rg.fake.Ops(); len(ops) != 0 {
			t.Fatalf("held service touched: %q", opStrings(ops))
		}
		rep := Diff(d, rg.fake.Table(), nil)
		if rep.InSync || rep.Services[0].State != Held || !strings.Contains(rep.Services[0].Reason, "mh_fallback and mh_port") {
			t.Errorf("report = %+v", rep.Services[0])
		}
	})
}

func TestReport(t *testing.T) {
	rg := newRig(t, Options{})
	st := webState()
	rg.reconcile(st)
	rg.fake.Mutate(func(tab Table) {
		s := tab[webKey]
		s.Scheduler = "rr"
		s.Dests[0].Weight = 77
		s.Dests = append(s.Dests, Destination{Destination: ipvs.Destination{Address: netip.MustParseAddr("10.1.0.99"), Port: 8080, Family: ipvs.INET}})
		s.SortDests()
		delete(tab, ServiceKey{Family: ipvs.INET6, Protocol: ipvs.UDP, Addr: netip.MustParseAddr("2001:db8::1"), Port: 53})
	})
	rg.fake.Put(&Service{Service: ipvs.Service{Family: ipvs.INET, Protocol: ipvs.TCP, Address: netip.MustParseAddr("10.0.0.1"), Port: 9, Scheduler: "rr"}})
	rep, err := rg.r.Report(t.Context(), mustDesired(t, st))
	if err != nil {
		t.Fatal(err)
	}
	if rep.InSync {
		t.Fatal("report in sync")
	}
	got := map[string]DiffState{}
	for _, s := range rep.Services {
		got[s.Key.String()] = s.State
		for _, d := range s.Dests {
			got[s.Key.String()+" "+d.Addr.String()] = d.State
		}
	}
	want := map[string]DiffState{
		"TCP 10.0.0.1:9":                          Extra,
		"TCP 10.0.0.1:80":                         Changed,
		"TCP 10.0.0.1:80 10.1.0.1:8080":           Changed,
		"TCP 10.0.0.1:80 10.1.0.2:8080":           InSync,
		"TCP 10.0.0.1:80 10.1.0.3:8080":           InSync,
		"TCP 10.0.0.1:80 10.1.0.99:8080":          Extra,
		"UDP [2001:db8::1]:53":                    Missing,
		"UDP [2001:db8::1]:53 [2001:db8:1::1]:53": Missing,
		"UDP [2001:db8::1]:53 [2001:db8:1::2]:53": Missing,
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s: state %q (present %v), want %q", k, g, ok, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("report has %d entries, want %d: %v", len(got), len(want), got)
	}
	// Report refreshed the cache: the next reconcile repairs without a read.
	ops, res := rg.reconcile(st)
	if res.Resynced || len(ops) != 7 {
		t.Errorf("after Report: resynced %v, ops %q", res.Resynced, opStrings(ops))
	}
	requireInSync(t, mustDesired(t, st), rg.fake)
}

func TestDryRunKeepsTheTable(t *testing.T) {
	dr := NewDryRun(testLogger(t))
	r := NewReconciler(dr, testLogger(t), Options{ResyncInterval: -1})
	st := webState()
	if _, err := r.Reconcile(t.Context(), mustDesired(t, st)); err != nil {
		t.Fatal(err)
	}
	requireInSync(t, mustDesired(t, st), dr)
	err := dr.Apply(t.Context(), []Op{{Kind: DeleteService, Service: ipvs.Service{Family: ipvs.INET, FWMark: 5}}})
	if !errors.Is(err, syscall.ESRCH) || !strings.Contains(err.Error(), "delete service FWM 5 inet") {
		t.Errorf("deleting a missing service: %v", err)
	}
	if dr.Name() != "dry-run" {
		t.Errorf("name %q", dr.Name())
	}
}
