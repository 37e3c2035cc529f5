// Package smoke starts three clusterd processes on 127.0.0.x with the
// dry-run IPVS backend and drives them with clusterctl, as an operator
// would: the built binaries are all it uses.
package smoke

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directorate/directorate/internal/testpoll"
)

var binDir = flag.String("bin", "", "directory holding the clusterd and clusterctl binaries")

type director struct {
	id, api, dir, config string
	cmd                  *exec.Cmd
	log                  *os.File
}

type cluster struct {
	t         *testing.T
	directors []*director
	// pki is the directory `clusterd tls init` wrote the cluster's
	// certificates, gossip key and bootstrap token to.
	pki string
	// env is clusterctl's environment: the CA, a client certificate and
	// the bootstrap operator token.
	env []string
}

// tlsInit runs `clusterd tls init` for ids into dir, as an operator sets
// up a cluster.
func tlsInit(t *testing.T, dir string, ids []string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(*binDir, "clusterd"), "tls", "init", "-dir", dir, "-nodes", strings.Join(ids, ",")).CombinedOutput()
	if err != nil {
		t.Fatalf("clusterd tls init: %v\n%s", err, out)
	}
}

// securityConfig is the configuration block tls init printed for id.
func securityConfig(pki, id string) string {
	return fmt.Sprintf("tls: {ca: %s, cert: %s, key: %s}\ngossip_key_file: %s\nbootstrap_token_file: %s\n",
		filepath.Join(pki, "ca.pem"), filepath.Join(pki, id+".pem"), filepath.Join(pki, id+"-key.pem"),
		filepath.Join(pki, "gossip.key"), filepath.Join(pki, "bootstrap-token"))
}

func freePort(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatalf("find a free port on %s: %v", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	if *binDir == "" {
		t.Skip("-bin not given: run through `make smoke`")
	}
	c := &cluster{t: t}
	root := t.TempDir()
	// The suite runs in secure mode, set up as the docs say: tls init.
	c.pki = filepath.Join(root, "pki")
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("d%d", i+1))
	}
	tlsInit(t, c.pki, ids)
	c.env = []string{"DIRECTORATE_CA=" + filepath.Join(c.pki, "ca.pem"), "DIRECTORATE_CERT=" + filepath.Join(c.pki, "clusterctl.pem"),
		"DIRECTORATE_KEY=" + filepath.Join(c.pki, "clusterctl-key.pem"), "DIRECTORATE_TOKEN_FILE=" + filepath.Join(c.pki, "bootstrap-token")}
	var gossip []string
	type addrs struct{ raft, gossip, api string }
	all := make([]addrs, n)
	for i := range all {
		host := fmt.Sprintf("127.0.0.%d", i+1)
		all[i] = addrs{
			raft:   fmt.Sprintf("%s:%d", host, freePort(t, host)),
			gossip: fmt.Sprintf("%s:%d", host, freePort(t, host)),
			api:    fmt.Sprintf("%s:%d", host, freePort(t, host)),
		}
		gossip = append(gossip, all[i].gossip)
	}
	for i, a := range all {
		d := &director{id: fmt.Sprintf("d%d", i+1), api: a.api, dir: filepath.Join(root, fmt.Sprintf("d%d", i+1))}
		if err := os.MkdirAll(d.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		d.config = filepath.Join(d.dir, "clusterd.yaml")
		cfg := fmt.Sprintf(`node_id: %s
data_dir: %s
raft_addr: %s
gossip_addr: %s
api_addr: %s
bootstrap_expect: %d
join: [%s]
timing:
  profile: fast
lvs:
  backend: dry-run
  resync_interval: 5s
vip:
  backend: dry-run
# A plain file stands in for /dev/watchdog: the writes land, the timeout
# ioctl is refused and tolerated.
watchdog:
  device: %s
ping_nodes: [127.0.0.1]
ping:
  interval: 200ms
hooks:
  on_leader: ['echo "$DIRECTORATE_ROLE $DIRECTORATE_TERM $DIRECTORATE_VIPS" >> %[9]s']
  on_quorum_lost: ['echo "$DIRECTORATE_ROLE $DIRECTORATE_SERVICE" >> %[9]s']
  on_quorum_regained: ['echo "$DIRECTORATE_ROLE $DIRECTORATE_SERVICE" >> %[9]s']
log:
  level: debug
%s`, d.id, filepath.Join(d.dir, "data"), a.raft, a.gossip, a.api, n, strings.Join(gossip, ", "),
			filepath.Join(d.dir, "watchdog"), filepath.Join(d.dir, "hooks.log"), securityConfig(c.pki, d.id))
		if err := os.WriteFile(filepath.Join(d.dir, "watchdog"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		c.directors = append(c.directors, d)
	}
	t.Cleanup(func() {
		for _, d := range c.directors {
			c.kill(d)
		}
		if t.Failed() {
			for _, d := range c.directors {
				b, _ := os.ReadFile(filepath.Join(d.dir, "clusterd.log"))
				t.Logf("---- %s log ----\n%s", d.id, b)
			}
		}
	})
	return c
}

func (c *cluster) start(d *director) {
	c.t.Helper()
	f, err := os.OpenFile(filepath.Join(d.dir, "clusterd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	d.log = f
	d.cmd = exec.Command(filepath.Join(*binDir, "clusterd"), "-config", d.config)
	d.cmd.Stdout, d.cmd.Stderr = f, f
	if err := d.cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", d.id, err)
	}
}

func (c *cluster) kill(d *director) {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Kill()
	_ = d.cmd.Wait()
	d.cmd = nil
	d.log.Close()
}

// stop sends SIGTERM and waits for a clean exit.
func (c *cluster) stop(d *director) {
	c.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatalf("signal %s: %v", d.id, err)
	}
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			c.t.Errorf("%s exited uncleanly after SIGTERM: %v", d.id, err)
		}
	case <-time.After(20 * time.Second):
		c.t.Errorf("%s did not exit within 20s of SIGTERM", d.id)
		_ = d.cmd.Process.Kill()
		<-done
	}
	d.cmd = nil
	d.log.Close()
}

