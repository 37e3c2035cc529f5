package lvs

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"

	"github.com/directorate/directorate/fsm"
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

// requireRetiring checks how many destinations are retiring and how soon
// the reconciler asks to be called again (0 when none are).
// quiesced converges rg to webState, gives addr active connections,
// removes it from the state and reconciles once: addr is then retiring,
// at weight 0.
func quiesced(t *testing.T, rg *rig, addr netip.AddrPort, active uint32) (*rig, *fsm.State) {
	t.Helper()
	st := webState()
	rg.reconcile(st)
	if err := rg.fake.SetConns(webKey, addr, active, 0); err != nil {
		t.Fatal(err)
	}
	delete(st.Services["web"].Servers, addr.String())
	rg.reconcile(st)
	rg.requireDest(addr, 0)
	return rg, st
}

func requireRetiring(t *testing.T, res Result, n int, recheck time.Duration) {
	t.Helper()
	if res.Retiring != n || res.Recheck != recheck {
		t.Fatalf("%d destinations retiring, recheck after %s; want %d, %s", res.Retiring, res.Recheck, n, recheck)
	}
}

func TestRemovedDestinationIsQuiescedUntilItsConnectionsEnd(t *testing.T) {
	rg := newRig(t, Options{RemoveGrace: time.Minute})
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
	requireRetiring(t, res, 1, RetireRecheck)
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
	requireRetiring(t, res, 1, RetireRecheck/2)

	// Still active: kept, counted again later and later, and reported
	// as retiring, which is in sync.
	rg.clock.Advance(RetireRecheck / 2)
	for _, wait := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		ops, res = rg.reconcile(st)
		if len(ops) != 0 {
			t.Fatalf("a destination with active connections was touched: %q", opStrings(ops))
		}
		requireRetiring(t, res, 1, wait)
		rg.clock.Advance(wait)
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
	ops, res = rg.reconcile(st)
	requireOps(t, ops, "delete destination 10.1.0.1:8080 from TCP 10.0.0.1:80")
	rg.requireDest(a1, -1)
	requireRetiring(t, res, 0, 0)
	requireInSync(t, mustDesired(t, st), rg.fake)
}

func TestRemovedDestinationIsDeletedAtTheEndOfItsGrace(t *testing.T) {
	rg, st := quiesced(t, retireRig(t), a2, 5)
	for elapsed := time.Duration(0); elapsed < 10*time.Second-time.Second; elapsed += time.Second {
		rg.clock.Advance(time.Second)
		ops, res := rg.reconcile(st)
		if len(ops) != 0 {
			t.Fatalf("%s into the grace: sent %q", elapsed+time.Second, opStrings(ops))
		}
		if res.Recheck > 10*time.Second-elapsed-time.Second {
			t.Fatalf("%s into the grace: recheck after %s, past its end", elapsed+time.Second, res.Recheck)
		}
	}
	rg.clock.Advance(time.Second)
	ops, res := rg.reconcile(st)
	requireOps(t, ops, "delete destination 10.1.0.2:8080 from TCP 10.0.0.1:80")
	requireRetiring(t, res, 0, 0)
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
	requireRetiring(t, res, 1, RetireRecheck)
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
	requireRetiring(t, res, 0, 0)
	// Forgotten: removing it again starts a new grace.
	rg.clock.Advance(time.Hour)
	delete(st.Services["web"].Servers, a1.String())
	ops, _ = rg.reconcile(st)
	requireOps(t, ops, "update destination 10.1.0.1:8080 of TCP 10.0.0.1:80")
	rg.requireDest(a1, 0)
}

func TestRetiringDestinationGoesWithItsService(t *testing.T) {
	rg, st := quiesced(t, retireRig(t), a1, 0)
	delete(st.Services, "web")
	ops, res := rg.reconcile(st)
	requireOps(t, ops, "delete service TCP 10.0.0.1:80")
	requireRetiring(t, res, 0, 0)
}

