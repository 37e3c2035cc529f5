package smoke

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// backend is a real server: an HTTP listener on loopback in the test
// process that can be stopped and started again on the same address.
type backend struct {
	t    *testing.T
	addr string
	srv  *http.Server
	done chan struct{}
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{t: t, addr: l.Addr().String()}
	b.serve(l)
	t.Cleanup(b.stop)
	return b
}

func (b *backend) serve(l net.Listener) {
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok", b.addr)
	}), ReadHeaderTimeout: 5 * time.Second}
	b.done = make(chan struct{})
	go func() {
		defer close(b.done)
		if err := b.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.t.Errorf("backend %s: %v", b.addr, err)
		}
	}()
}

func (b *backend) stop() {
	if b.srv == nil {
		return
	}
	_ = b.srv.Close()
	<-b.done
	b.srv = nil
}

func (b *backend) start() {
	b.t.Helper()
	l, err := net.Listen("tcp", b.addr)
	if err != nil {
		b.t.Fatalf("restart backend %s: %v", b.addr, err)
	}
	b.serve(l)
}

// ipvsDests returns director d's desired IPVS destinations of service web,
// by address, with their weights; ok is false when the table is not in
// sync (the reconciler has not caught up) or cannot be read.
func (c *cluster) ipvsDests(d *director) (map[string]int, bool) {
	out, _, code := c.ctl(d, "ipvs", "show", "-o", "json")
	if code != 0 {
		return nil, false
	}
	var rep struct {
		Data struct {
			InSync   bool `json:"in_sync"`
			Services []struct {
				Name         string `json:"name"`
				Destinations []struct {
					Address string `json:"address"`
					Actual  *struct {
						Weight int `json:"weight"`
					} `json:"actual"`
				} `json:"destinations"`
			} `json:"services"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Data.InSync {
		return nil, false
	}
	dests := map[string]int{}
	for _, s := range rep.Data.Services {
		if s.Name != "web" {
			continue
		}
		for _, dd := range s.Destinations {
			if dd.Actual != nil {
				dests[dd.Address] = dd.Actual.Weight
			}
		}
	}
	return dests, true
}

// waitDests waits until every director's kernel table (dry-run) has
// exactly want for service web, and returns how long that took.
func (c *cluster) waitDests(what string, want map[string]int) time.Duration {
	c.t.Helper()
	start := time.Now()
	for _, d := range c.directors {
		waitFor(c.t, 20*time.Second, d.id+": "+what, func() bool {
			got, ok := c.ipvsDests(d)
			if !ok || len(got) != len(want) {
				return false
			}
			for k, w := range want {
				if gw, ok := got[k]; !ok || gw != w {
					return false
				}
			}
			return true
		})
	}
	return time.Since(start)
}

// TestHealthChecks runs HTTP checks of three real servers listening on
// loopback in this process, against three directors with the dry-run
// IPVS backend: a stopped server goes to weight 0 on every director, all
// of them stopped hand the traffic to the sorry server and run the
// quorum hook on the leader, and restarting them brings them back.
func TestHealthChecks(t *testing.T) {
	c := newCluster(t, 3)
	for _, d := range c.directors {
		c.start(d)
	}
	leader := c.waitLeader(30 * time.Second)
	var follower *director
	for _, d := range c.directors {
		if d != leader {
			follower = d
			break
		}
	}
	backends := []*backend{newBackend(t), newBackend(t), newBackend(t)}
	const sorry = "127.0.0.9:80"
	c.mustCtl(follower, "vip", "add", "web-vip", "192.0.2.20/24")
	c.mustCtl(follower, "service", "add", "web", "--vip", "web-vip", "--port", "80", "--method", "nat",
		"--check", "http", "--check-path", "/health", "--check-interval", "200ms", "--check-timeout", "100ms",
		"--check-rise", "1", "--check-fall", "2", "--sorry", sorry)
	all := map[string]int{}
	for _, b := range backends {
		c.mustCtl(follower, "server", "add", "web", b.addr)
		all[b.addr] = 1
	}

	// Every director checks every server, and the agreed state is
	// committed with each director's view.
	waitFor(t, 20*time.Second, "the first agreed health of every server", func() bool {
		out, _, code := c.ctl(follower, "server", "ls", "web", "-o", "json")
		return code == 0 && strings.Count(out, `"state": "up"`) == 3
	})
	c.waitDests("every server at its weight", all)
	out := c.mustCtl(follower, "server", "ls", "web")
	t.Logf("server ls on %s:\n%s", follower.id, out)
	for _, d := range c.directors {
		if !strings.Contains(out, d.id+"=up") {
			t.Errorf("server ls lacks %s's view:\n%s", d.id, out)
		}
	}

	// One server stops: it goes to weight 0 everywhere (quiesce).
	backends[0].stop()
	oneDown := map[string]int{backends[0].addr: 0, backends[1].addr: 1, backends[2].addr: 1}
	took := c.waitDests("the stopped server at weight 0", oneDown)
	t.Logf("stopped server at weight 0 on every director within %s (interval 200ms × fall 2)", took.Round(10*time.Millisecond))

	// All stop: below quorum, the sorry server takes the traffic.
	backends[1].stop()
	backends[2].stop()
	sorryOnly := map[string]int{backends[0].addr: 0, backends[1].addr: 0, backends[2].addr: 0, sorry: 1}
	took = c.waitDests("the sorry server alone", sorryOnly)
	t.Logf("sorry server in within %s", took.Round(10*time.Millisecond))
	hooksLog := func() string {
		var all []string
		for _, d := range c.directors {
			b, _ := os.ReadFile(filepath.Join(d.dir, "hooks.log"))
			all = append(all, string(b))
		}
		return strings.Join(all, "")
	}
	waitFor(t, 10*time.Second, "the on_quorum_lost hook", func() bool { return strings.Contains(hooksLog(), "quorum_lost web") })

	// They come back: traffic returns and the quorum hook runs again.
	for _, b := range backends {
		b.start()
	}
	took = c.waitDests("every server back", all)
	t.Logf("servers back within %s", took.Round(10*time.Millisecond))
	waitFor(t, 10*time.Second, "the on_quorum_regained hook", func() bool { return strings.Contains(hooksLog(), "quorum_regained web") })
	if n := strings.Count(hooksLog(), "quorum_lost web"); n != 1 {
		t.Errorf("on_quorum_lost ran %d times, want once (on the leader only):\n%s", n, hooksLog())
	}

	// Drain with --wait: the dry-run table has no connections, so it
	// reports at once; admin wins over health.
	out = c.mustCtl(follower, "server", "drain", "web", backends[1].addr, "--wait", "--timeout", "10s")
	if !strings.Contains(out, "has no active connection") {
		t.Errorf("drain --wait: %q", out)
	}
	drained := map[string]int{backends[0].addr: 1, backends[1].addr: 0, backends[2].addr: 1}
	c.waitDests("the drained server at weight 0", drained)
	c.mustCtl(follower, "server", "enable", "web", backends[1].addr)
	c.waitDests("the enabled server back", all)
}
