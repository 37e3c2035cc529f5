package fsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// richState is a valid, normalised state in which every field of every
// model type is set somewhere (TestRichStateSetsEveryField keeps it so).
func richState(t testing.TB) *State {
	t.Helper()
	return &State{
		Index: 42,
		VIPs: map[string]*VIP{
			"v4": {Name: "v4", Prefix: pfx("192.0.2.10/24"), Interface: "eth0"},
			"v6": {Name: "v6", Prefix: pfx("2001:db8::10/64"), Interface: "bond0.100"},
		},
		Services: map[string]*Service{
			"web": {Name: "web", VIP: "v4", Protocol: TCP, Port: 80, Family: IPv4, Scheduler: "sh",
				SchedFlags: SchedFlags{SHFallback: true, SHPort: true}, Persistence: &Persistence{Timeout: 300, PrefixLen: 24}, Method: NAT,
				Check: &CheckConfig{Kind: CheckHTTPS, Port: 8443, Interval: Duration(3 * time.Second), Timeout: Duration(1500 * time.Millisecond),
					Jitter: Duration(200 * time.Millisecond), Rise: 2, Fall: 3, Path: "/healthz", Host: "www.example.com",
					ExpectStatus: "200-299,301", BodyRegex: "ok|healthy", TLSVerify: true, ServerName: "www.example.com"},
				DownAction: DownRemove, Quorum: 10, QuorumHysteresis: 2,
				Sorry: &SorryServer{Address: addr("10.0.0.99"), Port: 8080, Method: NAT},
				// 10.0.0.1 is down and the other is drained: no healthy weight.
				QuorumLost: true,
				Servers: servers(
					RealServer{Address: addr("10.0.0.1"), Port: 8080, Method: NAT, Weight: 10, UpperThreshold: 1000, LowerThreshold: 800, Admin: Enabled,
						Health: &Health{State: HealthDown, Index: 40, Views: map[string]string{"d1": HealthDown, "d2": HealthDown, "d3": HealthUnknown}}},
					RealServer{Address: addr("2001:db8:1::1"), Port: 80, Method: TUN, Tunnel: TunnelGUE, TunnelPort: 6080,
						TunnelChecksum: ChecksumRemote, Weight: 5, Admin: Drained,
						Check: &CheckConfig{Kind: CheckDNS, Port: 53, Interval: Duration(time.Second), Timeout: Duration(500 * time.Millisecond),
							Rise: 1, Fall: 2, DNSName: "health.example.com.", DNSType: "AAAA", DNSExpect: "2001:db8::"},
						Health: &Health{State: HealthUp, Index: 41}},
				)},
			"dns": {Name: "dns", VIP: "v4", Protocol: UDP, Port: 53, Family: IPv4, Scheduler: "mh",
				SchedFlags: SchedFlags{MHFallback: true, MHPort: true}, OnePacket: true, Method: DR,
				Check: &CheckConfig{Kind: CheckExec, Interval: Duration(5 * time.Second), Timeout: Duration(2 * time.Second), Rise: 1, Fall: 1,
					Command: "/usr/local/bin/check-dns \"$DIRECTORATE_CHECK_ADDR\""},
				Servers: servers(RealServer{Address: addr("10.0.0.2"), Port: 53, Method: DR, Weight: 1, Admin: Disabled})},
			"fw6": {Name: "fw6", FWMark: MaxFWMark, Family: IPv6, Scheduler: "wlc", Persistence: &Persistence{Timeout: 60}, Method: TUN,
				Servers: servers(RealServer{Address: addr("2001:db8:1::2"), Method: TUN, Tunnel: TunnelGRE, TunnelChecksum: ChecksumOn, Weight: MaxWeight, Admin: Enabled,
					Check: &CheckConfig{Kind: CheckTCP, Port: 22, Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout, Rise: DefaultCheckRise, Fall: DefaultCheckFall}})},
			"fwv": {Name: "fwv", FWMark: 7, VIP: "v6", Family: IPv6, Scheduler: "rr", Method: NAT,
				Servers: servers(RealServer{Address: addr("2001:db8:1::3"), Port: 8443, Method: NAT, Admin: Enabled, Check: &CheckConfig{Kind: CheckNone}})},
			"sctp": {Name: "sctp", VIP: "v6", Protocol: SCTP, Port: 3868, Family: IPv6, Scheduler: "lblcr", Method: DR},
		},
		Tokens: map[string]*Token{
			"ops": {ID: "ops", Role: RoleOperator, Hash: strings.Repeat("0f", 32), Description: "bootstrap",
				Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		},
		Keyring: &Keyring{Primary: KeyFingerprint(bytes.Repeat([]byte{2}, GossipKeyLen)),
			Keys: [][]byte{bytes.Repeat([]byte{1}, GossipKeyLen), bytes.Repeat([]byte{2}, GossipKeyLen)}},
	}
}

// configState is richState without its credentials: what a restore
// through ReplaceState may carry.
func configState(t testing.TB) *State {
	st := richState(t)
	st.Tokens = nil
	st.Keyring = nil
	return st
}

func mustSnapshot(t testing.TB, st *State) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteState(&buf, st); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRichStateSetsEveryField(t *testing.T) {
	set := map[reflect.Type]map[string]bool{}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Map:
			for _, k := range v.MapKeys() {
				walk(v.MapIndex(k))
			}
		case reflect.Struct:
			if v.Type().PkgPath() != reflect.TypeFor[State]().PkgPath() {
				return // netip types
			}
			fields := set[v.Type()]
			if fields == nil {
				fields = map[string]bool{}
				set[v.Type()] = fields
			}
			for i := range v.NumField() {
				if !v.Field(i).IsZero() {
					fields[v.Type().Field(i).Name] = true
				}
				walk(v.Field(i))
			}
		}
	}
	walk(reflect.ValueOf(richState(t)))
	for _, typ := range []reflect.Type{reflect.TypeFor[State](), reflect.TypeFor[VIP](), reflect.TypeFor[Service](),
		reflect.TypeFor[SchedFlags](), reflect.TypeFor[Persistence](), reflect.TypeFor[RealServer](), reflect.TypeFor[Token](), reflect.TypeFor[Keyring](),
		reflect.TypeFor[CheckConfig](), reflect.TypeFor[SorryServer](), reflect.TypeFor[Health]()} {
		for i := range typ.NumField() {
			if name := typ.Field(i).Name; !set[typ][name] {
				t.Errorf("richState never sets %s.%s", typ.Name(), name)
			}
		}
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	want := mustSnapshot(t, richState(t))
	f := New()
	if err := f.Restore(bytes.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if f.Index() != 42 {
		t.Errorf("index after restore = %d, want 42", f.Index())
	}
	got := snapshotBytes(t, f)
	if !bytes.Equal(got, want) {
		t.Errorf("snapshot after restore:\n%s\nwant\n%s", got, want)
	}
	if !reflect.DeepEqual(f.Clone(), richState(t)) {
		t.Errorf("Clone after restore differs from the state restored")
	}
	// Round-trip again through a second FSM.
	g := New()
	if err := g.Restore(bytes.NewReader(got)); err != nil {
		t.Fatal(err)
	}
	if again := snapshotBytes(t, g); !bytes.Equal(again, want) {
		t.Error("second round trip differs")
	}
	// The restored indexes work: conflicts are found, deletes free things.
	h := &harness{t: t, f: g, idx: 42}
	h.refuse(svcCmd(Service{Name: "x", FWMark: MaxFWMark, Family: IPv6, Scheduler: "rr", Method: DR}), "service.fwmark", ErrConflict)
	h.refuse(vipCmd("x", "2001:db8::10/128", ""), "vip.prefix", ErrConflict)
	h.refuse(DeleteVIP{Name: "v6"}, "vip.name", ErrConflict)
}

func TestRestoreRefusesLeavingStateAlone(t *testing.T) {
	rich := mustSnapshot(t, richState(t))
	missingVIP := richState(t)
	delete(missingVIP.VIPs, "v6")
	for _, tc := range []struct {
		name, data, msg string
	}{
		{"garbage", "not json", "decode"},
		{"truncated", string(rich[:len(rich)/2]), "decode"},
		{"unknown field", strings.Replace(string(rich), `"index":42`, `"index":42,"epoch":1`, 1), `unknown field "epoch"`},
		{"unknown nested field", strings.Replace(string(rich), `"interface":"eth0"`, `"interface":"eth0","mtu":9000`, 1), `unknown field "mtu"`},
		{"invalid state", string(mustSnapshot(t, missingVIP)), `services[fwv].vip: VIP "v6" does not exist`},
		{"trailing data", string(rich) + "{}", "decode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := fixture(t)
			ch, cancel := h.f.Subscribe()
			defer cancel()
			before := snapshotBytes(t, h.f)
			err := h.f.Restore(strings.NewReader(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Restore: %v, want an error saying %q", err, tc.msg)
			}
			if after := snapshotBytes(t, h.f); !bytes.Equal(before, after) {
				t.Error("a refused restore changed the state")
			}
			select {
			case idx := <-ch:
				t.Errorf("a refused restore notified index %d", idx)
			default:
			}
			h.mustApply(vipCmd("after", "192.0.2.99/32", "")) // the indexes are intact
		})
	}
}

func TestCloneIsDeep(t *testing.T) {
	f := New()
	if err := f.Restore(bytes.NewReader(mustSnapshot(t, richState(t)))); err != nil {
		t.Fatal(err)
	}
	before := snapshotBytes(t, f)
	c := f.Clone()
	c.Index = 1
	c.VIPs["v4"].Interface = "x"
	c.Services["web"].Persistence.Timeout = 1
	c.Services["web"].Servers["10.0.0.1:8080"].Weight = 1
	c.Services["web"].Servers["new"] = nil
	c.Services["web"].Check.Path = "/changed"
	c.Services["web"].Sorry.Port = 1
	c.Services["web"].Servers["10.0.0.1:8080"].Health.State = HealthUp
	c.Services["web"].Servers["10.0.0.1:8080"].Health.Views["d1"] = HealthUp
	c.Services["web"].Servers["[2001:db8:1::1]:80"].Check.DNSName = "changed."
	delete(c.Services, "dns")
	if after := snapshotBytes(t, f); !bytes.Equal(before, after) {
		t.Error("changing a clone changed the FSM")
	}
}

// logEntry is one Raft entry of a generated log.
type logEntry struct {
	index uint64
	data  []byte
}

// randomLog generates a log of plausible commands, valid and invalid
// alike, from a fixed seed.
func randomLog(t testing.TB, n int, seed uint64) []logEntry {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	vip := func() string { return fmt.Sprintf("v%d", r.IntN(6)) }
	svc := func() string { return fmt.Sprintf("s%d", r.IntN(20)) }
	a := func() netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(3)), byte(1 + r.IntN(5))}) }
	port := func() int { return []int{0, 80, 443, 8080}[r.IntN(4)] }
	method := func() Method { return []Method{"", NAT, DR, TUN}[r.IntN(4)] }
	var log []logEntry
	// known remembers servers the log added, so health updates mostly
	// name servers that may exist.
	var known [][2]string
	for i := range n {
		var cmd Command
		switch r.IntN(16) {
		case 0:
			cmd = AddVIP{VIP: VIP{Name: vip(), Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(8))}), 24+r.IntN(9))}}
		case 1:
			cmd = DeleteVIP{Name: vip(), Force: r.IntN(2) == 0}
		case 2, 3:
			s := Service{Name: svc(), Scheduler: Schedulers()[r.IntN(len(Schedulers()))], Method: method()}
			if r.IntN(4) == 0 {
				s.FWMark, s.Family = int64(1+r.IntN(3)), IPv4
			} else {
				s.VIP, s.Protocol, s.Port = vip(), []Protocol{TCP, UDP}[r.IntN(2)], port()
			}
			if r.IntN(3) == 0 {
				s.Servers = servers(RealServer{Address: a(), Port: port(), Weight: r.IntN(3)})
			}
			if r.IntN(2) == 0 {
				s.Check = &CheckConfig{Kind: CheckTCP, Port: 22}
			}
			for key := range s.Servers {
				known = append(known, [2]string{s.Name, key})
			}
			cmd = AddService{Service: s}
		case 4:
			cmd = UpdateService{Name: svc(), Patch: ServicePatch{Method: ptr(method()), OnePacket: ptr(r.IntN(2) == 0)}}
		case 5:
			cmd = DeleteService{Name: svc()}
		case 6, 7, 8:
			srv := RealServer{Address: a(), Port: port(), Method: method(), Weight: r.IntN(5)}
			c := AddServer{Service: svc(), Server: srv}
			known = append(known, [2]string{c.Service, srv.Key()})
			cmd = c
		case 9, 10:
			cmd = UpdateServer{Service: svc(), Address: a(), Port: port(), Patch: ServerPatch{Weight: ptr(r.IntN(5)), Admin: ptr([]AdminState{Enabled, Drained, Disabled}[r.IntN(3)])}}
		case 11:
			cmd = DeleteServer{Service: svc(), Address: a(), Port: port()}
		case 12, 13:
			var c SetHealth
			for range 1 + r.IntN(3) {
				u := HealthUpdate{Service: svc(), Server: ServerKey(a(), port()),
					State: []string{HealthUp, HealthDown}[r.IntN(2)], Views: map[string]string{"d1": HealthUp}}
				if len(known) > 0 && r.IntN(4) != 0 {
					k := known[max(0, len(known)-1-r.IntN(30))]
					u.Service, u.Server = k[0], k[1]
				}
				c.Updates = append(c.Updates, u)
			}
			cmd = c
		case 14:
			pt := ServicePatch{Quorum: ptr(r.IntN(4)), QuorumHysteresis: ptr(r.IntN(2)),
				DownAction: ptr([]DownAction{DownQuiesce, DownRemove}[r.IntN(2)])}
			switch r.IntN(3) {
			case 0:
				pt.Check = &CheckConfig{Kind: []string{CheckTCP, CheckNone, CheckExec}[r.IntN(3)]}
				if pt.Check.Kind == CheckExec {
					pt.Check.Command = "true"
				}
			case 1:
				pt.NoCheck = true
			}
			if r.IntN(2) == 0 {
				pt.Sorry = &SorryServer{Address: a(), Port: port()}
			} else {
				pt.NoSorry = true
			}
			cmd = UpdateService{Name: svc(), Patch: pt}
		case 15:
			pt := ServerPatch{NoCheck: true}
			if r.IntN(2) == 0 {
				pt = ServerPatch{Check: &CheckConfig{Kind: []string{CheckTCP, CheckNone}[r.IntN(2)], Port: r.IntN(2) * 22}}
			}
			cmd = UpdateServer{Service: svc(), Address: a(), Port: port(), Patch: pt}
		}
		log = append(log, logEntry{uint64(i + 1), mustEncode(t, cmd)})
	}
	return log
}

