//go:build linux

// Command demo shows a person Directorate working, inside the e2e VM (`make
// demo` boots it): three directors come up, clusterctl creates a service,
// the client's requests through the VIP alternate between real servers, the
// leader is killed, and the failover time is printed, with `clusterctl
// status` before and after.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/directorate/directorate/e2e/lab"
)

// errFatal unwinds the demo after a fatal step; the message is printed.
var errFatal = errors.New("demo failed")

// demoT is the lab's T for a program: it prints, and Fatalf unwinds to run.
type demoT struct {
	cleanups []func()
	failed   bool
}

func (t *demoT) Helper()                         {}
func (t *demoT) Logf(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }
func (t *demoT) Errorf(format string, args ...any) {
	t.failed = true
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", args...)
}
func (t *demoT) Fatalf(format string, args ...any) {
	t.Errorf(format, args...)
	panic(errFatal)
}
func (t *demoT) Cleanup(fn func()) { t.cleanups = append(t.cleanups, fn) }
func (t *demoT) Failed() bool      { return t.failed }

func (t *demoT) close() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

func main() {
	bin := flag.String("bin", "bin", "directory holding clusterd, clusterctl and realserver")
	flag.Parse()
	if os.Getenv("DIRECTORATE_IN_VM") != "1" {
		fmt.Fprintln(os.Stderr, "demo: runs inside the e2e VM: use `make demo`")
		os.Exit(2)
	}
	t := &demoT{}
	code := 0
	func() {
		defer func() {
			if r := recover(); r != nil {
				if r != errFatal {
					panic(r)
				}
				code = 1
			}
		}()
		run(t, *bin)
	}()
	t.close()
	if t.failed {
		code = 1
	}
	os.Exit(code)
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

// show runs clusterctl on d and prints the command and its output.
func show(d *lab.Director, args ...string) {
	fmt.Printf("$ clusterctl %s        # on %s\n", strings.Join(args, " "), d.ID)
	fmt.Print(indent(d.MustCtl(args...)))
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

func run(t *demoT, bin string) {
	dir, err := os.MkdirTemp("", "demo-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	step("Building the lab: every node is a container (network, mount, PID and UTS namespaces) on a bridge")
	fmt.Println("    directors d1 d2 d3 (10.0.0.1-3), real servers rs1 rs2 rs3 (10.0.0.11-13, LVS-DR),")
	fmt.Println("    a client (10.0.0.200) and a gateway (10.0.0.254). The kernel's IPVS does the forwarding.")
	fmt.Println("    Raft timeouts are 1 s/1 s/500 ms: the default profile scaled to this emulated CPU.")
	fmt.Println("    Secure mode, as in production: `clusterd tls init` wrote a CA, one certificate per director,")
	fmt.Println("    a gossip key and a bootstrap token; raft runs over mutual TLS, gossip is encrypted, and")
	fmt.Println("    clusterctl speaks HTTPS with DIRECTORATE_CA and DIRECTORATE_TOKEN_FILE set.")
	c := lab.NewCluster(t, lab.Options{Bin: bin, Dir: dir, Director: lab.DirectorOptions{
		Heartbeat: time.Second, Election: time.Second, Lease: 500 * time.Millisecond}})

	step("Three directors come up and find each other by gossip")
	start := time.Now()
	leader := c.WaitLeader(90 * time.Second)
	fmt.Printf("    a leader was elected %s after start\n", time.Since(start).Round(100*time.Millisecond))
	show(leader, "status")

	step("Creating a service with clusterctl (any director will do)")
	d2 := c.Dirs[1]
	show(d2, "vip", "add", "web", lab.WebVIP.String())
	show(d2, "service", "add", "web", "--vip", "web", "--port", "80", "--scheduler", "rr", "--method", "dr")
	for _, rs := range c.Servers {
		show(d2, "server", "add", "web", netip.AddrPortFrom(rs.IP(), 80).String())
	}
	leader = c.WaitSettled(60*time.Second, lab.WebVIP.Addr())
	c.WaitTables(30*time.Second, leader, 0)
	fmt.Printf("    every director's kernel table now matches; %s holds the VIP. Its ipvsadm -Ln:\n", leader.ID)
	fmt.Print(indent(leader.IPVSList()))

	step("The client's requests through the VIP %s", lab.WebVIP.Addr())
	target := netip.AddrPortFrom(lab.WebVIP.Addr(), 80)
	var answers []string
	for range 9 {
		who, err := lab.Get(c.Client, target, 2*time.Second)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		answers = append(answers, who)
	}
	fmt.Printf("    answered by: %s\n", strings.Join(answers, " "))

	step("Killing the leader %s (clusterd SIGKILLed, its links cut) while the client sends a request every 20 ms", leader.ID)
	cl := lab.StartClient(c.Client, target, 20*time.Millisecond, 2*time.Second)
	cl.WaitAnswer(t, time.Now(), 10*time.Second, "the client's first answer", func(string) bool { return true })
	time.Sleep(time.Second)
	t0 := time.Now()
	leader.Kill()
	leader.SetLinks(false)
	c.SetAway(leader, true)
	next := c.WaitSettled(60*time.Second, lab.WebVIP.Addr())
	var o lab.Outage
	lab.Poll(t, 60*time.Second, 100*time.Millisecond, "traffic to flow again", func() (bool, error) {
		var ok bool
		o, ok = cl.OutageSince(t0, time.Now().Add(-2*time.Second))
		return ok && time.Since(t0) > o.Duration+3*time.Second, nil
	})
	cl.Stop()
	fmt.Printf("    %s took over. Failover as the client saw it: %s (%d requests failed, %d answered since the kill)\n",
		next.ID, o.Duration.Round(time.Millisecond), o.Failed, o.Answered)
	fmt.Println("    (measured under emulation: see docs/benchmarks.md)")
	show(next, "status")

	step("Requests through the VIP after the failover")
	answers = answers[:0]
	for range 6 {
		who, err := lab.Get(c.Client, target, 2*time.Second)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		answers = append(answers, who)
	}
	fmt.Printf("    answered by: %s\n", strings.Join(answers, " "))
	step("Done: the lab is torn down with the VM")
}
