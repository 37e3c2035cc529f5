package lvs

import (
	"net/netip"
	"testing"
	"time"
)

// retireRig is a rig whose reconciler quiesces removed destinations, with
// a short grace so the tests can pass it on the fake clock.
func retireRig(t *testing.T) *rig {
	return newRig(t, Options{RemoveGrace: 10 * time.Second})
}

var (
	a1 = netip.MustParseAddrPort("10.1.0.1:8080")
	a2 = netip.MustParseAddrPort("10.1.0.2:8080")
	a3 = netip.MustParseAddrPort("10.1.0.3:8080") // drained: weight 0
)

// requireDest fails unless the fake's web service has addr at weight w,
// or lacks it when w is negative.
func (rg *rig) requireDest(addr netip.AddrPort, w int) {
	rg.t.Helper()
	d := rg.fake.Table()[webKey].Dest(addr)
	switch {
	case w < 0 && d != nil:
		rg.t.Fatalf("%s is still a destination, at weight %d", addr, d.Weight)
	case w >= 0 && d == nil:
		rg.t.Fatalf("%s is not a destination, want weight %d", addr, w)
	case w >= 0 && int(d.Weight) != w:
		rg.t.Fatalf("%s has weight %d, want %d", addr, d.Weight, w)
	}
}

func requireRetiring(t *testing.T, res Result, n int) {
	t.Helper()
	if res.Retiring != n {
		t.Fatalf("%d destinations retiring, want %d", res.Retiring, n)
	}
	if want := map[bool]time.Duration{true: RetireRecheck, false: 0}[n > 0]; res.Recheck != want {
		t.Fatalf("recheck after %s, want %s", res.Recheck, want)
	}
}

func TestRemovedDestinationIsQuiescedUntilItsConnectionsEnd(t *testing.T) {
	rg := retireRig(t)
	st := webState()
	rg.reconcile(st)
	if err := rg.fake.SetConns(webKey, a1, 2, 7); err != nil {
		t.Fatal(err)
	}

	// Removed: quiesced, not deleted, and the caller is told to look
	// again.
	delete(st.Services["web"].Servers, a1.String())
	st.Index++
	ops, res := rg.reconcile(st)
	requireOps(t, ops, "update destination 10.1.0.1:8080 of TCP 10.0.0.1:80")
	rg.requireDest(a1, 0)
	requireRetiring(t, res, 1)
	if kd := rg.fake.Table()[webKey].Dest(a1); kd.FwdMethod != ops[0].Dest.FwdMethod || kd.ActiveConns != 2 {
		t.Fatalf("quiesced destination %+v lost its method or its connections", kd)
	}

	// Too soon to count: nothing is read or sent.
	rg.clock.Advance(RetireRecheck / 2)
	ops, res = rg.reconcile(st)
	if len(ops) != 0 {
		t.Fatalf("a reconcile before the recheck sent %q", opStrings(ops))
	}
	if list, _ := rg.fake.Calls(); list != 0 {
		t.Fatalf("a reconcile before the recheck read the backend %d times", list)
	}
	requireRetiring(t, res, 1)

	// Still active: kept, and reported as retiring, which is in sync.
	rg.clock.Advance(RetireRecheck)
	if ops, _ = rg.reconcile(st); len(ops) != 0 {
		t.Fatalf("a destination with active connections was touched: %q", opStrings(ops))
	}
	rep, err := rg.r.Report(t.Context(), mustDesired(t, st))
	if err != nil {
		t.Fatal(err)
	}
	var state DiffState = "absent"
	for _, sd := range rep.Services {
		for _, dd := range sd.Dests {
			if sd.Key == webKey && dd.Addr == a1 {
				state = dd.State
			}
		}
	}
	if state != Retiring || !rep.InSync {
		t.Fatalf("report: %s is %q, in sync %t; want retiring, in sync", a1, state, rep.InSync)
	}

	// Inactive connections (FIN_WAIT, TIME_WAIT) do not hold it.
	if err := rg.fake.SetConns(webKey, a1, 0, 9); err != nil {
		t.Fatal(err)
	}
	rg.clock.Advance(RetireRecheck)
	ops, res = rg.reconcile(st)
	requireOps(t, ops, "delete destination 10.1.0.1:8080 from TCP 10.0.0.1:80")
	rg.requireDest(a1, -1)
	requireRetiring(t, res, 0)
	requireInSync(t, mustDesired(t, st), rg.fake)
}

func TestRemovedDestinationIsDeletedAtTheEndOfItsGrace(t *testing.T) {
	rg := retireRig(t)
	st := webState()
	rg.reconcile(st)
	if err := rg.fake.SetConns(webKey, a2, 5, 0); err != nil {
		t.Fatal(err)
	}
	delete(st.Services["web"].Servers, a2.String())
	rg.reconcile(st)
	for elapsed := time.Duration(0); elapsed < 10*time.Second-time.Second; elapsed += time.Second {
		rg.clock.Advance(time.Second)
		if ops, _ := rg.reconcile(st); len(ops) != 0 {
			t.Fatalf("%s into the grace: sent %q", elapsed+time.Second, opStrings(ops))
		}
	}
	rg.clock.Advance(time.Second)
	ops, res := rg.reconcile(st)
	requireOps(t, ops, "delete destination 10.1.0.2:8080 from TCP 10.0.0.1:80")
	requireRetiring(t, res, 0)
}

