package probestest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/directorate/directorate/probes"
)

// Reply is a scripted answer to one ping.
type Reply struct {
	// RTT is returned when Err is nil.
	RTT time.Duration
	// Err fails the ping; use one wrapping probes.ErrTimeout to mimic a
	// silent target.
	Err error
}

// Call is one recorded Ping.
type Call struct {
	Addr    netip.Addr
	Timeout time.Duration
	// At is the time of the Pinger's clock when Ping was called.
	At time.Time
}

// Pinger is a fake probes.Pinger. Each address answers with its scripted
// replies, one per ping, then with its standing reply; an address with
// neither times out. A blocked address holds its pings until released.
type Pinger struct {
	now func() time.Time

	mu       sync.Mutex
	standing map[netip.Addr]Reply
	scripts  map[netip.Addr][]Reply
	gates    map[netip.Addr]chan struct{}
	calls    []Call
	blocked  int
}

var _ probes.Pinger = (*Pinger)(nil)

// NewPinger returns a Pinger that stamps calls with now (zero times if nil).
func NewPinger(now func() time.Time) *Pinger {
	return &Pinger{
		now:      now,
		standing: make(map[netip.Addr]Reply),
		scripts:  make(map[netip.Addr][]Reply),
		gates:    make(map[netip.Addr]chan struct{}),
	}
}

// Timeout is the error a silent address returns.
func Timeout(addr netip.Addr) error {
	return fmt.Errorf("fake ping %s: %w", addr, probes.ErrTimeout)
}

// Set makes r the standing reply of addr.
func (p *Pinger) Set(addr netip.Addr, r Reply) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.standing[addr] = r
}

// SetReachable makes addr answer (in 1 ms) or time out from now on.
func (p *Pinger) SetReachable(addr netip.Addr, up bool) {
	r := Reply{RTT: time.Millisecond}
	if !up {
		r = Reply{Err: Timeout(addr)}
	}
	p.Set(addr, r)
}

// Script queues one-off outcomes for addr's next pings, true for an
// answer in 1 ms and false for a timeout, ahead of its standing reply.
func (p *Pinger) Script(addr netip.Addr, ups ...bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, up := range ups {
		r := Reply{RTT: time.Millisecond}
		if !up {
			r = Reply{Err: Timeout(addr)}
		}
		p.scripts[addr] = append(p.scripts[addr], r)
	}
}

// Block holds pings to addr, as a target that takes long to time out
// would, until release is called or their context ends; they then answer
// as scripted.
func (p *Pinger) Block(addr netip.Addr) (release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	gate := make(chan struct{})
	p.gates[addr] = gate
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.gates[addr] == gate {
				delete(p.gates, addr)
			}
			close(gate)
		})
	}
}

// Blocked counts the pings now held by Block.
func (p *Pinger) Blocked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blocked
}

// Calls returns every Ping so far, in call order.
func (p *Pinger) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// CallsTo counts the pings sent to addr.
func (p *Pinger) CallsTo(addr netip.Addr) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.calls {
		if c.Addr == addr {
			n++
		}
	}
	return n
}

// Ping implements probes.Pinger.
func (p *Pinger) Ping(ctx context.Context, addr netip.Addr, timeout time.Duration) (time.Duration, error) {
	c := Call{Addr: addr, Timeout: timeout}
	if p.now != nil {
		c.At = p.now()
	}
	p.mu.Lock()
	p.calls = append(p.calls, c)
	gate := p.gates[addr]
	if gate != nil {
		p.blocked++
	}
	p.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
		p.mu.Lock()
		p.blocked--
		p.mu.Unlock()
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("fake ping %s: %w", addr, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.standing[addr]
	if q := p.scripts[addr]; len(q) > 0 {
		r, ok, p.scripts[addr] = q[0], true, q[1:]
	}
	if !ok {
		r = Reply{Err: Timeout(addr)}
	}
	if r.Err != nil {
		return 0, r.Err
	}
	return r.RTT, nil
}
