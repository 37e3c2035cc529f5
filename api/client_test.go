package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

// seen is one request as the fake server received it.
type seen struct {
	Method      string
	Path        string // escaped, as sent on the wire
	Query       string
	Body        string
	ContentType string
	UserAgent   string
}

// recorder is a fake clusterd that records every request and answers each
// with the envelope the contract describes, built from its current reply.
type recorder struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	reqs   []seen
	status int
	index  uint64
	data   string // raw JSON for Response.Data; empty means none
	raw    string // when set, sent verbatim instead of an envelope
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	r := &recorder{t: t, status: http.StatusOK, index: 7}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		r.t.Errorf("fake: read body: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, seen{
		Method:      req.Method,
		Path:        req.URL.EscapedPath(),
		Query:       req.URL.RawQuery,
		Body:        string(body),
		ContentType: req.Header.Get("Content-Type"),
		UserAgent:   req.Header.Get("User-Agent"),
	})
	w.Header().Set(api.IndexHeader, fmt.Sprint(r.index))
	if r.raw != "" {
		w.WriteHeader(r.status)
		_, _ = io.WriteString(w, r.raw)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.status)
	env := fmt.Sprintf(`{"index":%d`, r.index)
	if r.data != "" {
		env += `,"data":` + r.data
	}
	_, _ = io.WriteString(w, env+"}")
}

func (r *recorder) reply(status int, data string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status, r.data, r.raw = status, data, ""
}

func (r *recorder) replyRaw(status int, body string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status, r.raw = status, body
}

func (r *recorder) last() seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		r.t.Fatal("fake: no request received")
	}
	return r.reqs[len(r.reqs)-1]
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

func newClient(t *testing.T, base string, opts ...api.Option) *api.Client {
	t.Helper()
	c, err := api.New(base, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", base, err)
	}
	return c
}

