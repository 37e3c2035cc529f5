package netns

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	e2elab "github.com/directorate/directorate/e2e/lab"
)

var directorLogs = flag.Bool("director-logs", false, "log every director's output at the end of each test, not only of failed ones")

// Each director's ports; each director has a namespace, so they repeat.
const (
	raftPort   = 7001
	gossipPort = 7002
	apiPort    = 7003
	// servicePort is where every director answers TCP with its node ID:
	// the stand-in for the service behind the VIP, which the dry-run IPVS
	// backend cannot forward.
	servicePort = 8080
)

// vipName and vipPrefix are the one VIP the scenarios move around. It sits
// in the directors' own subnet, so the VIP backend finds eth0 by subnet.
const vipName = "web"

var vipPrefix = netip.MustParsePrefix("192.0.2.100/24")

// settings are the parts of clusterd's configuration a scenario varies.
type settings struct {
	profile  string        // timing.profile
	fence    string        // vip.fence
	lifetime time.Duration // vip.lifetime
	// burstInterval is vip.burst_interval; zero keeps the default.
	burstInterval time.Duration
	// extra is appended to every director's configuration.
	extra string
}

// director is one clusterd process in its own namespace.
type director struct {
	*host
	id     string
	api    string
	dir    string
	config string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been reaped
	// away marks a director that runs but cannot take part: stopped or
	// cut off. The cluster's agreement is checked without it.
	away bool
}

func (d *director) setAway(away bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.away = away
}

// present reports whether d runs and takes part in the cluster.
func (d *director) present() bool {
	d.mu.Lock()
	away := d.away
	d.mu.Unlock()
	return !away && d.running()
}

func (d *director) running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// cluster is three directors and a client on one lab bridge.
type cluster struct {
	tb     testing.TB
	lab    *lab
	dirs   []*director
	client *host
	probe  *prober
	spawns chan func()
}

// spawn runs start, which forks a process, on the cluster's spawner thread.
func (c *cluster) spawn(start func() error) error {
	errc := make(chan error, 1)
	c.spawns <- func() { errc <- start() }
	return <-errc
}

// newCluster builds the lab, starts three directors with set, waits for a
// leader, adds the VIP and waits until the leader alone holds it and
// answers the client.
func newCluster(tb testing.TB, set settings) (*cluster, *director) {
	tb.Helper()
	const n = 3
	names := []string{"client"}
	addrs := []netip.Addr{clientIP}
	for i := range n {
		names = append(names, fmt.Sprintf("d%d", i+1))
		addrs = append(addrs, netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}))
	}
	l := newLab(tb, names, addrs)
	c := &cluster{tb: tb, lab: l, client: l.hosts[0], spawns: make(chan func())}
	// The spawner's thread must outlive the directors it forks, whose
	// Pdeathsig fires when it ends: it is locked, so no other goroutine
	// can end it, and it stops only after the directors are killed.
	spawned := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(spawned)
		for fn := range c.spawns {
			fn()
		}
	}()
	tb.Cleanup(func() {
		close(c.spawns)
		<-spawned
	})
	root := tb.TempDir()
	var join []string
	for _, h := range l.hosts[1:] {
		join = append(join, netip.AddrPortFrom(h.ip, gossipPort).String())
	}
	for _, h := range l.hosts[1:] {
		d := &director{host: h, id: h.name, api: netip.AddrPortFrom(h.ip, apiPort).String(), dir: filepath.Join(root, h.name)}
		if err := os.MkdirAll(d.dir, 0o755); err != nil {
			tb.Fatal(err)
		}
		d.config = filepath.Join(d.dir, "clusterd.yaml")
		burst := ""
		if set.burstInterval != 0 {
			burst = fmt.Sprintf("  burst_interval: %s\n", set.burstInterval)
		}
		cfg := fmt.Sprintf(`node_id: %s
data_dir: %s
raft_addr: %s
gossip_addr: %s
api_addr: %s
bootstrap_expect: %d
join: [%s]
timing:
  profile: %s
lvs:
  backend: dry-run
vip:
  backend: kernel
  fence: %s
  lifetime: %s
%slog:
  level: debug
# The HA suite measures failover; the smoke suite covers secure mode.
insecure: true
%s`, d.id, filepath.Join(d.dir, "data"), netip.AddrPortFrom(h.ip, raftPort), netip.AddrPortFrom(h.ip, gossipPort),
			d.api, n, strings.Join(join, ", "), set.profile, set.fence, set.lifetime, burst, set.extra)

		if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
			tb.Fatal(err)
		}
		c.dirs = append(c.dirs, d)
	}
	tb.Cleanup(func() {
		for _, d := range c.dirs {
			c.kill(d)
		}
		if tb.Failed() || *directorLogs {
			for _, d := range c.dirs {
				b, _ := os.ReadFile(filepath.Join(d.dir, "clusterd.log"))
				tb.Logf("---- %s log ----\n%s", d.id, b)
			}
		}
	})
	for _, d := range c.dirs {
		c.serve(d)
		c.start(d)
	}
	c.probe = startProber(tb, c.client, vipPrefix.Addr())
	first := c.waitLeader(30 * time.Second)
	c.mustCtl(first, "vip", "add", vipName, vipPrefix.String())
	return c, c.waitSettled(nil, 20*time.Second)
}