func TestDeterminism(t *testing.T) {
	log := randomLog(t, 3000, 7)
	a, b := New(), New()
	var applied, refused, withHealth, quorumLost int
	for i, e := range log {
		errA := a.Apply(e.index, e.data)
		errB := b.Apply(e.index, e.data)
		if fmt.Sprint(errA) != fmt.Sprint(errB) {
			t.Fatalf("entry %d: %v vs %v", e.index, errA, errB)
		}
		if errA == nil {
			applied++
		} else {
			refused++
		}
		if i%100 == 99 {
			// Every state Apply reaches passes whole-state validation.
			snap := snapshotBytes(t, a)
			c := New()
			if err := c.Restore(bytes.NewReader(snap)); err != nil {
				t.Fatalf("after entry %d the state does not restore: %v", e.index, err)
			}
			if !bytes.Equal(snapshotBytes(t, c), snap) {
				t.Fatalf("after entry %d restore changed the state", e.index)
			}
			a.Read(func(st *State) {
				for _, svc := range st.Services {
					if svc.QuorumLost {
						quorumLost++
					}
					for _, srv := range svc.Servers {
						if srv.Health != nil {
							withHealth++
						}
					}
				}
			})
		}
	}
	if !bytes.Equal(snapshotBytes(t, a), snapshotBytes(t, b)) {
		t.Error("two FSMs fed the same log differ")
	}
	// The generator must exercise both outcomes to mean anything.
	if applied < 300 || refused < 300 {
		t.Errorf("log too one-sided: %d applied, %d refused", applied, refused)
	}
	if withHealth < 20 || quorumLost < 5 {
		t.Errorf("log too tame: %d servers with health and %d services below quorum at the checkpoints", withHealth, quorumLost)
	}
	t.Logf("%d applied, %d refused; at the checkpoints %d servers had health, %d services were below quorum",
		applied, refused, withHealth, quorumLost)
}

