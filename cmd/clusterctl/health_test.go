package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/directorate/directorate/fsm"
)

func TestServiceHealthFlags(t *testing.T) {
	f := newFakeAPI(t)
	f.must(t, "vip", "add", "v", "192.0.2.10/24")
	f.must(t, "service", "add", "web", "--vip", "v", "--port", "80", "--check", "http", "--check-path", "/health",
		"--check-interval", "1s", "--check-fall", "2", "--check-expect", "200", "--down-action", "remove",
		"--quorum", "2", "--quorum-hysteresis", "1", "--sorry", "10.0.9.9")
	jsonEqual(t, f.lastWrite(t).Body, `{"name":"web","vip":"v","protocol":"tcp","port":80,"scheduler":"wlc","method":"dr",
		"check":{"kind":"http","interval":"1s","fall":2,"path":"/health","expect_status":"200"},
		"down_action":"remove","quorum":2,"quorum_hysteresis":1,
		"sorry":{"address":"10.0.9.9","port":80,"method":""}}`)

	cases := []struct {
		args []string
		body string
	}{
		// A partial check change starts from the current check.
		{[]string{"--check-path", "/ready"}, `{"check":{"kind":"http","interval":"1s","fall":2,"path":"/ready","expect_status":"200"}}`},
		// A new kind drops the fields of the old one, keeps the timing.
		{[]string{"--check", "tcp", "--check-port", "8080"}, `{"check":{"kind":"tcp","port":8080,"interval":"1s","fall":2}}`},
		{[]string{"--no-check"}, `{"no_check":true}`},
		{[]string{"--quorum", "3"}, `{"quorum":3}`},
		{[]string{"--down-action", "quiesce"}, `{"down_action":"quiesce"}`},
		{[]string{"--sorry", "10.0.9.8:80", "--sorry-method", "nat"}, `{"sorry":{"address":"10.0.9.8","port":80,"method":"nat"}}`},
		{[]string{"--no-sorry"}, `{"no_sorry":true}`},
	}
	for _, tc := range cases {
		f.must(t, append([]string{"service", "set", "web"}, tc.args...)...)
		jsonEqual(t, f.lastWrite(t).Body, tc.body)
	}

	writes := len(f.requests(http.MethodPatch)) + len(f.requests(http.MethodPost))
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"service", "set", "web", "--check-path", "/x"}, "--check: give the kind of check"},
		{[]string{"service", "set", "web", "--check", "smtp"}, `--check: "smtp" is not a check kind`},
		{[]string{"service", "set", "web", "--down-action", "drop"}, `--down-action: "drop" is not quiesce or remove`},
		{[]string{"service", "set", "web", "--quorum", "-1"}, "--quorum: -1 must not be negative"},
		{[]string{"service", "set", "web", "--sorry-method", "nat"}, "--sorry-method needs --sorry"},
		{[]string{"service", "set", "web", "--check", "tcp", "--no-check"}, "none of the others can be"},
		{[]string{"service", "set", "web", "--check", "tcp", "--check-interval", "-1s"}, "--check-interval: -1s must not be negative"},
		{[]string{"service", "add", "x", "--vip", "v", "--port", "81", "--no-check"}, "--no-check: a new service has no check"},
	} {
		r := f.run(t, tc.args...)
		wantExit(t, r, exitUsage, tc.msg)
	}
	if n := len(f.requests(http.MethodPatch)) + len(f.requests(http.MethodPost)); n != writes {
		t.Errorf("%d writes sent by refused commands", n-writes)
	}
}

func TestServerCheckOverride(t *testing.T) {
	f := setup(t)
	f.must(t, "service", "set", "web", "--check", "tcp", "--check-rise", "3")
	f.must(t, "server", "add", "web", "10.0.1.2:80", "--check", "exec", "--check-command", "/bin/true")
	jsonEqual(t, f.lastWrite(t).Body, `{"address":"10.0.1.2","port":80,"method":"","weight":1,"admin":"",
		"check":{"kind":"exec","command":"/bin/true"}}`)
	// An override of one field starts from the service's check.
	f.must(t, "server", "set", "web", "10.0.1.1:80", "--check-port", "8080")
	jsonEqual(t, f.lastWrite(t).Body, `{"check":{"kind":"tcp","port":8080,"rise":3}}`)
	f.must(t, "server", "set", "web", "10.0.1.1", "--no-check")
	jsonEqual(t, f.lastWrite(t).Body, `{"no_check":true}`)
	r := f.run(t, "server", "add", "web", "10.0.1.3:80", "--no-check")
	wantExit(t, r, exitUsage, "--no-check: a new server has no check of its own")
}

