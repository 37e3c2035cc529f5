package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/lvs"
)

type applier struct {
	t   *testing.T
	f   *fsm.FSM
	idx uint64
}

func (a *applier) apply(cmds ...fsm.Command) {
	a.t.Helper()
	for _, c := range cmds {
		data, err := fsm.Encode(c)
		if err != nil {
			a.t.Fatal(err)
		}
		a.idx++
		if err := a.f.Apply(a.idx, data); err != nil {
			a.t.Fatalf("apply %s: %v", c.Type(), err)
		}
	}
}

func newTestDaemon(t *testing.T) (*daemon, *lvs.Fake, *applier) {
	fake := lvs.NewFake()
	f := fsm.New()
	d := &daemon{
		cfg: &config{NodeID: "d1"}, log: testLogger(t), fsm: f, backend: fake,
		rec: lvs.NewReconciler(fake, testLogger(t), lvs.Options{ResyncInterval: time.Hour}),
	}
	return d, fake, &applier{t: t, f: f}
}

// TestReconcilePatchesOnlyWhatChanged checks the daemon's use of the FSM's
// change log: after a commit that touches one server, exactly one kernel
// op is sent, and a VIP change rebuilds.
func TestReconcilePatchesOnlyWhatChanged(t *testing.T) {
	d, fake, a := newTestDaemon(t)
	ctx := context.Background()
	a.apply(fsm.AddVIP{VIP: fsm.VIP{Name: "v", Prefix: netip.MustParsePrefix("192.0.2.10/24")}})
	for i := range 50 {
		svc := fsm.Service{Name: fmt.Sprintf("s%d", i), VIP: "v", Protocol: fsm.TCP, Port: 1000 + i, Scheduler: "wrr", Method: fsm.NAT,
			Servers: map[string]*fsm.RealServer{}}
		for j := range 4 {
			rs := &fsm.RealServer{Address: netip.MustParseAddr(fmt.Sprintf("10.1.%d.%d", i, j+1)), Port: 8080, Weight: 1}
			svc.Servers[rs.Key()] = rs
		}
		a.apply(fsm.AddService{Service: svc})
	}
	if !d.reconcile(ctx) {
		t.Fatal("first reconcile failed")
	}
	if n := len(fake.Table()); n != 50 {
		t.Fatalf("kernel has %d services, want 50", n)
	}

	fake.Reset()
	a.apply(fsm.UpdateServer{Service: "s7", Address: netip.MustParseAddr("10.1.7.2"), Port: 8080,
		Patch: fsm.ServerPatch{Weight: ptrTo(9)}})
	if !d.reconcile(ctx) {
		t.Fatal("reconcile after a weight change failed")
	}
	if c := fake.Counts(); c != (lvs.OpCounts{UpdateDest: 1}) {
		t.Fatalf("a weight change sent %+v, want exactly one destination update", c)
	}
	if d.lastReconcile().Index != a.idx {
		t.Fatalf("reconciled index %d, want %d", d.lastReconcile().Index, a.idx)
	}

	fake.Reset()
	if !d.reconcile(ctx) {
		t.Fatal("no-op reconcile failed")
	}
	if c := fake.Counts(); c != (lvs.OpCounts{}) {
		t.Fatalf("a reconcile with nothing to do sent %+v", c)
	}

	// Force-deleting the VIP removes its services: a full rebuild.
	fake.Reset()
	a.apply(fsm.DeleteVIP{Name: "v", Force: true})
	if !d.reconcile(ctx) {
		t.Fatal("reconcile after deleting the VIP failed")
	}
	if n := len(fake.Table()); n != 0 || fake.Counts().DeleteService != 50 {
		t.Fatalf("after deleting the VIP: %d services left, counts %+v", n, fake.Counts())
	}
}

func TestReconcileReportsKernelFailure(t *testing.T) {
	d, fake, a := newTestDaemon(t)
	a.apply(fsm.AddVIP{VIP: fsm.VIP{Name: "v", Prefix: netip.MustParsePrefix("192.0.2.10/24")}},
		fsm.AddService{Service: fsm.Service{Name: "s", VIP: "v", Protocol: fsm.TCP, Port: 80, Scheduler: "rr", Method: fsm.DR}})
	fake.FailOps(func(lvs.Op) error { return errors.New("kernel says no") })
	if d.reconcile(context.Background()) {
		t.Fatal("a reconcile whose ops failed reported success")
	}
	if st := d.lastReconcile(); st.Error == "" {
		t.Fatal("the failure is not in the status clusterctl shows")
	}
	fake.FailOps(nil)
	if !d.reconcile(context.Background()) || len(fake.Table()) != 1 {
		t.Fatalf("the retry did not converge: %v", fake.Table())
	}
}

func ptrTo[T any](v T) *T { return &v }