// serve answers TCP on servicePort in d's namespace with d's node ID. The
// listener belongs to the test, not to clusterd, so it outlives a killed or
// stopped clusterd just as a real director's IPVS table does: the client is
// answered by whichever director the VIP's traffic reaches.
func (c *cluster) serve(d *director) {
	c.tb.Helper()
	var ln net.Listener
	err := inNetns(d.handle, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", servicePort))
		return err
	})
	if err != nil {
		c.tb.Fatalf("%s: listen on :%d: %v", d.id, servicePort, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = conn.Write([]byte(d.id + "\n"))
			_ = conn.Close()
		}
	})
	c.tb.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

// start runs clusterd in d's namespace; its output goes to clusterd.log.
func (c *cluster) start(d *director) {
	c.tb.Helper()
	f, err := os.OpenFile(filepath.Join(d.dir, "clusterd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.tb.Fatal(err)
	}
	// ip netns exec execs clusterd in place, so cmd's pid is clusterd's
	// and signals reach it directly.
	cmd := exec.Command("ip", "netns", "exec", d.ns, filepath.Join(*binDir, "clusterd"), "-config", d.config)
	cmd.Stdout, cmd.Stderr = f, f
	// A test binary that dies must not leave directors behind. The signal
	// follows the death of the forking thread, not of the process: spawn
	// forks from a thread that lives as long as the cluster.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.spawn(cmd.Start); err != nil {
		f.Close()
		c.tb.Fatalf("start %s: %v", d.id, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(exited)
	}()
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
}

// signal sends sig to d's clusterd.
func (c *cluster) signal(d *director, sig syscall.Signal) {
	c.tb.Helper()
	d.mu.Lock()
	cmd := d.cmd
	d.mu.Unlock()
	if cmd == nil {
		c.tb.Fatalf("signal %s: %s is not running", sig, d.id)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		c.tb.Fatalf("signal %s to %s: %v", sig, d.id, err)
	}
}

// kill SIGKILLs d's clusterd, stopped or not, and reaps it.
func (c *cluster) kill(d *director) {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		c.tb.Errorf("%s (pid %d) did not exit within 10s of SIGKILL", d.id, cmd.Process.Pid)
	}
}