// jsonEqual compares two JSON documents by value.
func jsonEqual(t *testing.T, got, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Errorf("body %q is not JSON: %v", got, err)
		return false
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %q is not JSON: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

func TestMethodsSendTheDocumentedRequests(t *testing.T) {
	ctx := context.Background()
	addr := netip.MustParseAddr("10.0.1.1")
	v6 := netip.MustParseAddr("2001:db8::1")
	weight := 5
	sched := fsm.Scheduler("rr")
	vip := fsm.VIP{Name: "web-vip", Prefix: netip.MustParsePrefix("10.0.0.1/24"), Interface: "eth0"}
	svc := fsm.Service{Name: "web", VIP: "web-vip", Protocol: fsm.TCP, Port: 80, Scheduler: "wlc", Method: fsm.DR}
	rs := fsm.RealServer{Address: addr, Port: 80, Weight: 1, Admin: fsm.Enabled, Method: fsm.DR}
	state := fsm.State{Index: 3, VIPs: map[string]*fsm.VIP{"web-vip": &vip}, Services: map[string]*fsm.Service{}}

	type tc struct {
		name   string
		call   func(c *api.Client) (any, uint64, error)
		method string
		path   string
		query  string
		body   string // JSON; empty means no body
		data   string // the fake's Data
		want   any    // the decoded value; nil for writes
	}
	write := func(f func(c *api.Client) (uint64, error)) func(c *api.Client) (any, uint64, error) {
		return func(c *api.Client) (any, uint64, error) {
			i, err := f(c)
			return nil, i, err
		}
	}
	cases := []tc{
		{name: "Status", method: "GET", path: "/v1/status",
			data: `{"node":"d1","state":"Leader","term":4,"index":7,"voters":3,"backend":"dry-run","vips":[{"name":"web-vip","prefix":"10.0.0.1/24","holder":"d1"}],"services":1,"servers":2,"last_reconcile":{"index":7,"duration":1000,"changes":2}}`,
			want: api.Status{Node: "d1", State: "Leader", Term: 4, Index: 7, Voters: 3, Backend: "dry-run",
				VIPs:     []api.VIPHolder{{Name: "web-vip", Prefix: netip.MustParsePrefix("10.0.0.1/24"), Holder: "d1"}},
				Services: 1, Servers: 2, LastReconcile: api.ReconcileStatus{Index: 7, Duration: time.Microsecond, Changes: 2}},
			call: func(c *api.Client) (any, uint64, error) { return c.Status(ctx) }},
		{name: "VIPs", method: "GET", path: "/v1/vips",
			data: `[{"name":"web-vip","prefix":"10.0.0.1/24","interface":"eth0"}]`,
			want: []fsm.VIP{vip},
			call: func(c *api.Client) (any, uint64, error) { return c.VIPs(ctx) }},
		{name: "AddVIP", method: "POST", path: "/v1/vips",
			body: `{"name":"web-vip","prefix":"10.0.0.1/24","interface":"eth0"}`,
			call: write(func(c *api.Client) (uint64, error) { return c.AddVIP(ctx, vip) })},
		{name: "DeleteVIP", method: "DELETE", path: "/v1/vips/web-vip",
			call: write(func(c *api.Client) (uint64, error) { return c.DeleteVIP(ctx, "web-vip", false) })},
		{name: "DeleteVIP force", method: "DELETE", path: "/v1/vips/web-vip", query: "force=true",
			call: write(func(c *api.Client) (uint64, error) { return c.DeleteVIP(ctx, "web-vip", true) })},
		{name: "Services", method: "GET", path: "/v1/services",
			data: `[{"name":"web","vip":"web-vip","protocol":"tcp","port":80,"scheduler":"wlc","method":"dr","server_count":2,"active_weight":3}]`,
			want: []api.ServiceSummary{{Service: svc, ServerCount: 2, ActiveWeight: 3}},
			call: func(c *api.Client) (any, uint64, error) { return c.Services(ctx) }},
		{name: "Service", method: "GET", path: "/v1/services/web",
			data: `{"name":"web","vip":"web-vip","protocol":"tcp","port":80,"scheduler":"wlc","method":"dr"}`,
			want: svc,
			call: func(c *api.Client) (any, uint64, error) { return c.Service(ctx, "web") }},
		{name: "AddService", method: "POST", path: "/v1/services",
			body: `{"name":"web","vip":"web-vip","protocol":"tcp","port":80,"scheduler":"wlc","method":"dr"}`,
			call: write(func(c *api.Client) (uint64, error) { return c.AddService(ctx, svc) })},
		{name: "UpdateService", method: "PATCH", path: "/v1/services/web",
			body: `{"scheduler":"rr","no_persistence":true}`,
			call: write(func(c *api.Client) (uint64, error) {
				return c.UpdateService(ctx, "web", fsm.ServicePatch{Scheduler: &sched, NoPersistence: true})
			})},
		{name: "DeleteService", method: "DELETE", path: "/v1/services/web",
			call: write(func(c *api.Client) (uint64, error) { return c.DeleteService(ctx, "web") })},
		{name: "Servers", method: "GET", path: "/v1/services/web/servers",
			data: `[{"address":"10.0.1.1","port":80,"method":"dr","weight":1,"admin":"enabled"}]`,
			want: []fsm.RealServer{rs},
			call: func(c *api.Client) (any, uint64, error) { return c.Servers(ctx, "web") }},
		{name: "AddServer", method: "POST", path: "/v1/services/web/servers",
			body: `{"address":"10.0.1.1","port":80,"method":"dr","weight":1,"admin":"enabled"}`,
			call: write(func(c *api.Client) (uint64, error) { return c.AddServer(ctx, "web", rs) })},
		{name: "UpdateServer", method: "PATCH", path: "/v1/services/web/servers/10.0.1.1:80",
			body: `{"weight":5}`,
			call: write(func(c *api.Client) (uint64, error) {
				return c.UpdateServer(ctx, "web", addr, 80, fsm.ServerPatch{Weight: &weight})
			})},
		{name: "UpdateServer IPv6", method: "PATCH", path: "/v1/services/web/servers/%5B2001:db8::1%5D:80",
			body: `{"weight":5}`,
			call: write(func(c *api.Client) (uint64, error) {
				return c.UpdateServer(ctx, "web", v6, 80, fsm.ServerPatch{Weight: &weight})
			})},
		{name: "DeleteServer", method: "DELETE", path: "/v1/services/web/servers/10.0.1.1:80",
			call: write(func(c *api.Client) (uint64, error) { return c.DeleteServer(ctx, "web", addr, 80) })},
		{name: "Members", method: "GET", path: "/v1/members",
			data: `[{"id":"d1","address":"10.0.0.11:7946","suffrage":"Voter","leader":true}]`,
			want: []api.Member{{ID: "d1", Address: "10.0.0.11:7946", Suffrage: "Voter", Leader: true}},
			call: func(c *api.Client) (any, uint64, error) { return c.Members(ctx) }},
		{name: "AddMember", method: "POST", path: "/v1/members",
			body: `{"id":"d4","address":"10.0.0.14:7946"}`,
			call: write(func(c *api.Client) (uint64, error) { return c.AddMember(ctx, "d4", "10.0.0.14:7946") })},
		{name: "RemoveMember", method: "DELETE", path: "/v1/members/d4",
			call: write(func(c *api.Client) (uint64, error) { return c.RemoveMember(ctx, "d4", false) })},
		{name: "RemoveMember force", method: "DELETE", path: "/v1/members/d4", query: "force=true",
			call: write(func(c *api.Client) (uint64, error) { return c.RemoveMember(ctx, "d4", true) })},
		{name: "TransferLeader", method: "POST", path: "/v1/leader/transfer", body: `{"to":"d2"}`,
			call: write(func(c *api.Client) (uint64, error) { return c.TransferLeader(ctx, "d2") })},
		{name: "TransferLeader any", method: "POST", path: "/v1/leader/transfer", body: `{}`,
			call: write(func(c *api.Client) (uint64, error) { return c.TransferLeader(ctx, "") })},
		{name: "Snapshot", method: "GET", path: "/v1/snapshot",
			data: `{"index":3,"vips":{"web-vip":{"name":"web-vip","prefix":"10.0.0.1/24","interface":"eth0"}},"services":{}}`,
			want: state,
			call: func(c *api.Client) (any, uint64, error) { return c.Snapshot(ctx) }},
		{name: "SnapshotJSON", method: "GET", path: "/v1/snapshot",
			data: `{"index":3,"future_field":1}`,
			want: json.RawMessage(`{"index":3,"future_field":1}`),
			call: func(c *api.Client) (any, uint64, error) { return c.SnapshotJSON(ctx) }},
		{name: "Restore", method: "POST", path: "/v1/snapshot",
			body: `{"index":3,"vips":{"web-vip":{"name":"web-vip","prefix":"10.0.0.1/24","interface":"eth0"}},"services":{}}`,
			call: write(func(c *api.Client) (uint64, error) { return c.Restore(ctx, state) })},
		{name: "IPVS", method: "GET", path: "/v1/ipvs",
			data: `{"node":"d1","backend":"kernel","index":7,"in_sync":false,"services":[{"key":"TCP 10.0.0.1:80","name":"web","diff":"changed","desired":{"scheduler":"wlc"},"actual":{"scheduler":"rr"},"destinations":[{"address":"10.0.1.1:80","diff":"missing","desired":{"method":"dr","weight":1}}]}]}`,
			want: api.IPVSReport{Node: "d1", Backend: "kernel", Index: 7, Services: []api.IPVSService{{
				Key: "TCP 10.0.0.1:80", Name: "web", Diff: "changed",
				Desired: &api.IPVSServiceAttrs{Scheduler: "wlc"}, Actual: &api.IPVSServiceAttrs{Scheduler: "rr"},
				Destinations: []api.IPVSDestination{{Address: "10.0.1.1:80", Diff: "missing", Desired: &api.IPVSDestAttrs{Method: "dr", Weight: 1}}},
			}}},
			call: func(c *api.Client) (any, uint64, error) { return c.IPVS(ctx) }},
	}
	f := newRecorder(t)
	c := newClient(t, f.srv.URL, api.WithUserAgent("clusterctl/test"))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.reply(http.StatusOK, tc.data)
			got, index, err := tc.call(c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if index != 7 {
				t.Errorf("index = %d, want 7", index)
			}
			r := f.last()
			if r.Method != tc.method || r.Path != tc.path || r.Query != tc.query {
				t.Errorf("request = %s %s?%s, want %s %s?%s", r.Method, r.Path, r.Query, tc.method, tc.path, tc.query)
			}
			if r.UserAgent != "clusterctl/test" {
				t.Errorf("User-Agent = %q", r.UserAgent)
			}
			if tc.body == "" {
				if r.Body != "" {
					t.Errorf("body = %q, want none", r.Body)
				}
			} else {
				if !jsonEqual(t, r.Body, tc.body) {
					t.Errorf("body = %s, want %s", r.Body, tc.body)
				}
				if r.ContentType != "application/json" {
					t.Errorf("Content-Type = %q", r.ContentType)
				}
			}
			if tc.want != nil && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decoded\n got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func TestConsistentAddsQueryToReadsOnly(t *testing.T) {
	ctx := context.Background()
	f := newRecorder(t)
	plain := newClient(t, f.srv.URL)
	cons := plain.Consistent()

	f.reply(http.StatusOK, `[]`)
	if _, _, err := cons.VIPs(ctx); err != nil {
		t.Fatal(err)
	}
	if q := f.last().Query; q != "consistent=true" {
		t.Errorf("consistent read query = %q", q)
	}
	if _, _, err := plain.VIPs(ctx); err != nil {
		t.Fatal(err)
	}
	if q := f.last().Query; q != "" {
		t.Errorf("plain read query = %q; Consistent must not change the original client", q)
	}
	f.reply(http.StatusOK, "")
	if _, err := cons.DeleteVIP(ctx, "v", true); err != nil {
		t.Fatal(err)
	}
	if q := f.last().Query; q != "force=true" {
		t.Errorf("write query = %q, want only force", q)
	}
}

func TestPathSegmentsAreEscaped(t *testing.T) {
	ctx := context.Background()
	// A real mux shows that what the client escapes, the server unescapes
	// back to the same name and key.
	got := make(chan [2]string, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("DELETE /v1/services/{name}/servers/{addrport}", func(w http.ResponseWriter, r *http.Request) {
		got <- [2]string{r.PathValue("name"), r.PathValue("addrport")}
		_, _ = io.WriteString(w, `{"index":9}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL)
	if _, err := c.DeleteServer(ctx, "a/b c?d", netip.MustParseAddr("2001:db8::1"), 8080); err != nil {
		t.Fatal(err)
	}
	want := [2]string{"a/b c?d", "[2001:db8::1]:8080"}
	if g := <-got; g != want {
		t.Errorf("server saw %q, want %q", g, want)
	}
}

func TestInvalidNamesAreRefusedBeforeSending(t *testing.T) {
	ctx := context.Background()
	f := newRecorder(t)
	c := newClient(t, f.srv.URL)
	for _, name := range []string{"", ".", ".."} {
		_, _, err := c.Service(ctx, name)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeInvalid {
			t.Errorf("Service(%q) error = %v, want an invalid api.Error", name, err)
		}
	}
	if _, err := c.DeleteServer(ctx, "web", netip.Addr{}, 80); err == nil || !strings.Contains(err.Error(), "address") {
		t.Errorf("DeleteServer with no address: %v", err)
	}
	if _, err := c.DeleteServer(ctx, "web", netip.MustParseAddr("10.0.0.1"), 70000); err == nil || !strings.Contains(err.Error(), "port 70000") {
		t.Errorf("DeleteServer with port 70000: %v", err)
	}
	if n := f.count(); n != 0 {
		t.Errorf("%d requests sent for invalid names", n)
	}
}

func TestErrorResponsesDecode(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name      string
		status    int
		body      string
		code      string
		field     string
		msg       string // the whole Error() text
		wantIndex uint64
	}{
		{name: "400 with field", status: 400,
			body: `{"index":5,"error":{"code":"invalid","field":"server.port","message":"DR cannot remap ports: port 8080 differs from service port 80"}}`,
			code: api.CodeInvalid, field: "server.port", msg: "server.port: DR cannot remap ports: port 8080 differs from service port 80", wantIndex: 5},
		{name: "404", status: 404,
			body: `{"index":5,"error":{"code":"not_found","message":"service web not found"}}`,
			code: api.CodeNotFound, msg: "service web not found", wantIndex: 5},
		{name: "409", status: 409,
			body: `{"index":5,"error":{"code":"conflict","field":"name","message":"service web already exists"}}`,
			code: api.CodeConflict, field: "name", msg: "name: service web already exists", wantIndex: 5},
		{name: "503 no leader, index from header", status: 503,
			body: `{"error":{"code":"no_leader","message":"no leader is known; retry later"}}`,
			code: api.CodeNoLeader, msg: "no leader is known; retry later", wantIndex: 7},
		{name: "502 HTML from a proxy", status: 502,
			body: "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>",
			code: api.CodeUnavailable, wantIndex: 7},
		{name: "500 empty body", status: 500, body: "", code: api.CodeInternal, wantIndex: 7},
		{name: "JSON without an error object", status: 418, body: `{"hello":"world"}`, code: api.CodeInternal, wantIndex: 7},
	}
	f := newRecorder(t)
	c := newClient(t, f.srv.URL)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.replyRaw(tc.status, tc.body)
			index, err := c.AddServer(ctx, "web", fsm.RealServer{Address: netip.MustParseAddr("10.0.1.1"), Port: 8080, Weight: 1})
			var ae *api.Error
			if !errors.As(err, &ae) {
				t.Fatalf("error = %v (%T), want *api.Error", err, err)
			}
			if ae.Status != tc.status || ae.Code != tc.code || ae.Field != tc.field {
				t.Errorf("got status %d code %q field %q, want %d %q %q", ae.Status, ae.Code, ae.Field, tc.status, tc.code, tc.field)
			}
			if tc.msg != "" && err.Error() != tc.msg {
				t.Errorf("Error() = %q, want %q", err.Error(), tc.msg)
			}
			if tc.msg == "" && !strings.Contains(err.Error(), fmt.Sprint(tc.status)) {
				t.Errorf("Error() = %q does not name status %d", err.Error(), tc.status)
			}
			if index != tc.wantIndex {
				t.Errorf("index = %d, want %d", index, tc.wantIndex)
			}
		})
	}
	t.Run("proxy page is quoted as a one-line snippet", func(t *testing.T) {
		f.replyRaw(502, "<html>\n<title>502 Bad Gateway</title>"+strings.Repeat("x", 5000))
		_, err := c.DeleteService(ctx, "web")
		msg := err.Error()
		if !strings.Contains(msg, "502 Bad Gateway") || !strings.Contains(msg, `"<html> <title>502 Bad Gateway</title>`) {
			t.Errorf("message %q lacks status or snippet", msg)
		}
		if strings.Contains(msg, "\n") || len(msg) > 400 {
			t.Errorf("message is %d bytes or multi-line: %q", len(msg), msg)
		}
	})
}

func TestSuccessBodyProblems(t *testing.T) {
	ctx := context.Background()
	f := newRecorder(t)
	c := newClient(t, f.srv.URL)

	f.reply(http.StatusOK, "null")
	if v, _, err := c.VIPs(ctx); err != nil || len(v) != 0 {
		t.Errorf("null list: %v, %v; want empty and no error", v, err)
	}
	if _, _, err := c.Status(ctx); err == nil || !strings.Contains(err.Error(), "no data") {
		t.Errorf("status without data: %v", err)
	}
	f.replyRaw(http.StatusOK, "not json")
	if _, _, err := c.Status(ctx); err == nil || !strings.Contains(err.Error(), `"not json"`) {
		t.Errorf("non-JSON success: %v", err)
	}
	f.replyRaw(http.StatusOK, `{"index":3,"data":{"node":7}}`)
	if _, _, err := c.Status(ctx); err == nil || !strings.Contains(err.Error(), "decode") {
		t.Errorf("mistyped data: %v", err)
	}
	f.replyRaw(http.StatusNoContent, "")
	if i, err := c.DeleteService(ctx, "web"); err != nil || i != 7 {
		t.Errorf("204 write: index %d, %v; want 7 from the header", i, err)
	}
}

func TestOversizedResponseIsRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"index":1,"data":"`)
		chunk := strings.Repeat("a", 1<<20)
		for range 8 {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, `"}`)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, api.WithMaxResponseBytes(4<<20))
	_, _, err := c.SnapshotJSON(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("error = %v, want a size error", err)
	}
}

func TestConnectionRefusedNamesTheAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, addr, api.WithUnreachableHint("is it running? set --addr or CLUSTERCTL_ADDR"))
	_, _, err = c.Status(context.Background())
	var ue *api.UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("error = %v (%T), want *api.UnreachableError", err, err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("errors.Is(err, ECONNREFUSED) is false for %v", err)
	}
	want := "cannot reach clusterd at http://" + addr + ": connection refused — is it running? set --addr or CLUSTERCTL_ADDR"
	if err.Error() != want {
		t.Errorf("message\n got %q\nwant %q", err.Error(), want)
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c := newClient(t, srv.URL, api.WithTimeout(50*time.Millisecond))
	_, err := c.AddVIP(context.Background(), fsm.VIP{Name: "v"})
	var te *api.TimeoutError
	if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v (%T), want *api.TimeoutError wrapping DeadlineExceeded", err, err)
	}
	if !strings.Contains(err.Error(), "within 50ms") || !strings.Contains(err.Error(), "may still commit") {
		t.Errorf("message %q", err.Error())
	}
}

