package fsm

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
func ptr[T any](v T) *T         { return &v }

func servers(rs ...RealServer) map[string]*RealServer {
	m := make(map[string]*RealServer, len(rs))
	for i := range rs {
		m[rs[i].Key()] = &rs[i]
	}
	return m
}

func mustEncode(t testing.TB, cmd Command) []byte {
	t.Helper()
	data, err := Encode(cmd)
	if err != nil {
		t.Fatalf("Encode(%#v): %v", cmd, err)
	}
	return data
}

// harness feeds an FSM encoded commands with increasing indexes, as Raft
// would.
type harness struct {
	t   *testing.T
	f   *FSM
	idx uint64
}

func newHarness(t *testing.T) *harness { return &harness{t: t, f: New()} }

func (h *harness) apply(cmd Command) error {
	h.t.Helper()
	h.idx++
	return h.f.Apply(h.idx, mustEncode(h.t, cmd))
}

func (h *harness) mustApply(cmds ...Command) {
	h.t.Helper()
	for _, c := range cmds {
		if err := h.apply(c); err != nil {
			h.t.Fatalf("apply %s: %v", c.Type(), err)
		}
	}
}

// stateBytes is the snapshot of f with Index zeroed: what a refused
// command must leave unchanged.
func stateBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	st := f.Clone()
	st.Index = 0
	var buf bytes.Buffer
	if err := WriteState(&buf, st); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := f.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// refuse applies cmd and asserts it is refused with a FieldError naming
// field, of kind, that Check predicted the same error, that the entry still
// advanced the index, and that the state is byte for byte unchanged.
func (h *harness) refuse(cmd Command, field string, kind error) *FieldError {
	h.t.Helper()
	before := stateBytes(h.t, h.f)
	checkErr := h.f.Check(cmd)
	err := h.apply(cmd)
	var fe *FieldError
	if !errors.As(err, &fe) {
		h.t.Fatalf("apply %s: got %v, want a FieldError on %s", cmd.Type(), err, field)
	}
	if fe.Field != field || !errors.Is(err, kind) {
		h.t.Errorf("apply %s: got %q (kind %v), want field %s kind %v", cmd.Type(), err, fe.Kind, field, kind)
	}
	if fe.Reason == "" {
		h.t.Errorf("apply %s: empty reason", cmd.Type())
	}
	if checkErr == nil || checkErr.Error() != err.Error() {
		h.t.Errorf("Check said %v, Apply said %v", checkErr, err)
	}
	if got := h.f.Index(); got != h.idx {
		h.t.Errorf("index after a refused entry = %d, want %d", got, h.idx)
	}
	if after := stateBytes(h.t, h.f); !bytes.Equal(before, after) {
		h.t.Errorf("refused %s changed the state:\nbefore %s\nafter  %s", cmd.Type(), before, after)
	}
	return fe
}

func (h *harness) service(name string) *Service {
	h.t.Helper()
	var svc *Service
	h.f.Read(func(s *State) {
		if got := s.Services[name]; got != nil {
			svc = got.Clone()
		}
	})
	if svc == nil {
		h.t.Fatalf("service %q missing", name)
	}
	return svc
}

func (h *harness) server(service, key string) RealServer {
	h.t.Helper()
	srv := h.service(service).Servers[key]
	if srv == nil {
		h.t.Fatalf("server %s missing from %s", key, service)
	}
	return *srv
}

// fixture is a small state most cases start from:
//
//	v4    192.0.2.10/24 on eth0      web   v4 tcp 80, wlc, nat, 10.0.0.1:8080
//	v6    2001:db8::10/64            dns   v4 udp 53, rr, dr
//	spare 192.0.2.20/32              fw    fwmark 7 inet, sh (sh_port), dr
//	                                 web6  v6 tcp 443, mh, tun
func fixture(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	h.mustApply(
		AddVIP{VIP: VIP{Name: "v4", Prefix: pfx("192.0.2.10/24"), Interface: "eth0"}},
		AddVIP{VIP: VIP{Name: "v6", Prefix: pfx("2001:db8::10/64")}},
		AddVIP{VIP: VIP{Name: "spare", Prefix: pfx("192.0.2.20/32")}},
		AddService{Service: Service{Name: "web", VIP: "v4", Protocol: TCP, Port: 80, Scheduler: "wlc", Method: NAT,
			Servers: servers(RealServer{Address: addr("10.0.0.1"), Port: 8080, Weight: 1})}},
		AddService{Service: Service{Name: "dns", VIP: "v4", Protocol: UDP, Port: 53, Scheduler: "rr", Method: DR}},
		AddService{Service: Service{Name: "fw", FWMark: 7, Family: IPv4, Scheduler: "sh", SchedFlags: SchedFlags{SHPort: true}, Method: DR}},
		AddService{Service: Service{Name: "web6", VIP: "v6", Protocol: TCP, Port: 443, Scheduler: "mh", Method: TUN}},
	)
	return h
}
