//go:build linux

package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SorryIP is the sorry server's address on the outside network.
var SorryIP = netip.MustParseAddr("10.0.0.90")

// AddSorryServer adds a real server node named "sorry" on the outside
// network, prepared for DR and TUN like the others, whose realserver
// answers "sorry": a service's --sorry target.
func (c *Cluster) AddSorryServer() *Node {
	c.T.Helper()
	n := c.Lab.AddNode("sorry", Link{Outside, netip.PrefixFrom(SorryIP, OutsideNet.Bits())})
	c.setupDRTUN(n)
	n.Start(filepath.Join(n.Dir, "realserver.log"), filepath.Join(c.Opts.Bin, "realserver"), "-name", "sorry", "-listen", ":80")
	return n
}

// realserverControl is the control listener every realserver opens on its
// node's loopback (see e2e/cmd/realserver).
const realserverControl = "127.0.0.1:9000"

// SetListening stops or restarts the serving listeners of n's realserver,
// through its control listener. Stopped, it refuses new connections, so its
// health checks fail, while established connections are still answered.
// It returns once the realserver has done it.
func SetListening(n *Node, on bool) error {
	path := "/listeners/stop"
	want := "stopped"
	if on {
		path, want = "/listeners/start", "serving"
	}
	var got string
	err := n.Do(func() error {
		// The request is written by hand: net/http's transport dials
		// from goroutines of its own, outside n's namespace.
		conn, err := net.DialTimeout("tcp", realserverControl, 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", path, realserverControl); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
		if err != nil {
			return err
		}
		got = strings.TrimSpace(string(b))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %s: %s", resp.Status, got)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: realserver %s: %w", n.Name, path, err)
	}
	if got != want {
		return fmt.Errorf("%s: realserver %s: state %q, want %q", n.Name, path, got, want)
	}
	return nil
}

// Snapshot is the part of the replicated state the lab checks, `clusterctl
// snapshot save -` as a director serves it from its local state: VIPs,
// services and real servers, with each server's agreed health, the quorum
// and the sorry server.
type Snapshot struct {
	Index uint64 `json:"index"`
	VIPs  map[string]struct {
		Prefix netip.Prefix `json:"prefix"`
	} `json:"vips"`
	Services map[string]HealthService `json:"services"`
}

// HealthService is one service of a Snapshot.
type HealthService struct {
	VIP        string                  `json:"vip"`
	Protocol   string                  `json:"protocol"`
	Port       int                     `json:"port"`
	Scheduler  string                  `json:"scheduler"`
	Method     string                  `json:"method"`
	DownAction string                  `json:"down_action"`
	QuorumLost bool                    `json:"quorum_lost"`
	Sorry      *HealthSorry            `json:"sorry"`
	Servers    map[string]HealthServer `json:"servers"`
}

// HealthSorry is a service's sorry server.
type HealthSorry struct {
	Address netip.Addr `json:"address"`
	Port    int        `json:"port"`
	Method  string     `json:"method"`
}

// HealthServer is one real server of a HealthService.
type HealthServer struct {
	Address netip.Addr `json:"address"`
	Port    int        `json:"port"`
	Method  string     `json:"method"`
	Weight  int        `json:"weight"`
	Admin   string     `json:"admin"`
	Health  *struct {
		State string            `json:"state"`
		Index uint64            `json:"index"`
		Views map[string]string `json:"views"`
	} `json:"health"`
}

// Healthy is the server's agreed health: a server never checked counts as
// up, as in the replicated state's own rule.
func (s HealthServer) Healthy() bool { return s.Health == nil || s.Health.State != "down" }

// State is "up", "down", or "-" before the first agreed result.
func (s HealthServer) State() string {
	if s.Health == nil {
		return "-"
	}
	return s.Health.State
}

// Snapshot reads d's local replicated state.
func (d *Director) Snapshot() (Snapshot, error) {
	out, err := d.Ctl("snapshot", "save", "-")
	if err != nil {
		return Snapshot{}, err
	}
	var s Snapshot
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return Snapshot{}, fmt.Errorf("%s: parse snapshot: %w", d.ID, err)
	}
	return s, nil
}