func TestNewParsesAddresses(t *testing.T) {
	good := map[string]string{
		"127.0.0.1:7946":              "http://127.0.0.1:7946",
		"[::1]:7950":                  "http://[::1]:7950",
		"director-1:7950":             "http://director-1:7950",
		"http://10.0.0.1:7950":        "http://10.0.0.1:7950",
		"https://lb.example/prefix/":  "https://lb.example/prefix",
		"  http://10.0.0.1:7950/  \n": "http://10.0.0.1:7950",
	}
	for in, want := range good {
		c, err := api.New(in)
		if err != nil {
			t.Errorf("New(%q): %v", in, err)
			continue
		}
		if got := c.BaseURL(); got != want {
			t.Errorf("New(%q).BaseURL() = %q, want %q", in, got, want)
		}
	}
	bad := map[string]string{
		"":                    "empty",
		"localhost":           "host:port",
		"1.2.3.4:99999":       "port",
		":7950":               "host is empty",
		"ftp://x:1":           "scheme",
		"http://x:1/?a=b":     "only scheme",
		"http://u:p@x:1":      "only scheme",
		"http:///nohost":      "host is empty",
		"10.0.0.1:http-alt-x": "port",
	}
	for in, want := range bad {
		_, err := api.New(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%q) error = %v, want one mentioning %q", in, err, want)
		}
	}
	if _, err := api.New("127.0.0.1:1", api.WithHTTPClient(nil)); err == nil {
		t.Error("WithHTTPClient(nil) accepted")
	}
	if _, err := api.New("127.0.0.1:1", api.WithTimeout(-time.Second)); err == nil {
		t.Error("negative timeout accepted")
	}
}

func TestPathPrefixIsKept(t *testing.T) {
	f := newRecorder(t)
	f.reply(http.StatusOK, `[]`)
	c := newClient(t, f.srv.URL+"/clusterd/")
	if _, _, err := c.Members(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := f.last().Path; p != "/clusterd/v1/members" {
		t.Errorf("path = %q", p)
	}
}

func TestInjectedHTTPClientIsUsed(t *testing.T) {
	f := newRecorder(t)
	f.reply(http.StatusOK, `[]`)
	var calls int
	var mu sync.Mutex
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		return http.DefaultTransport.RoundTrip(r)
	})}
	c := newClient(t, f.srv.URL, api.WithHTTPClient(hc))
	if _, _, err := c.VIPs(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Errorf("transport saw %d calls, want 1", calls)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
