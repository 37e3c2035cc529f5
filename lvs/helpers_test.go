package lvs

import (
	"errors"
	"fmt"
	"github.com/directorate/directorate/internal/testlog"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/directorate/directorate/fsm"
)

func testLogger(t testing.TB) *slog.Logger { return testlog.Logger(t) }

// fakeClock is a settable clock for the resync interval.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newState returns a state with an IPv4 VIP "v4" (10.0.0.1) and an IPv6
// VIP "v6" (2001:db8::1).
func newState() *fsm.State {
	return &fsm.State{
		Index: 1,
		VIPs: map[string]*fsm.VIP{
			"v4": {Name: "v4", Prefix: netip.MustParsePrefix("10.0.0.1/24")},
			"v6": {Name: "v6", Prefix: netip.MustParsePrefix("2001:db8::1/64")},
		},
		Services: map[string]*fsm.Service{},
	}
}

// tcpService returns a wlc NAT service on vip:port.
func tcpService(name, vip string, port int) *fsm.Service {
	return &fsm.Service{
		Name: name, VIP: vip, Protocol: fsm.TCP, Port: port,
		Scheduler: "wlc", Method: fsm.NAT,
		Servers: map[string]*fsm.RealServer{},
	}
}

// addServer adds an enabled server with the service's method.
func addServer(s *fsm.Service, addr string, port, weight int) *fsm.RealServer {
	rs := &fsm.RealServer{Address: netip.MustParseAddr(addr), Port: port, Weight: weight, Admin: fsm.Enabled}
	s.Servers[rs.Key()] = rs
	return rs
}

// bigState returns services×servers: service i listens on 10.x.y.z:80 of
// its own VIP and balances to servers 10.1.0.0 onwards, port 8080.
func bigState(services, servers int) *fsm.State {
	st := &fsm.State{Index: 1, VIPs: make(map[string]*fsm.VIP, services), Services: make(map[string]*fsm.Service, services)}
	for i := range services {
		vip := fmt.Sprintf("vip%d", i)
		addr := netip.AddrFrom4([4]byte{10, 128 + byte(i>>16), byte(i >> 8), byte(i)})
		st.VIPs[vip] = &fsm.VIP{Name: vip, Prefix: netip.PrefixFrom(addr, 32)}
		s := tcpService(fmt.Sprintf("svc%d", i), vip, 80)
		for j := range servers {
			n := i*servers + j
			addServer(s, netip.AddrFrom4([4]byte{10, 1 + byte(n>>16), byte(n >> 8), byte(n)}).String(), 8080, 1+j)
		}
		st.Services[s.Name] = s
	}
	return st
}

func mustDesired(t testing.TB, st *fsm.State) *Desired {
	t.Helper()
	d, err := DesiredFromState(st)
	if err != nil {
		t.Fatalf("DesiredFromState: %v", err)
	}
	return d
}

// requireInSync fails unless the backend's table matches d.
func requireInSync(t *testing.T, d *Desired, b Backend) {
	t.Helper()
	tab, err := b.List(t.Context())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	rep := Diff(d, tab, nil)
	if !rep.InSync {
		for _, s := range rep.Services {
			if s.State != InSync || len(s.Dests) > 0 {
				t.Logf("%s %q: %s", s.Key, s.Name, s.State)
				for _, dd := range s.Dests {
					if dd.State != InSync {
						t.Logf("  %s: %s", dd.Addr, dd.State)
					}
				}
			}
		}
		t.Fatalf("backend is not in sync with the desired table")
	}
}

var errTest = errors.New("injected failure")
