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
	// Prober is which of the staggered arping processes got it.
	Prober int
}

// ARPWatch runs iputils' arping from a node and records each reply with
// the MAC that sent it: the client's own view of who answers for the VIP.
// This arping's interval is whole seconds, so Probers processes run
// staggered across the second to sample more often.
type ARPWatch struct {
	cmds []*exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	replies []ARPReply
}

// ARPProbers is how many staggered arping processes an ARPWatch runs: one
// broadcast request every 200 ms between them.
const ARPProbers = 5

var arpReplyLine = regexp.MustCompile(`reply from (\S+) \[([0-9A-Fa-f:]{17})\]`)

// StartARPWatch starts arping for ip on n's eth0. -b keeps every request a
// broadcast, so every director holding the address answers each one.
func StartARPWatch(n *Node, ip netip.Addr) *ARPWatch {
	n.lab.t.Helper()
	w := &ARPWatch{done: make(chan struct{})}
	var wg sync.WaitGroup
	for i := range ARPProbers {
		if i > 0 {
			time.Sleep(time.Second / ARPProbers)
		}
		// stdbuf: arping's stdout is a pipe here, which it would otherwise
		// buffer until it exits, and each reply's arrival time matters.
		cmd := exec.Command("ip", "netns", "exec", n.NS, "stdbuf", "-oL", "arping", "-b", "-I", "eth0", ip.String())
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			n.lab.t.Fatalf("lab: arping: %v", err)
		}
		errc := make(chan error, 1)
		n.lab.spawns <- func() { errc <- cmd.Start() }
		if err := <-errc; err != nil {
			n.lab.t.Fatalf("lab: start arping: %v", err)
		}
		w.cmds = append(w.cmds, cmd)
		wg.Go(func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				m := arpReplyLine.FindStringSubmatch(sc.Text())
				if m == nil || m[1] != ip.String() {
					continue
				}
				w.mu.Lock()
				w.replies = append(w.replies, ARPReply{At: time.Now(), MAC: strings.ToLower(m[2]), Prober: i})
				w.mu.Unlock()
			}
			_ = cmd.Wait()
		})
	}
	go func() {
		wg.Wait()
		close(w.done)
	}()
	n.lab.t.Cleanup(w.Stop)
	return w
}

// Stop ends arping.
func (w *ARPWatch) Stop() {
	for _, c := range w.cmds {
		_ = c.Process.Kill()
	}
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
// moments two MACs answered the same request (replies to one arping
// process from different MACs less than half its one-second interval
// apart), and Overlap is the time from the
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
	prev := map[int]ARPReply{}
	for _, r := range rs {
		if !seen[r.MAC] {
			seen[r.MAC] = true
			o.MACs = append(o.MACs, r.MAC)
		}
		if p, ok := prev[r.Prober]; ok && p.MAC != r.MAC && r.At.Sub(p.At) < 500*time.Millisecond {
			o.Conflicts++
			if firstConflict.IsZero() {
				firstConflict = p.At
			}
			lastConflict = r.At
		}
		prev[r.Prober] = r
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