// Desired is the table s asks every director for, written down here from
// docs/health.md rather than taken from the lvs package, so that the
// kernels are held to the documented rules: disabled servers are absent;
// drained ones have weight 0; a down server has weight 0 (quiesce) or is
// absent (remove, unless drained); a service that lost its quorum has every
// server at weight 0 and its sorry server at weight 1.
func (s Snapshot) Desired() IPVSTable {
	var t IPVSTable
	for _, svc := range s.Services {
		v, ok := s.VIPs[svc.VIP]
		if !ok {
			continue
		}
		key := netip.AddrPortFrom(v.Prefix.Addr(), uint16(svc.Port)).String()
		t = append(t, fmt.Sprintf("svc %s %s %s", svc.Protocol, key, svc.Scheduler))
		sorry := svc.Sorry != nil && svc.QuorumLost
		for _, rs := range svc.Servers {
			if rs.Admin == "disabled" || svc.DownAction == "remove" && !rs.Healthy() && rs.Admin != "drained" {
				continue
			}
			w := rs.Weight
			if rs.Admin == "drained" || !rs.Healthy() || sorry {
				w = 0
			}
			t = append(t, fmt.Sprintf("dst %s %s %s %s %d", svc.Protocol, key,
				netip.AddrPortFrom(rs.Address, uint16(rs.Port)), rs.Method, w))
		}
		if sorry {
			m := svc.Sorry.Method
			if m == "" {
				m = svc.Method
			}
			t = append(t, fmt.Sprintf("dst %s %s %s %s 1", svc.Protocol, key,
				netip.AddrPortFrom(svc.Sorry.Address, uint16(svc.Sorry.Port)), m))
		}
	}
	slices.Sort(t)
	return t
}

// Weights returns the destinations of the virtual service svc ("tcp
// 10.0.0.100:80") in t, by real server address, with their weights.
func (t IPVSTable) Weights(svc string) map[string]int {
	out := map[string]int{}
	for _, line := range t {
		f := strings.Fields(line)
		// dst PROTO SVC RS METHOD WEIGHT
		if len(f) != 6 || f[0] != "dst" || f[1]+" "+f[2] != svc {
			continue
		}
		w, err := strconv.Atoi(f[5])
		if err != nil {
			continue
		}
		out[f[3]] = w
	}
	return out
}