func recv(t *testing.T, ch <-chan uint64) uint64 {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatal("subscription channel closed")
		}
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10s")
	}
	return 0
}

func assertNothingPending(t *testing.T, ch <-chan uint64) {
	t.Helper()
	select {
	case v := <-ch:
		t.Errorf("unexpected notification %d", v)
	default:
	}
}

func TestSubscribe(t *testing.T) {
	h := newHarness(t)
	ch, cancel := h.f.Subscribe()
	ch2, cancel2 := h.f.Subscribe()
	defer cancel2()
	for range 4 {
		h.mustApply(vipCmd(fmt.Sprintf("v%d", h.idx), fmt.Sprintf("192.0.2.%d/32", h.idx+1), ""))
	}
	h.refuse(DeleteVIP{Name: "nope"}, "vip.name", ErrNotFound) // a refused entry notifies too
	if got := recv(t, ch); got != 5 {
		t.Errorf("coalesced notification = %d, want the newest, 5", got)
	}
	assertNothingPending(t, ch)
	h.mustApply(vipCmd("x", "192.0.2.100/32", ""))
	if got := recv(t, ch); got != 6 {
		t.Errorf("notification = %d, want 6", got)
	}
	if err := h.f.Restore(bytes.NewReader(mustSnapshot(t, richState(t)))); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ch); got != 42 {
		t.Errorf("notification after restore = %d, want 42", got)
	}
	if got := recv(t, ch2); got != 42 {
		t.Errorf("second subscriber: %d, want 42", got)
	}
	cancel()
	cancel() // idempotent
	if _, ok := <-ch; ok {
		t.Error("channel still open after cancel")
	}
	if err := h.f.Apply(43, mustEncode(t, DeleteVIP{Name: "v4", Force: true})); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ch2); got != 43 {
		t.Errorf("second subscriber after the first cancelled: %d, want 43", got)
	}
}

