package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/directorate/directorate/internal/testlog"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/fsm"
)

// fakeConsensus applies proposals straight to the FSM, as a one-node Raft
// would, and records membership calls.
type fakeConsensus struct {
	mu        sync.Mutex
	fsm       *fsm.FSM
	leader    bool
	index     uint64
	leaderID  string
	leaderAPI string
	calls     []string
	err       error // returned by membership calls when set
}

func (c *fakeConsensus) Propose(_ context.Context, cmd fsm.Command) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leader {
		return 0, cluster.ErrNotLeader
	}
	data, err := fsm.Encode(cmd)
	if err != nil {
		return 0, err
	}
	c.index++
	if err := c.fsm.Apply(c.index, data); err != nil {
		return 0, err
	}
	return c.index, nil
}

func (c *fakeConsensus) IsLeader() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.leader }

func (c *fakeConsensus) LeaderAPI() (string, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaderID, c.leaderAPI, c.leaderAPI != ""
}

func (c *fakeConsensus) VerifyLeader(context.Context) error { return nil }

func (c *fakeConsensus) Members(context.Context) ([]api.Member, error) {
	return []api.Member{{ID: "d1", Address: "127.0.0.1:7901", Suffrage: "Voter", Leader: true}}, nil
}

func (c *fakeConsensus) record(call string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, call)
	return c.err
}

// recorded returns a copy of the membership calls so far.
func (c *fakeConsensus) recorded() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

func (c *fakeConsensus) AddVoter(_ context.Context, id, addr string) error {
	return c.record("add " + id + " " + addr)
}

func (c *fakeConsensus) RemoveServer(_ context.Context, id string, force bool) error {
	return c.record(fmt.Sprintf("remove %s force=%t", id, force))
}

func (c *fakeConsensus) TransferLeadership(_ context.Context, to string) error {
	return c.record("transfer " + to)
}

func (c *fakeConsensus) Status() api.Status { return api.Status{Node: "d1", State: "Leader"} }

type noIPVS struct{}

func (noIPVS) Report(context.Context) (api.IPVSReport, error) {
	return api.IPVSReport{Node: "d1", Backend: "dry-run", InSync: true}, nil
}

func testLogger(t testing.TB) *slog.Logger { return testlog.Logger(t) }

type director struct {
	fsm  *fsm.FSM
	raft *fakeConsensus
	url  string
}

func newDirector(t *testing.T, leader bool) *director {
	t.Helper()
	f := fsm.New()
	c := &fakeConsensus{fsm: f, leader: leader}
	// The leader is d1 and a follower d2, as forwarding tests set them up.
	node := "d2"
	if leader {
		node = "d1"
	}
	srv := newServer(node, f, c, noIPVS{}, testLogger(t), 2*time.Second, security{Insecure: true})
	ts := httptest.NewServer(srv.handler())
	t.Cleanup(ts.Close)
	return &director{fsm: f, raft: c, url: ts.URL}
}

type result struct {
	status int
	index  string
	body   api.Response
	err    api.Error
}

func do(t *testing.T, method, url string, body any) result {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, index: resp.Header.Get(api.IndexHeader)}
	if resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: undecodable success body %q: %v", method, url, raw, err)
		}
	} else {
		var er api.ErrorResponse
		if err := json.Unmarshal(raw, &er); err != nil {
			t.Fatalf("%s %s: undecodable error body %q: %v", method, url, raw, err)
		}
		r.err = er.Error
	}
	return r
}

