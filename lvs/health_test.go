package lvs

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/directorate/directorate/fsm"
)

// weights returns each destination of the service key in d as
// "addr:port=weight", sorted.
func weights(t *testing.T, tab Table, key ServiceKey) []string {
	t.Helper()
	svc := tab[key]
	if svc == nil {
		t.Fatalf("no service %s", key)
	}
	out := make([]string, 0, len(svc.Dests))
	for _, d := range svc.Dests {
		out = append(out, fmt.Sprintf("%s=%d", d.Key(), d.Weight))
	}
	slices.Sort(out)
	return out
}

func TestDesiredAdminHealthQuorumSorry(t *testing.T) {
	down := &fsm.Health{State: fsm.HealthDown, Index: 7}
	up := &fsm.Health{State: fsm.HealthUp, Index: 8}
	check := &fsm.CheckConfig{Kind: fsm.CheckTCP}
	build := func(edit func(web *fsm.Service)) *fsm.State {
		st := newState()
		web := tcpService("web", "v4", 80)
		web.Check = check
		addServer(web, "10.1.0.1", 8080, 5).Health = up
		addServer(web, "10.1.0.2", 8080, 7)
		edit(web)
		st.Services["web"] = web
		return st
	}
	srv := func(web *fsm.Service, a string) *fsm.RealServer { return web.Servers[a+":8080"] }
	sorry := &fsm.SorryServer{Address: netip.MustParseAddr("10.1.0.99"), Port: 8080, Method: fsm.NAT}
	for _, tc := range []struct {
		name string
		edit func(web *fsm.Service)
		want []string
	}{
		{"all up", func(*fsm.Service) {}, []string{"10.1.0.1:8080=5", "10.1.0.2:8080=7"}},
		{"down quiesces by default", func(web *fsm.Service) { srv(web, "10.1.0.1").Health = down },
			[]string{"10.1.0.1:8080=0", "10.1.0.2:8080=7"}},
		{"down quiesces", func(web *fsm.Service) {
			web.DownAction = fsm.DownQuiesce
			srv(web, "10.1.0.2").Health = down
		}, []string{"10.1.0.1:8080=5", "10.1.0.2:8080=0"}},
		{"down removed", func(web *fsm.Service) {
			web.DownAction = fsm.DownRemove
			srv(web, "10.1.0.1").Health = down
		}, []string{"10.1.0.2:8080=7"}},
		{"disabled beats up", func(web *fsm.Service) { srv(web, "10.1.0.1").Admin = fsm.Disabled }, []string{"10.1.0.2:8080=7"}},
		{"drained beats up", func(web *fsm.Service) { srv(web, "10.1.0.1").Admin = fsm.Drained },
			[]string{"10.1.0.1:8080=0", "10.1.0.2:8080=7"}},
		{"drained beats down-remove", func(web *fsm.Service) {
			web.DownAction = fsm.DownRemove
			srv(web, "10.1.0.1").Admin = fsm.Drained
			srv(web, "10.1.0.1").Health = down
		}, []string{"10.1.0.1:8080=0", "10.1.0.2:8080=7"}},
		{"disabled and down", func(web *fsm.Service) {
			srv(web, "10.1.0.1").Admin = fsm.Disabled
			srv(web, "10.1.0.1").Health = down
		}, []string{"10.1.0.2:8080=7"}},
		{"sorry server idle while quorum holds", func(web *fsm.Service) { web.Sorry = sorry },
			[]string{"10.1.0.1:8080=5", "10.1.0.2:8080=7"}},
		{"quorum lost: sorry server takes new connections", func(web *fsm.Service) {
			web.Sorry, web.Quorum, web.QuorumLost = sorry, 10, true
			srv(web, "10.1.0.1").Health = down
		}, []string{"10.1.0.1:8080=0", "10.1.0.2:8080=0", "10.1.0.99:8080=1"}},
		{"quorum lost with remove", func(web *fsm.Service) {
			web.Sorry, web.QuorumLost, web.DownAction = sorry, true, fsm.DownRemove
			srv(web, "10.1.0.1").Health = down
			srv(web, "10.1.0.2").Health = down
		}, []string{"10.1.0.99:8080=1"}},
		{"quorum lost without a sorry server changes nothing", func(web *fsm.Service) {
			web.Quorum, web.QuorumLost = 10, true
		}, []string{"10.1.0.1:8080=5", "10.1.0.2:8080=7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := mustDesired(t, build(tc.edit))
			if got := weights(t, d.Services, webKey); !slices.Equal(got, tc.want) {
				t.Errorf("destinations %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDesiredSorryServerMethod(t *testing.T) {
	st := newState()
	web := tcpService("web", "v4", 80)
	addServer(web, "10.1.0.1", 8080, 5)
	web.Sorry = &fsm.SorryServer{Address: netip.MustParseAddr("10.1.0.99"), Port: 80, Method: fsm.DR}
	web.QuorumLost = true
	st.Services["web"] = web
	d := mustDesired(t, st)
	got := d.Services[webKey].Dest(netip.MustParseAddrPort("10.1.0.99:80"))
	if got == nil || MethodName(got.FwdMethod) != "dr" || got.Weight != 1 {
		t.Fatalf("sorry destination %+v, want dr with weight 1", got)
	}
	// A sorry server lvs cannot express is reported, and the service
	// still converts.
	web.Sorry = &fsm.SorryServer{Address: netip.MustParseAddr("10.1.0.99"), Port: 80, Method: "bogus"}
	d, err := DesiredFromState(st)
	if err == nil || !strings.Contains(err.Error(), "services[web].sorry.method") {
		t.Errorf("error %v, want one naming services[web].sorry.method", err)
	}
	if got := weights(t, d.Services, webKey); !slices.Equal(got, []string{"10.1.0.1:8080=0"}) {
		t.Errorf("destinations %v", got)
	}
}

// fsmRig drives a real FSM, as clusterd does: commands are applied, the
// desired table is patched with the services ReadChanges names, and the
// reconciler converges a fake kernel.
type fsmRig struct {
	*rig
	f   *fsm.FSM
	idx uint64
	d   *Desired
}

func newFSMRig(t *testing.T, cmds ...fsm.Command) *fsmRig {
	fr := &fsmRig{rig: newRig(t, Options{}), f: fsm.New()}
	fr.apply(cmds...)
	fr.f.Read(func(st *fsm.State) { fr.d = mustDesired(t, st) })
	if _, err := fr.r.Reconcile(t.Context(), fr.d); err != nil {
		t.Fatal(err)
	}
	return fr
}

func (fr *fsmRig) apply(cmds ...fsm.Command) {
	fr.t.Helper()
	for _, c := range cmds {
		data, err := fsm.Encode(c)
		if err != nil {
			fr.t.Fatal(err)
		}
		fr.idx++
		if err := fr.f.Apply(fr.idx, data); err != nil {
			fr.t.Fatalf("apply %s: %v", c.Type(), err)
		}
	}
}

// step applies cmds, patches and reconciles, and returns the ops sent.
func (fr *fsmRig) step(cmds ...fsm.Command) []Op {
	fr.t.Helper()
	since := fr.f.Index()
	fr.apply(cmds...)
	var err error
	fr.f.ReadChanges(since, func(st *fsm.State, services []string, full bool) {
		if full {
			fr.t.Fatal("a health change must not need a full rebuild")
		}
		fr.d, err = fr.d.Patch(st, services...)
	})
	if err != nil {
		fr.t.Fatal(err)
	}
	fr.fake.Reset()
	res, err := fr.r.Reconcile(fr.t.Context(), fr.d)
	if err != nil {
		fr.t.Fatal(err)
	}
	if !res.Incremental {
		fr.t.Error("a health change was not reconciled incrementally")
	}
	return fr.fake.Ops()
}

// destOps renders destination ops as "kind addr:port wWEIGHT", sorted.
func destOps(ops []Op) []string {
	out := make([]string, len(ops))
	for i, op := range ops {
		out[i] = fmt.Sprintf("%s %s w%d", op.Kind, netip.AddrPortFrom(op.Dest.Address, op.Dest.Port), op.Dest.Weight)
	}
	slices.Sort(out)
	return out
}

func TestReconcileFollowsHealthAndQuorum(t *testing.T) {
	fr := newFSMRig(t,
		fsm.AddVIP{VIP: fsm.VIP{Name: "v4", Prefix: netip.MustParsePrefix("10.0.0.1/24")}},
		fsm.AddService{Service: fsm.Service{Name: "web", VIP: "v4", Protocol: fsm.TCP, Port: 80, Scheduler: "wlc", Method: fsm.NAT,
			Check: &fsm.CheckConfig{Kind: fsm.CheckHTTP}, Quorum: 3, Sorry: &fsm.SorryServer{Address: netip.MustParseAddr("10.1.0.99"), Port: 8080},
			Servers: map[string]*fsm.RealServer{
				"10.1.0.1:8080": {Address: netip.MustParseAddr("10.1.0.1"), Port: 8080, Weight: 3},
				"10.1.0.2:8080": {Address: netip.MustParseAddr("10.1.0.2"), Port: 8080, Weight: 4},
			}}},
		fsm.AddService{Service: fsm.Service{Name: "other", VIP: "v4", Protocol: fsm.TCP, Port: 81, Scheduler: "rr", Method: fsm.NAT,
			Servers: map[string]*fsm.RealServer{"10.2.0.1:81": {Address: netip.MustParseAddr("10.2.0.1"), Port: 81, Weight: 1}}}},
	)
	a1 := netip.MustParseAddrPort("10.1.0.1:8080")
	if err := fr.fake.SetConns(webKey, a1, 3, 9); err != nil {
		t.Fatal(err)
	}
	set := func(server, state string) fsm.SetHealth {
		return fsm.SetHealth{Updates: []fsm.HealthUpdate{{Service: "web", Server: server, State: state}}}
	}

	// 10.1.0.1 down: weight 0, its connections left alone.
	got := destOps(fr.step(set("10.1.0.1:8080", fsm.HealthDown)))
	if want := []string{"update-dest 10.1.0.1:8080 w0"}; !slices.Equal(got, want) {
		t.Errorf("ops %v, want %v", got, want)
	}
	svc, err := fr.r.ReadService(t.Context(), webKey)
	if err != nil {
		t.Fatal(err)
	}
	if d := svc.Dest(a1); d == nil || d.Weight != 0 || d.ActiveConns != 3 || d.InactiveConns != 9 {
		t.Errorf("after quiesce: %+v, want weight 0 with 3 active and 9 inactive connections kept", d)
	}

	// 10.1.0.2 down too: quorum 3 lost, the sorry server takes over.
	got = destOps(fr.step(set("10.1.0.2:8080", fsm.HealthDown)))
	if want := []string{"add-dest 10.1.0.99:8080 w1", "update-dest 10.1.0.2:8080 w0"}; !slices.Equal(got, want) {
		t.Errorf("ops %v, want %v", got, want)
	}
	// Both up: quorum regained, the sorry server goes.
	got = destOps(fr.step(set("10.1.0.1:8080", fsm.HealthUp), set("10.1.0.2:8080", fsm.HealthUp)))
	want := []string{"delete-dest 10.1.0.99:8080 w1", "update-dest 10.1.0.1:8080 w3", "update-dest 10.1.0.2:8080 w4"}
	if !slices.Equal(got, want) {
		t.Errorf("ops %v, want %v", got, want)
	}
	// An operator's drain wins over health up.
	drained := fsm.Drained
	got = destOps(fr.step(fsm.UpdateServer{Service: "web", Address: a1.Addr(), Port: 8080,
		Patch: fsm.ServerPatch{Admin: &drained}}))
	if want := []string{"update-dest 10.1.0.1:8080 w0"}; !slices.Equal(got, want) {
		t.Errorf("drain: ops %v, want %v", got, want)
	}
	// A health update for a drained server changes nothing in the kernel.
	if got := fr.step(set("10.1.0.1:8080", fsm.HealthDown)); len(got) != 0 {
		t.Errorf("health of a drained server sent %v", destOps(got))
	}
	requireInSync(t, fr.d, fr.fake)
}

func TestReadService(t *testing.T) {
	st := webState()
	d := mustDesired(t, st)
	missing := ServiceKey{Family: webKey.Family, Protocol: webKey.Protocol, Addr: webKey.Addr, Port: 8443}
	a2 := netip.MustParseAddrPort("10.1.0.2:8080")
	for _, b := range []struct {
		name string
		b    Backend
	}{
		{"fake", NewFake()},
		{"dry-run", NewDryRun(testLogger(t))},
	} {
		t.Run(b.name, func(t *testing.T) {
			r := NewReconciler(b.b, testLogger(t), Options{})
			if _, err := r.Reconcile(t.Context(), d); err != nil {
				t.Fatal(err)
			}
			if f, ok := b.b.(*Fake); ok {
				if err := f.SetConns(webKey, a2, 1, 2); err != nil {
					t.Fatal(err)
				}
			}
			svc, err := r.ReadService(t.Context(), webKey)
			if err != nil {
				t.Fatal(err)
			}
			if svc.Key() != webKey || len(svc.Dests) != 3 || svc.Dest(a2) == nil {
				t.Fatalf("read %s with %d destinations", svc.Key(), len(svc.Dests))
			}
			if _, ok := b.b.(*Fake); ok && (svc.Dest(a2).ActiveConns != 1 || svc.Dest(a2).InactiveConns != 2) {
				t.Errorf("counters %+v", svc.Dest(a2))
			}
			if _, err := r.ReadService(t.Context(), missing); !errors.Is(err, ErrServiceNotFound) {
				t.Errorf("missing service: %v, want ErrServiceNotFound", err)
			}
		})
	}
	if err := NewFake().SetConns(webKey, a2, 1, 1); !errors.Is(err, ErrServiceNotFound) {
		t.Errorf("SetConns on a missing service: %v", err)
	}
}

func TestKernelReadServiceOnFakeKernel(t *testing.T) {
	kr := newKernelRig(t, 0)
	d := mustDesired(t, webState())
	r := NewReconciler(kr.k, testLogger(t), Options{})
	if _, err := r.Reconcile(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	a1 := netip.MustParseAddrPort("10.1.0.1:8080")
	kr.fk.mu.Lock()
	kr.fk.table[webKey].Dest(a1).ActiveConns = 4
	kr.fk.table[webKey].Dest(a1).InactiveConns = 6
	kr.fk.mu.Unlock()
	key, err := ServiceKeyOf(webState(), webState().Services["web"])
	if err != nil || key != webKey {
		t.Fatalf("ServiceKeyOf(web) = %s, %v; want %s", key, err, webKey)
	}
	svc, err := r.ReadService(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Scheduler != "wlc" || len(svc.Dests) != 3 {
		t.Fatalf("read %+v", svc)
	}
	if got := svc.Dest(a1); got == nil || got.ActiveConns != 4 || got.InactiveConns != 6 || got.Weight != 10 {
		t.Errorf("destination %+v, want weight 10 with 4 active and 6 inactive connections", got)
	}
	missing := ServiceKey{Family: webKey.Family, Protocol: webKey.Protocol, Addr: webKey.Addr, Port: 8443}
	if _, err := r.ReadService(t.Context(), missing); !errors.Is(err, ErrServiceNotFound) {
		t.Errorf("missing service: %v, want ErrServiceNotFound", err)
	}
	if _, err := ServiceKeyOf(webState(), &fsm.Service{Name: "x", VIP: "nope"}); err == nil || !strings.Contains(err.Error(), "services[x].vip") {
		t.Errorf("ServiceKeyOf with a missing VIP: %v", err)
	}
	// The socket is still good after the kernel's ESRCH.
	if _, err := r.ReadService(t.Context(), webKey); err != nil {
		t.Errorf("read after ESRCH: %v", err)
	}
}