func TestRemovedDrainedDestinationNeedsNoQuiesce(t *testing.T) {
	rg := retireRig(t)
	st := webState()
	rg.reconcile(st)
	delete(st.Services["web"].Servers, a3.String())
	ops, res := rg.reconcile(st)
	if len(ops) != 0 {
		t.Fatalf("removing a destination already at weight 0 sent %q, want nothing until its connections are counted", opStrings(ops))
	}
	requireRetiring(t, res, 1)
	rg.clock.Advance(RetireRecheck)
	ops, _ = rg.reconcile(st)
	requireOps(t, ops, "delete destination 10.1.0.3:8080 from TCP 10.0.0.1:80")
}

func TestRetiringDestinationAddedBackIsRestored(t *testing.T) {
	rg := retireRig(t)
	st := webState()
	rg.reconcile(st)
	rs := st.Services["web"].Servers[a1.String()]
	delete(st.Services["web"].Servers, a1.String())
	rg.reconcile(st)
	rg.requireDest(a1, 0)

	st.Services["web"].Servers[a1.String()] = rs
	ops, res := rg.reconcile(st)
	requireOps(t, ops, "update destination 10.1.0.1:8080 of TCP 10.0.0.1:80")
	rg.requireDest(a1, 10)
	requireRetiring(t, res, 0)
	// Forgotten: removing it again starts a new grace.
	rg.clock.Advance(time.Hour)
	delete(st.Services["web"].Servers, a1.String())
	ops, _ = rg.reconcile(st)
	requireOps(t, ops, "update destination 10.1.0.1:8080 of TCP 10.0.0.1:80")
	rg.requireDest(a1, 0)
}

func TestRetiringDestinationGoesWithItsService(t *testing.T) {
	rg := retireRig(t)
	st := webState()
	rg.reconcile(st)
	delete(st.Services["web"].Servers, a1.String())
	rg.reconcile(st)
	delete(st.Services, "web")
	ops, res := rg.reconcile(st)
	requireOps(t, ops, "delete service TCP 10.0.0.1:80")
	requireRetiring(t, res, 0)
}

func TestRetiringDestinationIsQuiescedAgainAfterDrift(t *testing.T) {
	rg := retireRig(t)
	st := webState()
	rg.reconcile(st)
	if err := rg.fake.SetConns(webKey, a1, 1, 0); err != nil {
		t.Fatal(err)
	}
	delete(st.Services["web"].Servers, a1.String())
	rg.reconcile(st)
	// Someone sets its weight back by hand.
	rg.fake.Mutate(func(tab Table) { tab[webKey].Dest(a1).Weight = 50 })
	rg.r.Invalidate()
	rg.clock.Advance(RetireRecheck)
	ops, res := rg.reconcile(st)
	requireOps(t, ops, "update destination 10.1.0.1:8080 of TCP 10.0.0.1:80")
	rg.requireDest(a1, 0)
	requireRetiring(t, res, 1)

	// Someone deletes it by hand: nothing left to retire.
	rg.fake.Mutate(func(tab Table) {
		svc := tab[webKey]
		i, _ := svc.find(a1)
		svc.Dests = append(svc.Dests[:i], svc.Dests[i+1:]...)
	})
	rg.r.Invalidate()
	ops, res = rg.reconcile(st)
	if len(ops) != 0 {
		t.Fatalf("sent %q", opStrings(ops))
	}
	requireRetiring(t, res, 0)
}

// TestRetiringDestinationIsCheckedOnIncrementalReconciles makes sure a
// reconcile patched for another service still looks at the retiring
// destination, which the patch does not name.
func TestRetiringDestinationIsCheckedOnIncrementalReconciles(t *testing.T) {
	rg := retireRig(t)
	st := webState()
	d := mustDesired(t, st)
	if _, err := rg.r.Reconcile(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	step := func(names ...string) ([]Op, Result) {
		t.Helper()
		st.Index++
		var err error
		if d, err = d.Patch(st, names...); err != nil {
			t.Fatal(err)
		}
		rg.fake.Reset()
		res, err := rg.r.Reconcile(t.Context(), d)
		if err != nil {
			t.Fatal(err)
		}
		return rg.fake.Ops(), res
	}
	delete(st.Services["web"].Servers, a1.String())
	ops, res := step("web")
	requireOps(t, ops, "update destination 10.1.0.1:8080 of TCP 10.0.0.1:80")
	if !res.Incremental {
		t.Fatal("the reconcile was not incremental")
	}
	rg.clock.Advance(RetireRecheck)
	st.Services["dns"].Scheduler = "wrr"
	ops, res = step("dns")
	requireOps(t, ops, "update service UDP [2001:db8::1]:53", "delete destination 10.1.0.1:8080 from TCP 10.0.0.1:80")
	if !res.Incremental || res.Retiring != 0 {
		t.Fatalf("result %+v, want incremental with nothing retiring", res)
	}
}
