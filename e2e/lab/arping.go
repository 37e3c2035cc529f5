//go:build linux

package lab

import (
	"bufio"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ARPReply is one reply to the client's arping for the VIP.
type ARPReply struct {
	At  time.Time
	MAC string
}

// ARPWatch runs iputils' arping from a node, broadcasting a request for
// an address every interval and recording each reply with the MAC that
// sent it: the client's own view of who answers for the VIP.
type ARPWatch struct {
	cmd      *exec.Cmd
	done     chan struct{}
	interval time.Duration

	mu      sync.Mutex
	replies []ARPReply
}

var arpReplyLine = regexp.MustCompile(`reply from (\S+) \[([0-9A-Fa-f:]{17})\]`)

// StartARPWatch starts arping for ip on n's eth0. -b keeps every request a
// broadcast, so every director holding the address answers each one.
func StartARPWatch(n *Node, ip netip.Addr, interval time.Duration) *ARPWatch {
	n.lab.t.Helper()
	w := &ARPWatch{done: make(chan struct{}), interval: interval}
	w.cmd = exec.Command("ip", "netns", "exec", n.NS, "arping", "-b", "-I", "eth0",
		"-i", fmt.Sprintf("%.3f", interval.Seconds()), ip.String())
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		n.lab.t.Fatalf("lab: arping: %v", err)
	}
	errc := make(chan error, 1)
	n.lab.spawns <- func() { errc <- w.cmd.Start() }
	if err := <-errc; err != nil {
		n.lab.t.Fatalf("lab: start arping: %v", err)
	}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			m := arpReplyLine.FindStringSubmatch(sc.Text())
			if m == nil || m[1] != ip.String() {
				continue
			}
			w.mu.Lock()
			w.replies = append(w.replies, ARPReply{At: time.Now(), MAC: strings.ToLower(m[2])})
			w.mu.Unlock()
		}
		_ = w.cmd.Wait()
	}()
	n.lab.t.Cleanup(w.Stop)
	return w
}

// Stop ends arping.
func (w *ARPWatch) Stop() {
	_ = w.cmd.Process.Kill()
	<-w.done
}

// Replies returns the replies so far.
func (w *ARPWatch) Replies() []ARPReply {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ARPReply(nil), w.replies...)
}

// Overlap is what the replies say about split brain. MACs are the
// distinct MACs in the order they first answered. Conflicts counts the
// moments two MACs answered the same request (replies from different MACs
// less than half an interval apart), and Overlap is the time from the
// first such moment to the last: zero means at no sampled moment did two
// directors answer for the address.
type Overlap struct {
	MACs      []string
	Conflicts int
	Overlap   time.Duration
	Replies   int
}

// Analyse computes the Overlap of the replies so far.
func (w *ARPWatch) Analyse() Overlap {
	rs := w.Replies()
	o := Overlap{Replies: len(rs)}
	seen := map[string]bool{}
	var firstConflict, lastConflict time.Time
	for i, r := range rs {
		if !seen[r.MAC] {
			seen[r.MAC] = true
			o.MACs = append(o.MACs, r.MAC)
		}
		if i > 0 && rs[i-1].MAC != r.MAC && r.At.Sub(rs[i-1].At) < w.interval/2 {
			o.Conflicts++
			if firstConflict.IsZero() {
				firstConflict = rs[i-1].At
			}
			lastConflict = r.At
		}
	}
	if o.Conflicts > 0 {
		o.Overlap = lastConflict.Sub(firstConflict)
	}
	return o
}

// String shows o for the scenario logs.
func (o Overlap) String() string {
	return fmt.Sprintf("%d ARP replies from MACs %v, %d requests answered by two MACs, overlap %s",
		o.Replies, o.MACs, o.Conflicts, o.Overlap.Round(time.Millisecond))
}
