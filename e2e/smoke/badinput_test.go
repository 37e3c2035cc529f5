package smoke

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadInputThroughClusterctlAndAPI drives a secure cluster with
// mistaken and hostile requests, through clusterctl and straight to the
// HTTPS API, on the leader and on a follower that forwards. Each is
// refused with a clear error naming what is wrong, and the replicated
// state, index included, is byte for byte what it was.
func TestBadInputThroughClusterctlAndAPI(t *testing.T) {
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
	c.mustCtl(leader, "vip", "add", "web-vip", "192.0.2.10/24")
	c.mustCtl(leader, "vip", "add", "spare", "192.0.2.20/32")
	c.mustCtl(leader, "service", "add", "web", "--vip", "web-vip", "--port", "80")
	c.mustCtl(leader, "server", "add", "web", "10.1.0.1:80")
	// state reads the replicated state through whichever director leads
	// now: on a loaded 2-core machine the fast profile's leader may step
	// down between two cases (clusterctl's exit status 3: no leader), and
	// an election changes nothing in the state.
	state := func() string {
		t.Helper()
		for attempt := 1; ; attempt++ {
			l := c.waitLeader(30 * time.Second)
			out, errs, code := c.ctl(l, "snapshot", "save", "-", "--consistent")
			if code == 0 {
				return out
			}
			if code != 3 || attempt == 5 {
				t.Fatalf("clusterctl snapshot save - --consistent on %s: exit %d: %s", l.id, code, errs)
			}
		}
	}
	before := state()

	huge := filepath.Join(t.TempDir(), "huge.json")
	writeHugeSnapshot(t, huge)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"bad VIP address", []string{"vip", "add", "x", "300.1.1.1/24"}, "300.1.1.1"},
		{"bad server address", []string{"server", "add", "web", "10.1.0.x:80"}, "10.1.0.x"},
		{"port 0", []string{"service", "add", "x", "--vip", "web-vip", "--port", "0"}, "port"},
		{"port 70000", []string{"service", "add", "x", "--vip", "web-vip", "--port", "70000"}, "port"},
		{"server port 70000", []string{"server", "add", "web", "10.1.0.2:70000"}, "70000"},
		{"unknown scheduler", []string{"service", "add", "x", "--vip", "web-vip", "--port", "81", "--scheduler", "fastest"}, "fastest"},
		{"DR port remap", []string{"server", "add", "web", "10.1.0.2:8080"}, "cannot remap"},
		{"duplicate VIP", []string{"vip", "add", "web-vip", "192.0.2.11/32"}, "already exists"},
		{"duplicate VIP address", []string{"vip", "add", "other", "192.0.2.10/32"}, "already VIP"},
		{"duplicate service identity", []string{"service", "add", "web2", "--vip", "web-vip", "--port", "80"}, "already service"},
		{"duplicate server", []string{"server", "add", "web", "10.1.0.1:80"}, "already exists"},
		{"delete a used VIP", []string{"vip", "rm", "web-vip"}, "used by services web"},
		{"delete what is not there", []string{"service", "rm", "nope"}, "does not exist"},
		{"revoke the last operator token", []string{"token", "revoke", bootstrapTokenID(t, c)}, "last operator token"},
		{"bad member address", []string{"member", "add", "d9", "nowhere"}, "nowhere"},
		{"oversized restore", []string{"snapshot", "restore", "--yes", huge}, "larger than the API's limit"},
	}
	for _, tc := range cases {
		for _, d := range []*director{leader, follower} {
			t.Run(tc.name+" via "+d.id, func(t *testing.T) {
				out, errs, code := c.ctl(d, tc.args...)
				if code == 0 || !strings.Contains(errs, tc.want) {
					t.Errorf("clusterctl %s: exit %d, stderr %q, stdout %q; want a refusal mentioning %q",
						strings.Join(tc.args, " "), code, errs, out, tc.want)
				}
				if after := state(); after != before {
					t.Fatalf("clusterctl %s changed the state:\n%s\n%s", strings.Join(tc.args, " "), before, after)
				}
			})
		}
	}

	// Straight to the API, past clusterctl's own checks.
	hc := c.httpsClient(t)
	tok := strings.TrimSpace(readFile(t, filepath.Join(c.pki, "bootstrap-token")))
	raw := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"port 0", "POST", "/v1/services", `{"name":"x","vip":"web-vip","protocol":"tcp","port":0}`, 400, "service.port"},
		{"port 70000", "POST", "/v1/services", `{"name":"x","vip":"web-vip","protocol":"tcp","port":70000}`, 400, "service.port"},
		{"unknown field", "POST", "/v1/vips", `{"name":"x","prefix":"192.0.2.9/32","colour":"red"}`, 400, "unknown field"},
		{"bad address", "POST", "/v1/vips", `{"name":"x","prefix":"300.1.1.1/24"}`, 400, "malformed JSON"},
		{"DR port remap", "POST", "/v1/services/web/servers", `{"address":"10.1.0.2","port":8080}`, 400, "cannot remap"},
	}
	for _, tc := range raw {
		for _, d := range []*director{leader, follower} {
			req, err := http.NewRequest(tc.method, "https://"+d.api+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s via %s: %v", tc.name, d.id, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
				t.Errorf("%s via %s: %d %s, want %d mentioning %q", tc.name, d.id, resp.StatusCode, body, tc.status, tc.want)
			}
		}
	}
	// An oversized body is cut off at the limit, not read to the end.
	req, _ := http.NewRequest("POST", "https://"+follower.api+"/v1/snapshot",
		io.MultiReader(strings.NewReader(`{"vips":{"`), io.LimitReader(zeros{}, 65<<20)))
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := hc.Do(req); err != nil {
		t.Errorf("oversized body: %v", err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "exceeds") {
			t.Errorf("oversized body: %d %s", resp.StatusCode, body)
		}
	}
	if after := state(); after != before {
		t.Fatalf("raw requests changed the state:\n%s\n%s", before, after)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '0'
	}
	return len(p), nil
}

// writeHugeSnapshot writes a syntactically valid snapshot larger than the
// API's body limit.
func writeHugeSnapshot(t *testing.T, path string) {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(`{"index":1,"vips":{`)
	for i := 0; b.Len() < 65<<20; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"v%d":{"name":"v%d","prefix":"10.%d.%d.%d/32","interface":"%s"}`, i, i, i>>16&255, i>>8&255, i&255,
			strings.Repeat("e", 15))
	}
	b.WriteString(`},"services":{}}`)
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// bootstrapTokenID is the ID of the token in the bootstrap token file.
func bootstrapTokenID(t *testing.T, c *cluster) string {
	t.Helper()
	id, _, _ := strings.Cut(strings.TrimSpace(readFile(t, filepath.Join(c.pki, "bootstrap-token"))), ".")
	return id
}

// httpsClient trusts the cluster CA and expects a director certificate.
func (c *cluster) httpsClient(t *testing.T) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(readFile(t, filepath.Join(c.pki, "ca.pem")))) {
		t.Fatal("ca.pem holds no certificate")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, ServerName: "director.directorate", MinVersion: tls.VersionTLS13}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