// ctl runs clusterctl against director d and returns stdout, stderr and the
// exit code.
func (c *cluster) ctl(d *director, args ...string) (string, string, int) {
	c.t.Helper()
	return c.ctlEnv(d, c.env, args...)
}

// ctlEnv runs clusterctl with the environment env instead of the
// cluster's credentials.
func (c *cluster) ctlEnv(d *director, env []string, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(*binDir, "clusterctl"), append([]string{"--addr", d.api}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run clusterctl: %v", err)
	}
	return out.String(), errb.String(), code
}

func (c *cluster) mustCtl(d *director, args ...string) string {
	c.t.Helper()
	out, errs, code := c.ctl(d, args...)
	if code != 0 {
		c.t.Fatalf("clusterctl %s on %s: exit %d: %s%s", strings.Join(args, " "), d.id, code, errs, out)
	}
	return out
}

type status struct {
	Node   string `json:"node"`
	State  string `json:"state"`
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
	Index  uint64 `json:"index"`
	VIPs   []struct {
		Name   string `json:"name"`
		Holder string `json:"holder"`
	} `json:"vips"`
}

// holds reports whether director d says it holds the VIP named name.
func (c *cluster) holds(d *director, name string) bool {
	st, ok := c.status(d)
	if !ok {
		return false
	}
	for _, v := range st.VIPs {
		if v.Name == name {
			return v.Holder == d.id
		}
	}
	return false
}

// onlyHolder waits until the leader, and no other director, holds the VIP.
func (c *cluster) onlyHolder(leader *director, name string) {
	c.t.Helper()
	waitFor(c.t, 10*time.Second, leader.id+" alone to hold "+name, func() bool {
		for _, d := range c.directors {
			if d.cmd != nil && c.holds(d, name) != (d == leader) {
				return false
			}
		}
		return true
	})
}