// TestConcurrentReadsDuringApply is for the race detector: readers of
// every kind run while entries are applied.
func TestConcurrentReadsDuringApply(t *testing.T) {
	log := randomLog(t, 600, 11)
	f := New()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	reader := func(read func()) {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					read()
				}
			}
		})
	}
	reader(func() {
		f.Read(func(s *State) {
			for _, svc := range s.Services {
				for _, srv := range svc.Servers {
					_ = srv.Weight
				}
			}
		})
	})
	reader(func() { _ = f.Clone() })
	reader(func() { _ = f.Index() })
	reader(func() { _ = f.Check(AddServer{Service: "s1", Server: RealServer{Address: addr("10.0.0.1"), Port: 80}}) })
	reader(func() { _ = f.WriteSnapshot(&bytes.Buffer{}) })
	ch, cancel := f.Subscribe()
	var last uint64
	wg.Go(func() {
		for idx := range ch {
			if idx < last {
				t.Errorf("notification %d after %d", idx, last)
			}
			last = idx
		}
	})
	for _, e := range log {
		_ = f.Apply(e.index, e.data)
	}
	close(stop)
	cancel()
	wg.Wait()
	if f.Index() != uint64(len(log)) {
		t.Errorf("index %d, want %d", f.Index(), len(log))
	}
}