// WaitHealthTables waits until the leader's replicated state satisfies
// cond (nil: anything) and the kernel table of every present director, as
// ipvsadm reads it, equals what that state asks for, health included. It
// returns the state and table it saw. what names the wait in the failure.
func (c *Cluster) WaitHealthTables(timeout time.Duration, leader *Director, what string, cond func(Snapshot) error) (Snapshot, IPVSTable) {
	c.T.Helper()
	var (
		st   Snapshot
		want IPVSTable
		last string
	)
	_, err := TryPoll(timeout, 100*time.Millisecond, func() (bool, error) {
		if err := c.crashed(); err != nil {
			return false, err
		}
		var err error
		st, err = leader.Snapshot()
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if cond != nil {
			if err := cond(st); err != nil {
				last = fmt.Sprintf("state at index %d: %v", st.Index, err)
				return false, nil
			}
		}
		want = st.Desired()
		for _, d := range c.Present() {
			got, err := d.ReadIPVS()
			if err != nil {
				return false, err
			}
			if got.String() != want.String() {
				last = fmt.Sprintf("%s's kernel table\n%s\nwant (index %d)\n%s", d.ID, got, st.Index, want)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		c.T.Fatalf("waiting for %s, with every director's IPVS table matching the replicated state: %v; last seen: %s", what, err, last)
	}
	return st, want
}

// KeepAlive is one HTTP/1.1 connection from a node that stays open across
// requests, as a browser's would: IPVS schedules it once, so every answer
// comes from the same real server until it is closed.
type KeepAlive struct {
	conn    net.Conn
	br      *bufio.Reader
	target  netip.AddrPort
	timeout time.Duration
}

// DialKeepAlive opens a kept-alive connection from n to target; each
// request on it may take up to timeout.
func DialKeepAlive(n *Node, target netip.AddrPort, timeout time.Duration) (*KeepAlive, error) {
	var conn net.Conn
	err := n.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", target.String(), timeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: dial %s: %w", n.Name, target, err)
	}
	return &KeepAlive{conn: conn, br: bufio.NewReader(conn), target: target, timeout: timeout}, nil
}

// Get sends one request on the connection and returns who answered.
func (k *KeepAlive) Get() (string, error) {
	_ = k.conn.SetDeadline(time.Now().Add(k.timeout))
	if _, err := fmt.Fprintf(k.conn, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", k.target); err != nil {
		return "", fmt.Errorf("keep-alive to %s: %w", k.target, err)
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return "", fmt.Errorf("keep-alive to %s: %w", k.target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return "", fmt.Errorf("keep-alive to %s: %w", k.target, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("keep-alive to %s: HTTP %s", k.target, resp.Status)
	}
	if resp.Close {
		return "", fmt.Errorf("keep-alive to %s: the server closed the connection", k.target)
	}
	return strings.TrimSpace(string(body)), nil
}

// LocalAddr is the connection's own address.
func (k *KeepAlive) LocalAddr() net.Addr { return k.conn.LocalAddr() }

// Close closes the connection.
func (k *KeepAlive) Close() error { return k.conn.Close() }

// CtlRun is a clusterctl command running in the background.
type CtlRun struct {
	done   chan struct{}
	out    string
	stderr *stampedLines
	err    error
	// Ended is when it exited.
	Ended time.Time
}

// StartCtl runs clusterctl inside d with d's credentials in the
// background, for commands that wait (`server drain --wait`); it is
// killed after timeout. What it writes to stderr is kept line by line with
// the time each line came, since a waiting command reports its progress
// there.
func (d *Director) StartCtl(timeout time.Duration, args ...string) *CtlRun {
	r := &CtlRun{done: make(chan struct{}), stderr: &stampedLines{}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	argv := append([]string{"netns", "exec", d.NS, filepath.Join(d.bin, "clusterctl"), "--addr", d.API}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Env = d.OperatorCredentials().env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, r.stderr
	go func() {
		defer cancel()
		if err := cmd.Run(); err != nil {
			r.err = fmt.Errorf("clusterctl %s on %s: %w: %s%s", strings.Join(args, " "), d.ID, err, r.stderr, out.String())
		}
		r.out = out.String()
		r.Ended = time.Now()
		close(r.done)
	}()
	d.lab.t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// Done is closed once the command has exited.
func (r *CtlRun) Done() <-chan struct{} { return r.done }

// Result waits for the command and returns its output and error.
func (r *CtlRun) Result() (string, error) {
	<-r.done
	return r.out, r.err
}

// Stderr is what the command wrote to stderr so far, each line with the
// time it came.
func (r *CtlRun) Stderr() string { return r.stderr.String() }

// stampedLines keeps written lines with the time each was completed.
type stampedLines struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
}

func (s *stampedLines) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().Format("15:04:05.000")
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.lines = append(s.lines, now+" "+string(s.partial[:i]))
		s.partial = s.partial[i+1:]
	}
	return len(p), nil
}

func (s *stampedLines) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(append(slices.Clone(s.lines), string(s.partial)), "\n")
}

// Conns is the kernel's connection counters of one destination.
type Conns struct{ Active, Inactive int }

// ReadConns reads the connection counters of real server rs ("10.0.0.11:80")
// of the TCP virtual service svc ("10.0.0.100:80") from n's kernel table
// with ipvsadm; ok is false if n's table has no such destination.
func (n *Node) ReadConns(svc, rs string) (c Conns, ok bool, err error) {
	out, err := n.Run("ipvsadm", "-Ln", "-t", svc)
	if err != nil {
		return Conns{}, false, err
	}
	for line := range strings.SplitSeq(out, "\n") {
		// "  -> 10.0.0.11:80  Route  1  0  12": weight, active, inactive
		f := strings.Fields(line)
		if len(f) != 6 || f[0] != "->" || f[1] != rs {
			continue
		}
		a, err1 := strconv.Atoi(f[4])
		i, err2 := strconv.Atoi(f[5])
		if err1 != nil || err2 != nil {
			return Conns{}, false, fmt.Errorf("%s: ipvsadm -Ln: unexpected line %q", n.Name, line)
		}
		return Conns{Active: a, Inactive: i}, true, nil
	}
	return Conns{}, false, nil
}