func TestServerLsShowsHealthAndViews(t *testing.T) {
	f := setup(t)
	f.must(t, "service", "set", "web", "--check", "tcp")
	f.must(t, "server", "add", "web", "10.0.1.2:80")
	f.must(t, "server", "add", "web", "10.0.1.3:80", "--check", "none")
	f.mu.Lock()
	f.services["web"].Servers["10.0.1.2:80"].Health = &fsm.Health{State: "down", Index: 42,
		Views: map[string]string{"d1": "down", "d2": "down", "d3": "up"}}
	f.live = map[string]map[string]string{"10.0.1.2:80": {"d1": "down", "d2": "up", "d3": "up"}}
	f.mu.Unlock()
	out := f.must(t, "server", "ls", "web")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "HEALTH") || !strings.Contains(lines[0], "COMMITTED") {
		t.Fatalf("server ls:\n%s", out)
	}
	for i, want := range [][]string{
		{"10.0.1.1:80", "tcp", "up (pending)"},
		{"10.0.1.2:80", "tcp", "down", "index 42", "d1=down d2=down d3=up", "d1=down d2=up d3=up"},
		{"10.0.1.3:80", "unchecked"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("line %q lacks %q", lines[i+1], w)
			}
		}
	}
}

func TestServerDrainWait(t *testing.T) {
	f := setup(t)
	f.conns = map[string][]int{"10.0.1.1:80": {3, 3, 1, 0}}
	r := f.run(t, "server", "drain", "web", "10.0.1.1:80", "--wait", "--poll-interval", "1ms")
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, "drained server 10.0.1.1:80 of service web") ||
		!strings.Contains(r.stdout, "drained: 10.0.1.1:80 of service web has no active connection") {
		t.Errorf("stdout %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "3 active connections") || !strings.Contains(r.stderr, "1 active connections") {
		t.Errorf("stderr %q should report progress", r.stderr)
	}
	if svc, _ := f.serviceCopy("web"); svc.Servers["10.0.1.1:80"].Admin != fsm.Drained {
		t.Errorf("admin %q, want drained", svc.Servers["10.0.1.1:80"].Admin)
	}

	// A failover in the middle: the wait asks again and goes on.
	f.must(t, "server", "enable", "web", "10.0.1.1:80")
	f.conns = map[string][]int{"10.0.1.1:80": {2, -1, -1, 1, 0}}
	r = f.run(t, "server", "drain", "web", "10.0.1.1:80", "--wait", "--poll-interval", "1ms")
	wantExit(t, r, 0)
	if !strings.Contains(r.stderr, "no leader to ask") || !strings.Contains(r.stdout, "has no active connection") {
		t.Errorf("drain across a failover: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	// One that never ends within the timeout is a timeout, not a crash.
	f.must(t, "server", "enable", "web", "10.0.1.1:80")
	f.conns = map[string][]int{"10.0.1.1:80": {-1}}
	r = f.run(t, "server", "drain", "web", "10.0.1.1:80", "--wait", "--timeout", "20ms", "--poll-interval", "1ms")
	wantExit(t, r, exitFailure, "no leader could tell the connections of 10.0.1.1:80")
	if n := strings.Count(r.stderr, "no leader to ask"); n != 1 {
		t.Errorf("the wait said %d times that no leader answered, want once: %q", n, r.stderr)
	}

	// Connections that do not finish: exit 1, the server stays drained.
	f.must(t, "server", "enable", "web", "10.0.1.1:80")
	f.conns = map[string][]int{"10.0.1.1:80": {5}}
	r = f.run(t, "server", "drain", "web", "10.0.1.1", "--wait", "--timeout", "20ms", "--poll-interval", "1ms")
	wantExit(t, r, exitFailure, "still has 5 active connections after 20ms; it stays drained")

	// Without --wait, no connection is read.
	before := len(f.requests(http.MethodGet))
	f.must(t, "server", "drain", "web", "10.0.1.1:80")
	for _, q := range f.requests(http.MethodGet)[before:] {
		if strings.HasSuffix(q.Path, "/connections") {
			t.Errorf("drain without --wait read %s", q.Path)
		}
	}
	r = f.run(t, "server", "drain", "web", "10.0.1.1:80", "--timeout", "1s")
	wantExit(t, r, exitUsage, "--timeout needs --wait")
}

func TestServiceShowHealthSettings(t *testing.T) {
	f := setup(t)
	f.must(t, "service", "set", "web", "--check", "tcp", "--quorum", "2", "--quorum-hysteresis", "1", "--sorry", "10.0.9.9:80", "--down-action", "remove")
	f.mu.Lock()
	f.services["web"].QuorumLost = true
	f.services["web"].Check.Interval = fsm.Duration(2e9)
	f.mu.Unlock()
	out := strings.Join(strings.Fields(f.must(t, "service", "show", "web")), " ")
	for _, want := range []string{
		"Check: tcp every 2s",
		"Down action: remove",
		"Quorum: 2 (hysteresis 1, healthy weight 1): LOST",
		"Sorry server: 10.0.9.9:80 Index:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("service show lacks %q:\n%s", want, out)
		}
	}
}

func TestServerLsWithoutTheHealthEndpoint(t *testing.T) {
	f := setup(t)
	f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/health") {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"index":10,"error":{"code":"not_found","message":"no such endpoint"}}`))
		return true
	})
	out := f.must(t, "server", "ls", "web")
	if !strings.HasPrefix(out, "ADDRESS") || strings.Contains(out, "HEALTH") || !strings.Contains(out, "10.0.1.1:80") {
		t.Errorf("server ls against a director without health:\n%s", out)
	}
}
