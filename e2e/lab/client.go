//go:build linux

package lab

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
)

// Sample is one HTTP request the client sent through the VIP.
type Sample struct {
	At  time.Time     // when it was sent
	RTT time.Duration // until the answer, or the failure
	Who string        // the real server that answered; empty on failure
	Err string
}

// OK reports whether the request was answered.
func (s Sample) OK() bool { return s.Err == "" }

// Client sends an HTTP request to a target every interval from a node,
// each on a new TCP connection (so every request is scheduled anew, and a
// failover shows as failed requests), and records every one.
type Client struct {
	target   netip.AddrPort
	interval time.Duration
	timeout  time.Duration
	stop     chan struct{}
	wg       sync.WaitGroup

	mu      sync.Mutex
	samples []Sample
	skipped int
}

// clientWorkers run requests concurrently, so that one request waiting
// out its timeout never delays the next tick.
const clientWorkers = 24

// StartClient starts requests from n to target every interval; each may
// take up to timeout. Stop ends them.
func StartClient(n *Node, target netip.AddrPort, interval, timeout time.Duration) *Client {
	n.lab.t.Helper()
	c := &Client{target: target, interval: interval, timeout: timeout, stop: make(chan struct{})}
	ticks := make(chan time.Time)
	ready := make(chan error, clientWorkers)
	for range clientWorkers {
		c.wg.Go(func() { c.worker(n.Handle, ticks, ready) })
	}
	for range clientWorkers {
		if err := <-ready; err != nil {
			close(c.stop)
			c.wg.Wait()
			n.lab.t.Fatalf("lab: client: %v", err)
		}
	}
	c.wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case now := <-t.C:
				select {
				case ticks <- now:
				default:
					c.mu.Lock()
					c.skipped++
					c.mu.Unlock()
				}
			}
		}
	})
	n.lab.t.Cleanup(c.Stop)
	return c
}

// Stop ends the requests; it is safe to call more than once.
func (c *Client) Stop() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	c.wg.Wait()
}

// worker sends requests from a thread locked in the client's namespace:
// sockets are created in the namespace of the thread that creates them.
// The thread is discarded when the goroutine ends.
func (c *Client) worker(ns netns.NsHandle, ticks <-chan time.Time, ready chan<- error) {
	runtime.LockOSThread()
	if err := netns.Set(ns); err != nil {
		ready <- fmt.Errorf("enter the client namespace: %w", err)
		return
	}
	ready <- nil
	d := net.Dialer{Timeout: c.timeout}
	for {
		select {
		case <-c.stop:
			return
		case <-ticks:
		}
		s := c.request(&d)
		c.mu.Lock()
		c.samples = append(c.samples, s)
		c.mu.Unlock()
	}
}

func (c *Client) request(d *net.Dialer) Sample {
	start := time.Now()
	s := Sample{At: start}
	who, err := get(d, c.target, start.Add(c.timeout))
	s.RTT = time.Since(start)
	if err != nil {
		s.Err = err.Error()
	} else {
		s.Who = who
	}
	return s
}

// get sends one HTTP/1.1 GET on a fresh connection and returns the body.
func get(d *net.Dialer, target netip.AddrPort, deadline time.Time) (string, error) {
	conn, err := d.Dial("tcp", target.String())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %s", resp.Status)
	}
	return strings.TrimSpace(string(body)), nil
}

// Get sends one request from n to target and returns the answer: for
// checks outside a running Client.
func Get(n *Node, target netip.AddrPort, timeout time.Duration) (string, error) {
	var who string
	err := n.Do(func() error {
		var err error
		who, err = get(&net.Dialer{Timeout: timeout}, target, time.Now().Add(timeout))
		return err
	})
	return who, err
}

// Samples returns a copy of the samples so far, in the order they finished.
func (c *Client) Samples() []Sample {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Sample(nil), c.samples...)
}

// Since returns the samples sent at or after t, ordered by send time.
func (c *Client) Since(t time.Time) []Sample {
	var out []Sample
	for _, s := range c.Samples() {
		if !s.At.Before(t) {
			out = append(out, s)
		}
	}
	sortSamples(out)
	return out
}

// WaitAnswer waits until a request sent at or after since is answered by a
// server match accepts, and returns it.
func (c *Client) WaitAnswer(t T, since time.Time, timeout time.Duration, what string, match func(who string) bool) Sample {
	t.Helper()
	var got Sample
	Poll(t, timeout, 10*time.Millisecond, what, func() (bool, error) {
		for _, s := range c.Since(since) {
			if s.OK() && match(s.Who) {
				got = s
				return true, nil
			}
		}
		return false, nil
	})
	return got
}

// Outage is the client's view of an interruption that began at t0.
// Duration is the longest stretch without an answer: over every run of
// failed requests sent after t0, from the first of them being sent to the
// moment the next request was answered. Isolated failures
// count as short stretches, not as an outage lasting until the last of
// them. Failed and Answered count the requests sent after t0.
type Outage struct {
	Duration time.Duration
	Failed   int
	Answered int
}

// OutageSince measures the outage after t0 over requests sent before
// until. ok is false if a failed run has no answer after it yet.
func (c *Client) OutageSince(t0, until time.Time) (Outage, bool) {
	var o Outage
	var from time.Time
	inRun := false
	for _, s := range c.Since(t0) {
		if !s.At.Before(until) {
			break
		}
		if !s.OK() {
			o.Failed++
			if !inRun {
				from = s.At
			}
			inRun = true
			continue
		}
		o.Answered++
		if inRun {
			if d := s.At.Add(s.RTT).Sub(from); d > o.Duration {
				o.Duration = d
			}
			inRun = false
		}
	}
	return o, !inRun
}

// Report summarises the samples for a failure report: counts per server
// and every failure with its time.
func (c *Client) Report() string {
	ss := c.Samples()
	sortSamples(ss)
	var b strings.Builder
	per := map[string]int{}
	var fails []string
	for _, s := range ss {
		if s.OK() {
			per[s.Who]++
		} else if len(fails) < 200 {
			fails = append(fails, fmt.Sprintf("  %s %s", s.At.Format("15:04:05.000"), s.Err))
		}
	}
	c.mu.Lock()
	skipped := c.skipped
	c.mu.Unlock()
	fmt.Fprintf(&b, "client: %d requests to %s, answers per server %v, %d failed, %d ticks skipped (every worker busy)\n",
		len(ss), c.target, per, len(ss)-sum(per), skipped)
	b.WriteString(strings.Join(fails, "\n"))
	return b.String()
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func sortSamples(ss []Sample) {
	slices.SortStableFunc(ss, func(a, b Sample) int { return a.At.Compare(b.At) })
}
