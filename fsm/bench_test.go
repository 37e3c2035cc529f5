package fsm

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
)

// bigState is a site of nsvc services with nsrv real servers each, on
// 100-service VIPs.
func bigState(nsvc, nsrv int) *State {
	st := NewState()
	for i := range nsvc {
		v := i / 100
		vipName := fmt.Sprintf("v%03d", v)
		if st.VIPs[vipName] == nil {
			a := netip.AddrFrom4([4]byte{198, 18, byte(v >> 8), byte(v)})
			st.VIPs[vipName] = &VIP{Name: vipName, Prefix: netip.PrefixFrom(a, 32)}
		}
		svc := &Service{Name: fmt.Sprintf("s%05d", i), VIP: vipName, Protocol: TCP, Port: 1000 + i%100,
			Family: IPv4, Scheduler: "wlc", Method: NAT, Servers: map[string]*RealServer{}}
		for j := range nsrv {
			srv := &RealServer{Address: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(j + 1)}), Port: 8080,
				Method: NAT, Weight: 1, Admin: Enabled}
			svc.Servers[srv.Key()] = srv
		}
		st.Services[svc.Name] = svc
	}
	return st
}

func bigFSM(b *testing.B, nsvc, nsrv int) *FSM {
	b.Helper()
	f := New()
	if err := f.Restore(bytes.NewReader(mustSnapshot(b, bigState(nsvc, nsrv)))); err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkApplyServerWeight is the common config change, a weight
// change, committed against a 10,000 × 10 site: it must not cost O(state).
func BenchmarkApplyServerWeight(b *testing.B) {
	f := bigFSM(b, 10_000, 10)
	var entries [2][]byte
	for i := range entries {
		entries[i] = mustEncode(b, UpdateServer{Service: "s05000", Address: netip.AddrFrom4([4]byte{10, 5000 >> 8, 5000 & 0xff, 3}),
			Port: 8080, Patch: ServerPatch{Weight: ptr(2 + i)}})
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := f.Apply(uint64(i+1), entries[i&1]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyAddService adds services (with 10 servers each) to a
// 10,000 × 10 site; each one is deleted again so the state stays the
// same size.
func BenchmarkApplyAddService(b *testing.B) {
	f := bigFSM(b, 10_000, 10)
	svc := bigState(1, 10).Services["s00000"]
	svc.Name, svc.VIP, svc.Port = "new", "v000", 80
	add := mustEncode(b, AddService{Service: *svc})
	del := mustEncode(b, DeleteService{Name: "new"})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := f.Apply(uint64(2*i+1), add); err != nil {
			b.Fatal(err)
		}
		if err := f.Apply(uint64(2*i+2), del); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClone(b *testing.B) {
	f := bigFSM(b, 10_000, 10)
	b.ReportAllocs()
	for b.Loop() {
		_ = f.Clone()
	}
}

func BenchmarkWriteSnapshot(b *testing.B) {
	f := bigFSM(b, 10_000, 10)
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := f.WriteSnapshot(&buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "bytes/snapshot")
}

func BenchmarkRestore(b *testing.B) {
	snap := mustSnapshot(b, bigState(10_000, 10))
	f := New()
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Restore(bytes.NewReader(snap)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplySetHealth commits a batch of 100 health transitions, one
// server in each of 100 services, against a 10,000 × 10 site where every
// server is checked and every service has a quorum: the cost must follow
// the batch (and the touched services' size), not the state.
func BenchmarkApplySetHealth(b *testing.B) {
	st := bigState(10_000, 10)
	for _, svc := range st.Services {
		svc.Check = &CheckConfig{Kind: CheckTCP, Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout,
			Rise: DefaultCheckRise, Fall: DefaultCheckFall}
		svc.Quorum = 10
	}
	f := New()
	if err := f.Restore(bytes.NewReader(mustSnapshot(b, st))); err != nil {
		b.Fatal(err)
	}
	var entries [2][]byte
	for i, state := range []string{HealthDown, HealthUp} {
		var c SetHealth
		for s := range 100 {
			n := s * 100
			c.Updates = append(c.Updates, HealthUpdate{Service: fmt.Sprintf("s%05d", n),
				Server: ServerKey(netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), 3}), 8080), State: state,
				Views: map[string]string{"d1": state, "d2": state, "d3": HealthUnknown}})
		}
		entries[i] = mustEncode(b, c)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := f.Apply(uint64(i+1), entries[i&1]); err != nil {
			b.Fatal(err)
		}
	}
	f.Read(func(st *State) {
		if st.Services["s00100"].QuorumUp() == (b.N%2 == 1) {
			b.Fatalf("after %d batches, quorum up is %t", b.N, st.Services["s00100"].QuorumUp())
		}
	})
}