func snapshot(t *testing.T, f *fsm.FSM) string {
	t.Helper()
	var b bytes.Buffer
	st := f.Clone()
	st.Index = 0
	if err := json.NewEncoder(&b).Encode(st); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func seed(t *testing.T, d *director) {
	t.Helper()
	steps := []struct {
		path string
		body any
	}{
		{"/v1/vips", map[string]any{"name": "web-vip", "prefix": "192.0.2.10/24"}},
		{"/v1/services", map[string]any{"name": "web", "vip": "web-vip", "protocol": "tcp", "port": 80, "method": "dr"}},
		{"/v1/services/web/servers", map[string]any{"address": "10.1.0.1", "port": 80}},
	}
	for _, s := range steps {
		if r := do(t, "POST", d.url+s.path, s.body); r.status != 200 {
			t.Fatalf("POST %s: %d %+v", s.path, r.status, r.err)
		}
	}
}

func TestWritesAndReads(t *testing.T) {
	d := newDirector(t, true)
	seed(t, d)

	r := do(t, "GET", d.url+"/v1/services/web", nil)
	if r.status != 200 || r.index != "3" || r.body.Index != 3 {
		t.Fatalf("GET service: status %d index header %q body index %d", r.status, r.index, r.body.Index)
	}
	var svc fsm.Service
	if err := json.Unmarshal(r.body.Data, &svc); err != nil {
		t.Fatal(err)
	}
	if svc.Scheduler != "wlc" {
		t.Errorf("scheduler default: got %q, want wlc as ipvsadm", svc.Scheduler)
	}
	rs := svc.Servers["10.1.0.1:80"]
	if rs == nil || rs.Weight != 1 || rs.Admin != fsm.Enabled || rs.Method != fsm.DR {
		t.Fatalf("server defaults: got %+v, want weight 1, enabled, the service's method", rs)
	}

	if r := do(t, "PATCH", d.url+"/v1/services/web/servers/"+url.PathEscape("10.1.0.1:80"), map[string]any{"weight": 0}); r.status != 200 {
		t.Fatalf("PATCH weight 0: %d %+v", r.status, r.err)
	}
	if got := d.fsm.Clone().Services["web"].Servers["10.1.0.1:80"].Weight; got != 0 {
		t.Fatalf("explicit weight 0 not applied: %d", got)
	}
	r = do(t, "GET", d.url+"/v1/services", nil)
	var sums []api.ServiceSummary
	if err := json.Unmarshal(r.body.Data, &sums); err != nil || len(sums) != 1 || sums[0].ServerCount != 1 || sums[0].Servers != nil {
		t.Fatalf("service list: %v %+v", err, sums)
	}
	if r := do(t, "DELETE", d.url+"/v1/services/web/servers/10.1.0.1:80", nil); r.status != 200 {
		t.Fatalf("DELETE server: %d %+v", r.status, r.err)
	}
	if r := do(t, "GET", d.url+"/v1/snapshot", nil); r.status != 200 || !strings.Contains(string(r.body.Data), "web-vip") {
		t.Fatalf("snapshot: %d %s", r.status, r.body.Data)
	}
}

// TestBadRequests checks that every bad request is answered with a status
// and a field a person can act on, and leaves the state unchanged.
func TestBadRequests(t *testing.T) {
	d := newDirector(t, true)
	seed(t, d)
	huge := append([]byte(`{"name":"x","prefix":"`), bytes.Repeat([]byte("1"), api.MaxBodyBytes+1)...)
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code, field        string
	}{
		{"unknown field", "POST", "/v1/vips", `{"name":"v2","prefix":"192.0.2.11/24","colour":"red"}`, 400, api.CodeInvalid, "body"},
		{"malformed JSON", "POST", "/v1/vips", `{"name":`, 400, api.CodeInvalid, "body"},
		{"empty body", "POST", "/v1/vips", nil, 400, api.CodeInvalid, "body"},
		{"trailing data", "POST", "/v1/vips", `{"name":"v2","prefix":"192.0.2.11/24"} {}`, 400, api.CodeInvalid, "body"},
		{"trailing brace", "POST", "/v1/vips", `{"name":"v2","prefix":"192.0.2.11/24"}}`, 400, api.CodeInvalid, "body"},
		{"oversized body", "POST", "/v1/vips", huge, 413, api.CodeTooLarge, ""},
		{"bad prefix", "POST", "/v1/vips", `{"name":"v2","prefix":"300.1.1.1/24"}`, 400, api.CodeInvalid, "body"},
		{"duplicate VIP", "POST", "/v1/vips", map[string]any{"name": "web-vip", "prefix": "192.0.2.12/24"}, 409, api.CodeConflict, "vip.name"},
		{"port 0", "POST", "/v1/services", map[string]any{"name": "s0", "vip": "web-vip", "protocol": "tcp", "port": 0}, 400, api.CodeInvalid, "service.port"},
		{"port 70000", "POST", "/v1/services", map[string]any{"name": "s0", "vip": "web-vip", "protocol": "tcp", "port": 70000}, 400, api.CodeInvalid, "service.port"},
		{"unknown scheduler", "POST", "/v1/services", map[string]any{"name": "s0", "vip": "web-vip", "protocol": "tcp", "port": 81, "scheduler": "fastest"}, 400, api.CodeInvalid, "service.scheduler"},
		{"missing VIP", "POST", "/v1/services", map[string]any{"name": "s0", "vip": "nope", "protocol": "tcp", "port": 81}, 404, api.CodeNotFound, "service.vip"},
		{"duplicate identity", "POST", "/v1/services", map[string]any{"name": "web2", "vip": "web-vip", "protocol": "tcp", "port": 80}, 409, api.CodeConflict, ""},
		{"DR port remap", "POST", "/v1/services/web/servers", map[string]any{"address": "10.1.0.2", "port": 8080}, 400, api.CodeInvalid, "server.port"},
		{"weight too big", "POST", "/v1/services/web/servers", map[string]any{"address": "10.1.0.2", "port": 80, "weight": 70000}, 400, api.CodeInvalid, "server.weight"},
		{"duplicate server", "POST", "/v1/services/web/servers", map[string]any{"address": "10.1.0.1", "port": 80}, 409, api.CodeConflict, ""},
		{"server of unknown service", "POST", "/v1/services/nope/servers", map[string]any{"address": "10.1.0.2", "port": 80}, 404, api.CodeNotFound, ""},
		{"bad server key", "PATCH", "/v1/services/web/servers/not-an-address", map[string]any{"weight": 2}, 400, api.CodeInvalid, "server"},
		{"delete referenced VIP", "DELETE", "/v1/vips/web-vip", nil, 409, api.CodeConflict, ""},
		{"bad force", "DELETE", "/v1/vips/web-vip?force=maybe", nil, 400, api.CodeInvalid, "force"},
		{"unknown service", "GET", "/v1/services/nope", nil, 404, api.CodeNotFound, "service"},
		{"unknown endpoint", "GET", "/v1/nothing", nil, 404, api.CodeNotFound, ""},
		{"member without id", "POST", "/v1/members", map[string]any{"address": "127.0.0.9:7901"}, 400, api.CodeInvalid, "id"},
		{"member bad address", "POST", "/v1/members", map[string]any{"id": "d9", "address": "nowhere"}, 400, api.CodeInvalid, "address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, d.fsm)
			r := do(t, tc.method, d.url+tc.path, tc.body)
			if r.status != tc.status || r.err.Code != tc.code {
				t.Fatalf("got %d %q (%s), want %d %q", r.status, r.err.Code, r.err.Message, tc.status, tc.code)
			}
			if tc.field != "" && !strings.HasPrefix(r.err.Field, tc.field) {
				t.Errorf("field: got %q, want %q (message %q)", r.err.Field, tc.field, r.err.Message)
			}
			if r.err.Message == "" {
				t.Error("error without a message")
			}
			if after := snapshot(t, d.fsm); after != before {
				t.Errorf("state changed by a refused request:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestForceDeleteVIP(t *testing.T) {
	d := newDirector(t, true)
	seed(t, d)
	if r := do(t, "DELETE", d.url+"/v1/vips/web-vip?force=true", nil); r.status != 200 {
		t.Fatalf("forced delete: %d %+v", r.status, r.err)
	}
	if st := d.fsm.Clone(); len(st.VIPs) != 0 || len(st.Services) != 0 {
		t.Fatalf("forced delete left %d VIPs, %d services", len(st.VIPs), len(st.Services))
	}
}

func TestFollowerForwardsToLeader(t *testing.T) {
	leader, follower := newPair(t)

	if r := do(t, "POST", follower.url+"/v1/vips", map[string]any{"name": "v", "prefix": "192.0.2.10/24"}); r.status != 200 || r.body.Index != 1 {
		t.Fatalf("forwarded write: %d %+v", r.status, r.err)
	}
	if _, ok := leader.fsm.Clone().VIPs["v"]; !ok {
		t.Fatal("the forwarded write did not reach the leader")
	}
	// The follower's own FSM is fed by Raft, not by the forwarded request.
	if n := len(follower.fsm.Clone().VIPs); n != 0 {
		t.Fatalf("follower applied a forwarded write locally: %d VIPs", n)
	}
	// A consistent read is answered by the leader; a plain one locally.
	if r := do(t, "GET", follower.url+"/v1/vips?consistent", nil); r.status != 200 || !strings.Contains(string(r.body.Data), `"v"`) {
		t.Fatalf("consistent read: %d %s", r.status, r.body.Data)
	}
	if r := do(t, "GET", follower.url+"/v1/vips", nil); r.status != 200 || strings.Contains(string(r.body.Data), `"v"`) {
		t.Fatalf("stale read should come from the follower's own state: %d %s", r.status, r.body.Data)
	}
	if r := do(t, "POST", follower.url+"/v1/leader/transfer", map[string]any{"to": "d2"}); r.status != 200 {
		t.Fatalf("forwarded transfer: %d %+v", r.status, r.err)
	}
	if got := leader.raft.recorded(); len(got) != 1 || got[0] != "transfer d2" {
		t.Fatalf("leader calls: %v", got)
	}
}

func TestNoLeaderAndLoops(t *testing.T) {
	follower := newDirector(t, false)
	r := do(t, "POST", follower.url+"/v1/vips", map[string]any{"name": "v", "prefix": "192.0.2.10/24"})
	if r.status != 503 || r.err.Code != api.CodeNoLeader {
		t.Fatalf("no leader: got %d %+v", r.status, r.err)
	}

	req, _ := http.NewRequest("POST", follower.url+"/v1/vips", strings.NewReader(`{"name":"v","prefix":"192.0.2.10/24"}`))
	req.Header.Set(api.ForwardedHeader, "d2")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("a forwarded request reaching a follower must not be forwarded again: got %d", resp.StatusCode)
	}

	// Raft names this director leader before its barrier is done: it must
	// not forward to itself.
	follower.raft.leaderID, follower.raft.leaderAPI = "d2", "127.0.0.1:1"
	r = do(t, "POST", follower.url+"/v1/vips", map[string]any{"name": "v", "prefix": "192.0.2.10/24"})
	if r.status != 503 || r.err.Code != api.CodeUnavailable || !strings.Contains(r.err.Message, "just elected") {
		t.Fatalf("leader still catching up: got %d %+v", r.status, r.err)
	}

	// A leader that cannot be reached is reported, not hung on.
	follower.raft.leaderID, follower.raft.leaderAPI = "d9", "127.0.0.1:1"
	r = do(t, "POST", follower.url+"/v1/vips", map[string]any{"name": "v", "prefix": "192.0.2.10/24"})
	if r.status != 503 || r.err.Code != api.CodeUnavailable || !strings.Contains(r.err.Message, "d9") {
		t.Fatalf("unreachable leader: got %d %+v", r.status, r.err)
	}
}

func TestMembershipErrors(t *testing.T) {
	d := newDirector(t, true)
	d.raft.err = fmt.Errorf("remove d2: %w: 1 of 3 voters would remain reachable", cluster.ErrWouldLoseQuorum)
	r := do(t, "DELETE", d.url+"/v1/members/d2", nil)
	if r.status != 409 || r.err.Code != api.CodeRefused || !strings.Contains(r.err.Message, "reachable") {
		t.Fatalf("refused removal: %d %+v", r.status, r.err)
	}
	d.raft.err = nil
	if r := do(t, "DELETE", d.url+"/v1/members/d2?force=true", nil); r.status != 200 {
		t.Fatalf("forced removal: %d %+v", r.status, r.err)
	}
	if calls := d.raft.recorded(); len(calls) == 0 || calls[len(calls)-1] != "remove d2 force=true" {
		t.Fatalf("calls %q, want the last to be the forced removal", calls)
	}
}
