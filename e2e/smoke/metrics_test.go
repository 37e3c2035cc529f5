package smoke

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/internal/testpoll"
)

// TestMetrics scrapes every director's /metrics as Prometheus would, with
// the cluster CA and a token: one director says it leads and holds the
// VIP, every one counts its reconciles, and the API's own requests are
// counted.
func TestMetrics(t *testing.T) {
	c := newCluster(t, 3)
	for _, d := range c.directors {
		c.start(d)
	}
	leader := c.waitLeader(30 * time.Second)
	c.mustCtl(leader, "vip", "add", "web-vip", "192.0.2.10/24")
	c.onlyHolder(leader, "web-vip")
	hc := c.httpsClient(t)
	tok := strings.TrimSpace(readFile(t, filepath.Join(c.pki, "bootstrap-token")))
	scrape := func(d *director) string {
		t.Helper()
		req, err := http.NewRequest("GET", "https://"+d.api+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("scrape %s: %v", d.id, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("scrape %s: %d %s", d.id, resp.StatusCode, body)
		}
		return string(body)
	}
	for _, d := range c.directors {
		isLeader := map[bool]int{true: 1, false: 0}[d == leader]
		want := []string{
			fmt.Sprintf(`directorate_leader{node=%q} %d`, d.id, isLeader),
			fmt.Sprintf(`directorate_vip_held{node=%q,vip="web-vip"} %d`, d.id, isLeader),
			fmt.Sprintf(`directorate_raft_voters{node=%q} 3`, d.id),
			`directorate_ipvs_reconciles_total{result="ok"}`,
			`directorate_api_requests_total{code="200",method="get"}`,
		}
		// A follower reports the VIP once it has applied its entry.
		var body string
		missing := func() []string {
			body = scrape(d)
			var out []string
			for _, line := range want {
				if !strings.Contains(body, line) {
					out = append(out, line)
				}
			}
			return out
		}
		testpoll.Poll(t, 10*time.Second, 100*time.Millisecond, d.id+"'s metrics", func() error {
			if m := missing(); len(m) > 0 {
				return fmt.Errorf("missing %q", m)
			}
			return nil
		})
		if strings.Contains(body, `directorate_ipvs_reconciles_total{result="ok"} 0`) {
			t.Errorf("%s counts no successful reconcile", d.id)
		}
	}
}