func (c *cluster) status(d *director) (status, bool) {
	out, _, code := c.ctl(d, "status", "-o", "json", "--timeout", "2s")
	if code != 0 {
		return status{}, false
	}
	// -o json prints the API's {index, data} envelope.
	var env struct {
		Data status `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &env); err != nil || env.Data.Node == "" {
		c.t.Logf("status of %s: unexpected output %q (%v)", d.id, out, err)
		return status{}, false
	}
	return env.Data, true
}

// waitLeader polls until every running director agrees on one leader.
func (c *cluster) waitLeader(timeout time.Duration) *director {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		leader, agreed := "", true
		for _, d := range c.directors {
			if d.cmd == nil {
				continue
			}
			st, ok := c.status(d)
			if !ok || st.Leader == "" || (leader != "" && st.Leader != leader) {
				agreed = false
				break
			}
			leader = st.Leader
		}
		if agreed && leader != "" {
			for _, d := range c.directors {
				if d.id == leader && d.cmd != nil {
					return d
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("no agreed leader within %s", timeout)
	return nil
}

// waitFor polls fn until it holds, and logs a long wait.
func waitFor(t *testing.T, timeout time.Duration, what string, fn func() bool) {
	t.Helper()
	start := time.Now()
	testpoll.Until(t, timeout, 100*time.Millisecond, what, fn)
	if waited := time.Since(start); waited > time.Second {
		t.Logf("waited %s for %s", waited.Round(time.Millisecond), what)
	}
}

func serviceJSON(c *cluster, d *director) string {
	out, _, code := c.ctl(d, "service", "show", "web", "-o", "json")
	if code != 0 {
		return ""
	}
	var v struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Data) == 0 {
		c.t.Logf("service show on %s: unexpected output %q (%v)", d.id, out, err)
		return ""
	}
	return string(v.Data)
}

func TestThreeDirectors(t *testing.T) {
	c := newCluster(t, 3)
	for _, d := range c.directors {
		c.start(d)
	}
	begin := time.Now()
	phase := func(name string) { t.Logf("%6s %s", time.Since(begin).Round(10*time.Millisecond), name) }
	leader := c.waitLeader(30 * time.Second)
	t.Logf("leader: %s", leader.id)

	// Change the configuration through a follower: writes are forwarded.
	var follower *director
	for _, d := range c.directors {
		if d != leader {
			follower = d
			break
		}
	}
	c.mustCtl(follower, "vip", "add", "web-vip", "192.0.2.10/24")
	c.mustCtl(follower, "service", "add", "web", "--vip", "web-vip", "--proto", "tcp", "--port", "80", "--scheduler", "wrr", "--method", "nat")
	c.mustCtl(follower, "server", "add", "web", "10.1.0.1:8080", "--weight", "3")
	c.mustCtl(leader, "server", "add", "web", "10.1.0.2:8080")
	c.mustCtl(follower, "server", "set", "web", "10.1.0.2:8080", "--weight", "5")

	phase("A bad request is refused")
	// A bad request is refused with the field named, and changes nothing.
	_, errs, code := c.ctl(follower, "server", "add", "web", "10.1.0.3:8080", "--method", "dr")
	if code == 0 || !strings.Contains(errs, "port") {
		t.Fatalf("a DR port remap was not refused with a message naming the port: exit %d, %q", code, errs)
	}

	c.onlyHolder(leader, "web-vip")
	hookRan := func(d *director, vips string) func() bool {
		return func() bool {
			b, _ := os.ReadFile(filepath.Join(d.dir, "hooks.log"))
			return strings.Contains(string(b), "leader ") && strings.Contains(string(b), vips)
		}
	}
	waitFor(t, 10*time.Second, "the on_leader hook to run on "+leader.id, hookRan(leader, ""))
	waitFor(t, 10*time.Second, leader.id+" to pet its watchdog", func() bool {
		b, _ := os.ReadFile(filepath.Join(leader.dir, "watchdog"))
		return len(b) > 0
	})

	phase("A planned handover moves")
	// Every director probes its ping node and announces the score.
	waitFor(t, 10*time.Second, "every director's ping score in member ls", func() bool {
		out, _, code := c.ctl(follower, "member", "ls", "-o", "json")
		return code == 0 && strings.Count(out, `"ping_max": 1`) == 3 && strings.Count(out, `"ping_score": 1`) == 3
	})

	// A planned handover moves leadership and the VIP together.
	c.mustCtl(follower, "leader", "transfer", "--to", follower.id)
	if got := c.waitLeader(10 * time.Second); got != follower {
		t.Fatalf("leader after transfer to %s: %s", follower.id, got.id)
	}
	c.onlyHolder(follower, "web-vip")
	waitFor(t, 10*time.Second, "the on_leader hook to run on "+follower.id+" with the VIP", hookRan(follower, "192.0.2.10"))
	leader, follower = follower, leader

	want := serviceJSON(c, leader)
	if !strings.Contains(want, "10.1.0.2:8080") || strings.Contains(want, "10.1.0.3") {
		t.Fatalf("leader's service is not what was configured: %s", want)
	}
	for _, d := range c.directors {
		waitFor(t, 10*time.Second, d.id+" to converge", func() bool { return serviceJSON(c, d) == want })
	}

	phase("Every director programs")
	// Every director programs its (dry-run) IPVS table: hot standby.
	for _, d := range c.directors {
		waitFor(t, 10*time.Second, d.id+"'s IPVS table in sync", func() bool {
			out, _, code := c.ctl(d, "ipvs", "show", "-o", "json")
			return code == 0 && strings.Contains(out, `"in_sync": true`) && strings.Contains(out, "10.1.0.2:8080")
		})
	}

	phase("Kill the leader:")
	// Kill the leader: the others elect a new one, and the state is intact.
	// waitLeader only returns a running director that every running one
	// names, so the killed leader cannot be it.
	c.kill(leader)
	newLeader := c.waitLeader(30 * time.Second)
	t.Logf("new leader after SIGKILL: %s", newLeader.id)
	c.onlyHolder(newLeader, "web-vip")
	if got := serviceJSON(c, newLeader); got != want {
		t.Fatalf("state changed across failover:\nwant %s\ngot  %s", want, got)
	}
	c.mustCtl(newLeader, "server", "drain", "web", "10.1.0.1:8080")
	want = serviceJSON(c, newLeader)

	phase("The killed director rejoins")
	// The killed director rejoins and catches up.
	c.start(leader)
	waitFor(t, 20*time.Second, "the restarted director to catch up", func() bool { return serviceJSON(c, leader) == want })

	phase("Restart every director:")
	// Restart every director: nothing is lost.
	for _, d := range c.directors {
		start := time.Now()
		c.stop(d)
		t.Logf("%s stopped in %s", d.id, time.Since(start).Round(time.Millisecond))
	}
	for _, d := range c.directors {
		c.start(d)
	}
	phase("all restarted")
	final := c.waitLeader(30 * time.Second)
	phase("leader after restart: " + final.id)
	c.onlyHolder(final, "web-vip")
	for _, d := range c.directors {
		waitFor(t, 20*time.Second, d.id+" to recover its state", func() bool { return serviceJSON(c, d) == want })
	}
	phase("state recovered")
	c.mustCtl(final, "vip", "ls")
	out := c.mustCtl(final, "status")
	t.Logf("status after full restart:\n%s", out)
}