func TestRetiringDestinationIsQuiescedAgainAfterDrift(t *testing.T) {
	rg, st := quiesced(t, retireRig(t), a1, 1)
	// Someone sets its weight back by hand.
	rg.fake.Mutate(func(tab Table) { tab[webKey].Dest(a1).Weight = 50 })
	rg.r.Invalidate()
	rg.clock.Advance(RetireRecheck)
	ops, res := rg.reconcile(st)
	requireOps(t, ops, "update destination 10.1.0.1:8080 of TCP 10.0.0.1:80")
	rg.requireDest(a1, 0)
	requireRetiring(t, res, 1, RetireRecheck)
	// The pause starts over from the new quiesce: a reconcile at once
	// (a commit) must not count, let alone delete.
	if err := rg.fake.SetConns(webKey, a1, 0, 0); err != nil {
		t.Fatal(err)
	}
	if ops, _ = rg.reconcile(st); len(ops) != 0 {
		t.Fatalf("a reconcile right after the second quiesce sent %q", opStrings(ops))
	}

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
	requireRetiring(t, res, 0, 0)
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

// TestRetiringDestinationDeletedBehindTheCache: someone deletes the
// destination while the reconciler's cached table still has it. The count
// finds it gone: nothing fails, nothing is left retiring, and the cache is
// read again.
func TestRetiringDestinationDeletedBehindTheCache(t *testing.T) {
	rg, st := quiesced(t, retireRig(t), a1, 0)
	rg.fake.Mutate(func(tab Table) {
		svc := tab[webKey]
		i, _ := svc.find(a1)
		svc.Dests = append(svc.Dests[:i], svc.Dests[i+1:]...)
	})
	rg.clock.Advance(RetireRecheck)
	ops, res := rg.reconcile(st)
	if len(ops) != 0 {
		t.Fatalf("sent %q for a destination already gone", opStrings(ops))
	}
	requireRetiring(t, res, 0, 0)
	_, res = rg.reconcile(st)
	if !res.Resynced {
		t.Fatal("the cache that still had the destination was trusted again")
	}
}

// TestDestinationThatCannotBeQuiescedIsDeletedAfterTheGrace: when the
// weight-0 update keeps failing, removal still wins once the grace is over.
func TestDestinationThatCannotBeQuiescedIsDeletedAfterTheGrace(t *testing.T) {
	rg := retireRig(t)
	st := webState()
	rg.reconcile(st)
	delete(st.Services["web"].Servers, a1.String())
	rg.fake.FailOps(func(op Op) error {
		if op.Kind == UpdateDest {
			return errTest
		}
		return nil
	})
	for range 10 {
		rg.fake.Reset()
		if _, err := rg.r.Reconcile(t.Context(), mustDesired(t, st)); err == nil {
			t.Fatal("a failing quiesce reported success")
		}
		rg.requireDest(a1, 10)
		rg.clock.Advance(time.Second)
	}
	ops, res := rg.reconcile(st)
	requireOps(t, ops, "delete destination 10.1.0.1:8080 from TCP 10.0.0.1:80")
	requireRetiring(t, res, 0, 0)
}

// TestRemovedUDPDestinationWaitsForItsFlows: the kernel counts UDP flows
// as inactive, so for UDP those hold a removed destination too.
func TestRemovedUDPDestinationWaitsForItsFlows(t *testing.T) {
	rg := retireRig(t)
	st := webState()
	rg.reconcile(st)
	dnsKey := ServiceKey{Family: ipvs.INET6, Protocol: ipvs.UDP, Addr: netip.MustParseAddr("2001:db8::1"), Port: 53}
	d1 := netip.MustParseAddrPort("[2001:db8:1::1]:53")
	if err := rg.fake.SetConns(dnsKey, d1, 0, 4); err != nil {
		t.Fatal(err)
	}
	delete(st.Services["dns"].Servers, d1.String())
	ops, _ := rg.reconcile(st)
	requireOps(t, ops, "update destination [2001:db8:1::1]:53 of UDP [2001:db8::1]:53")
	rg.clock.Advance(RetireRecheck)
	if ops, _ = rg.reconcile(st); len(ops) != 0 {
		t.Fatalf("a UDP destination with 4 flows was deleted: %q", opStrings(ops))
	}
	if err := rg.fake.SetConns(dnsKey, d1, 0, 0); err != nil {
		t.Fatal(err)
	}
	rg.clock.Advance(RetireRecheck * 2)
	ops, _ = rg.reconcile(st)
	requireOps(t, ops, "delete destination [2001:db8:1::1]:53 from UDP [2001:db8::1]:53")
}

// TestRetiringServiceDeletedBehindTheCache: someone deletes the whole
// service while one of its destinations is retiring. The count finds the
// service gone: the retiree is forgotten, nothing fails, and the next
// reconcile reads the table and recreates the service.
func TestRetiringServiceDeletedBehindTheCache(t *testing.T) {
	rg, st := quiesced(t, retireRig(t), a1, 0)
	rg.fake.Mutate(func(tab Table) { delete(tab, webKey) })
	rg.clock.Advance(RetireRecheck)
	ops, res := rg.reconcile(st)
	if len(ops) != 0 {
		t.Fatalf("sent %q for a service already gone", opStrings(ops))
	}
	requireRetiring(t, res, 0, 0)
	ops, res = rg.reconcile(st)
	if !res.Resynced || len(ops) == 0 || ops[0].Kind != AddService {
		t.Fatalf("the next reconcile did not recreate the service: resynced %t, %q", res.Resynced, opStrings(ops))
	}
}

// TestRetiringDestinationRaisedBehindTheCache: the count finds the weight
// raised by someone else; the next reconcile reads the table and quiesces
// it again.
func TestRetiringDestinationRaisedBehindTheCache(t *testing.T) {
	rg, st := quiesced(t, retireRig(t), a1, 3)
	rg.fake.Mutate(func(tab Table) { tab[webKey].Dest(a1).Weight = 7 })
	rg.clock.Advance(RetireRecheck)
	if ops, _ := rg.reconcile(st); len(ops) != 0 {
		t.Fatalf("sent %q", opStrings(ops))
	}
	ops, res := rg.reconcile(st)
	requireOps(t, ops, "update destination 10.1.0.1:8080 of TCP 10.0.0.1:80")
	if !res.Resynced {
		t.Fatal("the raised weight was repaired without reading the table")
	}
	rg.requireDest(a1, 0)
}

// TestShortGraceIsCountedFromTheQuiesce: a grace shorter than the first
// count's pause ends the wait at the grace.
func TestShortGraceIsCountedFromTheQuiesce(t *testing.T) {
	rg := newRig(t, Options{RemoveGrace: 100 * time.Millisecond})
	st := webState()
	rg.reconcile(st)
	if err := rg.fake.SetConns(webKey, a1, 3, 0); err != nil {
		t.Fatal(err)
	}
	delete(st.Services["web"].Servers, a1.String())
	_, res := rg.reconcile(st)
	requireRetiring(t, res, 1, 100*time.Millisecond)
	rg.clock.Advance(100 * time.Millisecond)
	ops, _ := rg.reconcile(st)
	requireOps(t, ops, "delete destination 10.1.0.1:8080 from TCP 10.0.0.1:80")
}
