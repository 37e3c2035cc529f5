package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

// FuzzParseConfig: no configuration file, however malformed, panics the
// parser, and every refusal says what is wrong.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(minimalConfig))
	f.Add([]byte(minimalConfig + "insecure: true\n"))
	f.Add([]byte("node_id: d1\nunknown: 1\n"))
	f.Add([]byte("timing: {profile: fast, heartbeat_timeout: -1s}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("ping_nodes: [::1, 300.0.0.1]\nping: {interval: 1ns}\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		cfg, err := parseConfig(raw)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("a refusal with an empty message")
			}
			return
		}
		// What parses is valid, and stays valid: a director must not
		// start with a configuration its own check would refuse.
		if err := cfg.validate(); err != nil {
			t.Fatalf("parsed, then refused: %v", err)
		}
	})
}

// minimalConfig is the smallest secure configuration.
const minimalConfig = `node_id: d1
data_dir: /var/lib/directorate
raft_addr: 10.0.0.1:7901
gossip_addr: 10.0.0.1:7946
api_addr: 10.0.0.1:7950
bootstrap_expect: 3
join: [10.0.0.2:7946, 10.0.0.3:7946]
tls: {ca: /etc/directorate/ca.pem, cert: /etc/directorate/d1.pem, key: /etc/directorate/d1-key.pem}
gossip_key_file: /etc/directorate/gossip.key
bootstrap_token_file: /etc/directorate/bootstrap.token
`

// fuzzRoutes are the API's request bodies, addressed by the fuzzer's
// first argument.
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/v1/vips"},
	{"POST", "/v1/services"},
	{"PATCH", "/v1/services/web"},
	{"POST", "/v1/services/web/servers"},
	{"PATCH", "/v1/services/web/servers/10.1.0.1:80"},
	{"POST", "/v1/snapshot"},
	{"POST", "/v1/members"},
	{"POST", "/v1/leader/transfer"},
	{"POST", "/v1/tokens"},
}

// FuzzAPIRequest sends arbitrary bodies to every endpoint that decodes
// one. No body panics the director or earns a 5xx; a refusal is a JSON
// error with a message and leaves the state as it was; whatever is
// accepted leaves a state that survives a snapshot round trip.
func FuzzAPIRequest(f *testing.F) {
	seeds := []string{
		`{"name":"v2","prefix":"192.0.2.50/32"}`,
		`{"name":"dns","vip":"web-vip","protocol":"udp","port":53,"scheduler":"rr","servers":{"10.1.0.5:53":{"address":"10.1.0.5","port":53}}}`,
		`{"scheduler":"sh","sched_flags":{"sh_port":true},"persistence":{"timeout":60}}`,
		`{"address":"10.1.0.2","port":80,"weight":3}`,
		`{"weight":0,"admin":"drained"}`,
		`{"index":0,"vips":{"a":{"name":"a","prefix":"198.51.100.1/32"}},"services":{}}`,
		`{"id":"d4","address":"127.0.0.4:7901"}`,
		`{"to":"d2"}`,
		`{"role":"read","description":"grafana"}`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	f.Add(uint8(0), []byte(`{"name":"x","prefix":"192.0.2.9/32"}{}`))
	f.Add(uint8(3), []byte(`{"address":"10.1.0.2","port":70000}`))
	f.Add(uint8(5), []byte(`{"vips":{"a":null},"services":{"b":{"name":"b","servers":{"x":null}}}}`))

	base := fuzzBaseState(f)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		fs := fsm.New()
		if err := fs.Restore(bytes.NewReader(base)); err != nil {
			t.Fatal(err)
		}
		c := &fakeConsensus{fsm: fs, leader: true, index: fs.Index()}
		srv := newServer("d1", fs, c, noIPVS{}, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Second, security{Insecure: true})
		before := snapshot(t, fs)
		req := httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		srv.handler().ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", rt.method, rt.path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 300 {
			var er api.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || er.Error.Message == "" || er.Error.Code == "" {
				t.Fatalf("refusal is not a clear JSON error: %d %s", rec.Code, rec.Body)
			}
			if snapshot(t, fs) != before {
				t.Fatalf("refused %s %s %q changed the state", rt.method, rt.path, body)
			}
			return
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("unexpected status %d", rec.Code)
		}
		var snap bytes.Buffer
		if err := fs.WriteSnapshot(&snap); err != nil {
			t.Fatal(err)
		}
		if err := fsm.New().Restore(bytes.NewReader(snap.Bytes())); err != nil {
			t.Fatalf("state after %s %s %q does not restore: %v", rt.method, rt.path, body, err)
		}
	})
}

// fuzzBaseState is a small state the fuzzed requests change.
func fuzzBaseState(f *testing.F) []byte {
	fs := fsm.New()
	var idx uint64
	for _, cmd := range []fsm.Command{
		fsm.AddVIP{VIP: fsm.VIP{Name: "web-vip", Prefix: netip.MustParsePrefix("192.0.2.10/24")}},
		fsm.AddService{Service: fsm.Service{Name: "web", VIP: "web-vip", Protocol: fsm.TCP, Port: 80, Scheduler: "wlc", Method: fsm.DR}},
		fsm.AddServer{Service: "web", Server: fsm.RealServer{Address: netip.MustParseAddr("10.1.0.1"), Port: 80, Weight: 1}},
		fsm.CreateToken{Token: fsm.Token{ID: "ops", Role: fsm.RoleOperator, Hash: hashSecret(strings.Repeat("s", 40))}},
	} {
		data, err := fsm.Encode(cmd)
		if err != nil {
			f.Fatal(err)
		}
		idx++
		if err := fs.Apply(idx, data); err != nil {
			f.Fatal(err)
		}
	}
	var b bytes.Buffer
	if err := fs.WriteSnapshot(&b); err != nil {
		f.Fatal(err)
	}
	return b.Bytes()
}
