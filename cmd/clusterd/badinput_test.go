package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

// TestBadInputLeavesStateUnchanged sends hostile and mistaken requests to
// a secure director as an operator. Each is answered with a clear error
// that names the field and the reason, and leaves the state and its index
// exactly as they were.
func TestBadInputLeavesStateUnchanged(t *testing.T) {
	p := newTestPKI(t)
	d := newSecureDirector(t, p, true)
	hc := p.httpClient()
	op := d.addToken(t, "ops", fsm.RoleOperator)
	for _, s := range []struct {
		path string
		body any
	}{
		{"/v1/vips", map[string]any{"name": "web-vip", "prefix": "192.0.2.10/24"}},
		{"/v1/vips", map[string]any{"name": "spare", "prefix": "192.0.2.20/32"}},
		{"/v1/services", map[string]any{"name": "web", "vip": "web-vip", "protocol": "tcp", "port": 80, "method": "dr"}},
		{"/v1/services", map[string]any{"name": "nat", "vip": "web-vip", "protocol": "tcp", "port": 8080, "method": "nat"}},
		{"/v1/services/web/servers", map[string]any{"address": "10.1.0.1", "port": 80}},
		{"/v1/services/nat/servers", map[string]any{"address": "10.1.0.3", "port": 8081}},
	} {
		if r := doAs(t, hc, "POST", d.url+s.path, op, s.body); r.status != 200 {
			t.Fatalf("seed %s: %d %+v", s.path, r.status, r.err)
		}
	}

	cases := []struct {
		name         string
		method, path string
		body         any
		status       int
		field, msg   string
	}{
		// Oversized and malformed bodies.
		{"oversized body", "POST", "/v1/vips", oversized{}, 413, "", "exceeds"},
		{"unknown field", "POST", "/v1/vips", `{"name":"x","prefix":"192.0.2.9/32","colour":"red"}`, 400, "body", "unknown field \"colour\""},
		{"trailing data", "POST", "/v1/vips", `{"name":"x","prefix":"192.0.2.9/32"}}`, 400, "body", "unexpected data"},
		{"empty body", "POST", "/v1/vips", "", 400, "body", "empty"},
		{"not JSON", "POST", "/v1/services", "name=web", 400, "body", "malformed JSON"},
		{"wrong type", "POST", "/v1/services", `{"name":"x","vip":"web-vip","protocol":"tcp","port":"80"}`, 400, "body", "malformed JSON"},
		// Bad addresses.
		{"bad VIP address", "POST", "/v1/vips", `{"name":"x","prefix":"300.1.1.1/24"}`, 400, "body", "malformed JSON"},
		{"VIP without prefix", "POST", "/v1/vips", `{"name":"x"}`, 400, "vip.prefix", ""},
		{"multicast VIP", "POST", "/v1/vips", map[string]any{"name": "x", "prefix": "224.0.0.1/32"}, 400, "vip.prefix", ""},
		{"bad server address", "POST", "/v1/services/web/servers", `{"address":"10.1.0.x","port":80}`, 400, "body", "malformed JSON"},
		{"bad server key", "PATCH", "/v1/services/web/servers/10.1.0.1", map[string]any{"weight": 2}, 400, "server", "ADDRESS:PORT"},
		{"bad member address", "POST", "/v1/members", map[string]any{"id": "d9", "address": "nowhere"}, 400, "address", "HOST:PORT"},
		// Ports.
		{"service port 0", "POST", "/v1/services", map[string]any{"name": "x", "vip": "web-vip", "protocol": "tcp", "port": 0}, 400, "service.port", "out of range"},
		{"service port 70000", "POST", "/v1/services", map[string]any{"name": "x", "vip": "web-vip", "protocol": "tcp", "port": 70000}, 400, "service.port", "out of range"},
		{"server port 70000", "POST", "/v1/services/nat/servers", map[string]any{"address": "10.1.0.2", "port": 70000}, 400, "server.port", ""},
		// Scheduler, forwarding method.
		{"unknown scheduler", "POST", "/v1/services", map[string]any{"name": "x", "vip": "web-vip", "protocol": "udp", "port": 53, "scheduler": "fastest"}, 400, "service.scheduler", "fastest"},
		{"unknown scheduler patch", "PATCH", "/v1/services/web", map[string]any{"scheduler": "fastest"}, 400, "service.scheduler", "fastest"},
		{"DR port remap", "POST", "/v1/services/web/servers", map[string]any{"address": "10.1.0.2", "port": 8080}, 400, "server.port", "cannot remap"},
		{"DR port remap by patch", "PATCH", "/v1/services/nat/servers/10.1.0.3:8081", map[string]any{"method": "dr"}, 400, "server.port", "cannot remap"},
		{"patch missing server", "PATCH", "/v1/services/nat/servers/10.1.0.3:80", map[string]any{"weight": 2}, 404, "server", "does not exist"},
		// Duplicate identities.
		{"duplicate VIP name", "POST", "/v1/vips", map[string]any{"name": "web-vip", "prefix": "192.0.2.11/32"}, 409, "vip.name", "already exists"},
		{"duplicate VIP address", "POST", "/v1/vips", map[string]any{"name": "other", "prefix": "192.0.2.10/32"}, 409, "vip.prefix", "already VIP"},
		{"duplicate service name", "POST", "/v1/services", map[string]any{"name": "web", "vip": "spare", "protocol": "tcp", "port": 80}, 409, "service.name", "already exists"},
		{"duplicate service identity", "POST", "/v1/services", map[string]any{"name": "web2", "vip": "web-vip", "protocol": "tcp", "port": 80}, 409, "service.port", "already service"},
		{"duplicate server", "POST", "/v1/services/web/servers", map[string]any{"address": "10.1.0.1", "port": 80}, 409, "server", "already exists"},
		{"duplicate token via restore", "POST", "/v1/snapshot", map[string]any{"vips": map[string]any{}, "services": map[string]any{},
			"tokens": map[string]any{"x": map[string]any{"id": "x", "role": "operator", "hash": strings.Repeat("a", 64)}}}, 400, "state.tokens", "not restored"},
		// Deleting what is referenced, or what is not there.
		{"delete used VIP", "DELETE", "/v1/vips/web-vip", nil, 409, "vip.name", "used by services nat, web"},
		{"delete missing service", "DELETE", "/v1/services/nope", nil, 404, "service.name", "does not exist"},
		{"revoke last operator token", "DELETE", "/v1/tokens/ops", nil, 409, "token.id", "last operator token"},
		{"service on missing VIP", "POST", "/v1/services", map[string]any{"name": "x", "vip": "nope", "protocol": "tcp", "port": 81}, 404, "service.vip", "does not exist"},
		// Names that would escape a URL or a shell.
		{"bad VIP name", "POST", "/v1/vips", map[string]any{"name": "../etc", "prefix": "192.0.2.9/32"}, 400, "vip.name", "must start with"},
		{"bad weight", "PATCH", "/v1/services/web/servers/10.1.0.1:80", map[string]any{"weight": 70000}, 400, "server.weight", ""},
		{"bad token role", "POST", "/v1/tokens", map[string]any{"role": "root"}, 400, "token.role", "unknown role"},
		{"token description with control characters", "POST", "/v1/tokens", map[string]any{"role": "read", "description": "a\x1bb"}, 400, "token.description", "control"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, idx := snapshot(t, d.fsm), d.fsm.Index()
			var r result
			if _, ok := c.body.(oversized); ok {
				r = doOversized(t, hc, d.url+c.path, op)
			} else {
				r = doAs(t, hc, c.method, d.url+c.path, op, c.body)
			}
			if r.status != c.status || r.err.Field != c.field || !strings.Contains(r.err.Message, c.msg) || r.err.Message == "" {
				t.Errorf("%s %s: %d field %q %q, want %d field %q containing %q", c.method, c.path, r.status, r.err.Field, r.err.Message,
					c.status, c.field, c.msg)
			}
			if snapshot(t, d.fsm) != before || d.fsm.Index() != idx {
				t.Errorf("%s %s changed the state", c.method, c.path)
			}
		})
	}
}

// oversized marks a case whose body is one byte over api.MaxBodyBytes.
type oversized struct{}

// doOversized streams a body one byte over the limit without holding it
// in memory.
func doOversized(t *testing.T, hc *http.Client, url, token string) result {
	t.Helper()
	body := io.MultiReader(strings.NewReader(`{"name":"`), io.LimitReader(repeat('a'), api.MaxBodyBytes), strings.NewReader(`"}`))
	req, err := http.NewRequest("POST", url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode}
	var er api.ErrorResponse
	if err := json.Unmarshal(raw, &er); err != nil {
		t.Fatalf("undecodable error body %q: %v", raw, err)
	}
	r.err = er.Error
	return r
}

type repeat byte

func (b repeat) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}