// ctl runs clusterctl in d's namespace against d's API.
func (c *cluster) ctl(d *director, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	argv := append([]string{"netns", "exec", d.ns, filepath.Join(*binDir, "clusterctl"), "--addr", d.api}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func (c *cluster) mustCtl(d *director, args ...string) string {
	c.tb.Helper()
	out, errs, err := c.ctl(d, args...)
	if err != nil {
		c.tb.Fatalf("clusterctl %s on %s: %v: %s%s", strings.Join(args, " "), d.id, err, errs, out)
	}
	return out
}

// status is the part of `clusterctl status -o json` the scenarios read.
type status struct {
	Node   string `json:"node"`
	State  string `json:"state"`
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
	Voters int    `json:"voters"`
}

// status asks d for its view of the cluster; ok is false if d does not
// answer.
func (c *cluster) status(d *director) (status, bool) {
	out, _, err := c.ctl(d, "status", "-o", "json", "--timeout", "1s")
	if err != nil {
		return status{}, false
	}
	var env struct {
		Data status `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &env); err != nil || env.Data.Node == "" {
		c.tb.Logf("status of %s: unexpected output %q (%v)", d.id, out, err)
		return status{}, false
	}
	return env.Data, true
}

func (c *cluster) byID(id string) *director {
	for _, d := range c.dirs {
		if d.id == id {
			return d
		}
	}
	return nil
}

// agreedLeader returns the leader every running director names, if they
// agree and it is running.
func (c *cluster) agreedLeader() (*director, bool) {
	leader := ""
	for _, d := range c.dirs {
		if !d.present() {
			continue
		}
		st, ok := c.status(d)
		if !ok || st.Leader == "" || (leader != "" && st.Leader != leader) {
			return nil, false
		}
		leader = st.Leader
	}
	d := c.byID(leader)
	if d == nil || !d.present() {
		return nil, false
	}
	return d, true
}

// waitLeader polls until every running director names the same running
// leader.
func (c *cluster) waitLeader(timeout time.Duration) *director {
	c.tb.Helper()
	var leader *director
	e2elab.Poll(c.tb, timeout, 50*time.Millisecond, "every running director to name one leader", func() (bool, error) {
		var ok bool
		leader, ok = c.agreedLeader()
		return ok, nil
	})
	return leader
}

// holders lists the directors whose eth0 carries the VIP.
func (c *cluster) holders() ([]*director, error) {
	var out []*director
	for _, d := range c.dirs {
		_, ok, err := d.addr(vipPrefix.Addr())
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// waitSettled waits until the cluster is whole around leader (nil: around
// whichever director leads): every director running and naming it, the VIP
// on its eth0 and on no other director's, and the client answered by it.
// It returns the leader.
func (c *cluster) waitSettled(leader *director, timeout time.Duration) *director {
	c.tb.Helper()
	want := "the leader"
	if leader != nil {
		want = leader.id
	}
	deadline := time.Now().Add(timeout)
	state := "no agreed leader"
	var settledOn *director
	settled, err := e2elab.TryPoll(timeout, 50*time.Millisecond, func() (bool, error) {
		for _, d := range c.dirs {
			if !d.running() {
				return false, fmt.Errorf("%s: %w", d.id, errExited)
			}
			if !d.present() {
				return false, fmt.Errorf("%s is stopped or cut off: the cluster cannot be whole", d.id)
			}
		}
		l, ok := c.agreedLeader()
		if !ok {
			state = "no agreed leader"
			return false, nil
		}
		h, err := c.holders()
		if err != nil {
			return false, err
		}
		var held []string
		for _, d := range h {
			held = append(held, d.id)
		}
		state = fmt.Sprintf("leader %s, VIP on %v", l.id, held)
		if (leader != nil && l != leader) || len(h) != 1 || h[0] != l {
			return false, nil
		}
		settledOn = l
		return true, nil
	})
	if err != nil {
		c.tb.Fatalf("waiting for %s alone to hold the VIP with every director following it: %v; last seen: %s", want, err, state)
	}
	c.probe.waitAnswer(c.tb, settled, time.Until(deadline)+time.Second, settledOn.id+" to answer the client",
		func(who string) bool { return who == settledOn.id })
	return settledOn
}

// killLeader SIGKILLs leader's clusterd and returns the director that
// answers the client next, with the client-observed failover time: from the
// kill to the first answer from another director.
func (c *cluster) killLeader(leader *director, timeout time.Duration) (*director, time.Duration, time.Time) {
	c.tb.Helper()
	t0 := time.Now()
	c.kill(leader)
	a := c.probe.waitAnswer(c.tb, t0, timeout, "another director to answer the client", func(who string) bool { return who != leader.id })
	next := c.byID(a.who)
	if next == nil {
		c.tb.Fatalf("the client was answered by unknown director %q", a.who)
	}
	return next, a.at.Sub(t0), t0
}

// logExcerpt returns the lines of d's log that contain any of words.
func (d *director) logExcerpt(words ...string) string {
	f, err := os.Open(filepath.Join(d.dir, "clusterd.log"))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		for _, w := range words {
			if strings.Contains(sc.Text(), w) {
				b.WriteString(sc.Text())
				b.WriteByte('\n')
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		b.WriteString(err.Error())
	}
	return b.String()
}
