package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

type result struct {
	stdout, stderr string
	code           int
}

func runEnv(t *testing.T, e env, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb, e)
	t.Logf("clusterctl %s -> exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errb.String())
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// run runs clusterctl against the fake, with no terminal on stdin.
func (f *fakeAPI) run(t *testing.T, args ...string) result {
	t.Helper()
	return runEnv(t, env{Version: "test"}, append([]string{"--addr", f.addr()}, args...)...)
}

// must runs a command that has to succeed.
func (f *fakeAPI) must(t *testing.T, args ...string) string {
	t.Helper()
	r := f.run(t, args...)
	if r.code != 0 {
		t.Fatalf("clusterctl %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// setup creates a VIP and a DR service with one real server.
func setup(t *testing.T) *fakeAPI {
	t.Helper()
	f := newFakeAPI(t)
	f.must(t, "vip", "add", "web-vip", "192.0.2.10/24", "--interface", "eth0")
	f.must(t, "service", "add", "web", "--vip", "web-vip", "--port", "80")
	f.must(t, "server", "add", "web", "10.0.1.1:80")
	return f
}

func wantExit(t *testing.T, r result, code int, stderrHas ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit = %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	for _, s := range stderrHas {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr %q lacks %q", r.stderr, s)
		}
	}
}

func jsonEqual(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("%q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %q is not JSON: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("JSON = %s, want %s", got, want)
	}
}

func TestWritesConfirmWithTheCommittedIndex(t *testing.T) {
	f := newFakeAPI(t)
	out := f.must(t, "vip", "add", "web-vip", "192.0.2.10/24")
	if want := fmt.Sprintf("added VIP web-vip 192.0.2.10/24 (index %d)\n", f.currentIndex()); out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	out = f.must(t, "service", "add", "web", "--vip", "web-vip", "--port", "80")
	if want := fmt.Sprintf("added service web (index %d)\n", f.currentIndex()); out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	jsonEqual(t, f.lastWrite(t).Body,
		`{"name":"web","vip":"web-vip","protocol":"tcp","port":80,"scheduler":"wlc","method":"dr"}`)

	out = f.must(t, "-o", "json", "server", "add", "web", "10.0.1.1")
	jsonEqual(t, out, fmt.Sprintf(`{"index":%d}`, f.currentIndex()))
	// A bare address means the service's port, looked up on the leader.
	jsonEqual(t, f.lastWrite(t).Body, `{"address":"10.0.1.1","port":80,"method":"","weight":1,"admin":""}`)
	gets := f.requests(http.MethodGet)
	if last := gets[len(gets)-1]; last.Path != "/v1/services/web" || last.Query != "consistent=true" {
		t.Errorf("port lookup = %s?%s, want a consistent read of /v1/services/web", last.Path, last.Query)
	}
}

func TestServiceAddFlags(t *testing.T) {
	f := newFakeAPI(t)
	f.must(t, "vip", "add", "v", "192.0.2.10")
	if got := f.lastWrite(t).Body; !strings.Contains(got, `"prefix":"192.0.2.10/32"`) {
		t.Errorf("bare VIP address should become /32: %s", got)
	}
	f.must(t, "service", "add", "dns", "--vip", "v", "--proto", "udp", "--port", "53", "--scheduler", "sh",
		"--sh-port", "--sh-fallback", "--one-packet", "--persistent", "300", "--persistence-prefix", "24", "--method", "masq")
	jsonEqual(t, f.lastWrite(t).Body, `{"name":"dns","vip":"v","protocol":"udp","port":53,"scheduler":"sh",
		"sched_flags":{"sh_fallback":true,"sh_port":true},"persistence":{"timeout":300,"prefix_len":24},
		"one_packet":true,"method":"nat"}`)
	f.must(t, "service", "add", "mail", "--fwmark", "7", "--family", "inet6", "--method", "ipip")
	jsonEqual(t, f.lastWrite(t).Body, `{"name":"mail","fwmark":7,"family":"inet6","scheduler":"wlc","method":"tun"}`)
}

func TestServiceSetSendsOnlyWhatChanged(t *testing.T) {
	f := setup(t)
	cases := []struct {
		args []string
		body string
	}{
		{[]string{"--scheduler", "rr"}, `{"scheduler":"rr"}`},
		{[]string{"--one-packet=true"}, `{"one_packet":true}`},
		{[]string{"--one-packet=false"}, `{"one_packet":false}`},
		{[]string{"--method", "gatewaying"}, `{"method":"dr"}`},
		{[]string{"--persistent", "300"}, `{"persistence":{"timeout":300}}`},
		// A partial change of a whole-valued field starts from the current value.
		{[]string{"--persistence-prefix", "24"}, `{"persistence":{"timeout":300,"prefix_len":24}}`},
		{[]string{"--persistent", "600"}, `{"persistence":{"timeout":600,"prefix_len":24}}`},
		{[]string{"--no-persistent"}, `{"no_persistence":true}`},
		{[]string{"--sh-port"}, `{"sched_flags":{"sh_port":true}}`},
		{[]string{"--mh-fallback", "--scheduler", "mh"}, `{"scheduler":"mh","sched_flags":{"sh_port":true,"mh_fallback":true}}`},
		{[]string{"--sh-port=false"}, `{"sched_flags":{"mh_fallback":true}}`},
	}
	for _, tc := range cases {
		out := f.must(t, append([]string{"service", "set", "web"}, tc.args...)...)
		if !strings.HasPrefix(out, "updated service web (index ") {
			t.Errorf("stdout = %q", out)
		}
		jsonEqual(t, f.lastWrite(t).Body, tc.body)
	}
	svc, _ := f.serviceCopy("web")
	want := fsm.SchedFlags{MHFallback: true}
	if svc.Scheduler != "mh" || svc.SchedFlags != want || svc.Persistence != nil || svc.Method != fsm.DR {
		t.Errorf("service after the changes = %+v", svc)
	}

	writes := len(f.requests(http.MethodPatch))
	r := f.run(t, "service", "set", "web")
	wantExit(t, r, exitUsage, "nothing to change")
	r = f.run(t, "service", "set", "web", "--persistence-prefix", "24")
	wantExit(t, r, exitUsage, "service web is not persistent; give --persistent SECONDS too")
	r = f.run(t, "service", "set", "web", "--persistent", "300", "--no-persistent")
	wantExit(t, r, exitUsage, "none of the others can be")
	r = f.run(t, "service", "set", "web", "--persistent", "0")
	wantExit(t, r, exitUsage, "--persistent: 0 must be a positive number of seconds")
	if n := len(f.requests(http.MethodPatch)); n != writes {
		t.Errorf("%d patches sent by refused commands", n-writes)
	}
}

func TestServerCommands(t *testing.T) {
	f := setup(t)
	f.must(t, "server", "add", "web", "10.0.1.2:80", "--weight", "3", "--upper", "100", "--lower", "10", "--method", "route")
	jsonEqual(t, f.lastWrite(t).Body, `{"address":"10.0.1.2","port":80,"method":"dr","weight":3,"upper_threshold":100,"lower_threshold":10,"admin":""}`)
	f.must(t, "server", "add", "web", "[2001:db8::5]:80", "--method", "tun", "--tunnel", "gue", "--tunnel-port", "6080", "--tunnel-checksum", "csum", "--admin", "drained")
	jsonEqual(t, f.lastWrite(t).Body, `{"address":"2001:db8::5","port":80,"method":"tun","tunnel":"gue","tunnel_port":6080,"tunnel_checksum":"csum","weight":1,"admin":"drained"}`)

	for _, tc := range []struct {
		args []string
		path string
		body string
		out  string
	}{
		{[]string{"set", "web", "10.0.1.2:80", "--weight", "0"}, "/v1/services/web/servers/10.0.1.2:80", `{"weight":0}`, "updated server 10.0.1.2:80 of service web"},
		{[]string{"drain", "web", "10.0.1.1"}, "/v1/services/web/servers/10.0.1.1:80", `{"admin":"drained"}`, "drained server 10.0.1.1:80 of service web"},
		{[]string{"enable", "web", "10.0.1.1:80"}, "/v1/services/web/servers/10.0.1.1:80", `{"admin":"enabled"}`, "enabled server 10.0.1.1:80 of service web"},
		{[]string{"disable", "web", "[2001:db8::5]"}, "/v1/services/web/servers/%5B2001:db8::5%5D:80", `{"admin":"disabled"}`, "disabled server [2001:db8::5]:80 of service web"},
		{[]string{"rm", "web", "[2001:db8::5]:80"}, "/v1/services/web/servers/%5B2001:db8::5%5D:80", "", "removed server [2001:db8::5]:80 from service web"},
	} {
		out := f.must(t, append([]string{"server"}, tc.args...)...)
		if want := fmt.Sprintf("%s (index %d)\n", tc.out, f.currentIndex()); out != want {
			t.Errorf("stdout = %q, want %q", out, want)
		}
		w := f.lastWrite(t)
		if w.Path != tc.path {
			t.Errorf("%v: path = %s, want %s", tc.args, w.Path, tc.path)
		}
		if tc.body != "" {
			jsonEqual(t, w.Body, tc.body)
		}
	}
	if got, want := f.serverKeys("web"), []string{"10.0.1.1:80", "10.0.1.2:80"}; !reflect.DeepEqual(got, want) {
		t.Errorf("servers = %v, want %v", got, want)
	}

	out := f.must(t, "server", "ls", "web")
	want := `ADDRESS      METHOD  WEIGHT  UPPER  LOWER  ADMIN    TUNNEL
10.0.1.1:80  dr      1       -      -      enabled  -
10.0.1.2:80  dr      0       100    10     enabled  -
`
	if out != want {
		t.Errorf("server ls:\n%s\nwant:\n%s", out, want)
	}
	var list struct {
		Index uint64           `json:"index"`
		Data  []fsm.RealServer `json:"data"`
	}
	if err := json.Unmarshal([]byte(f.must(t, "server", "ls", "web", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Data) != 2 || list.Index != f.currentIndex() || list.Data[1].UpperThreshold != 100 {
		t.Errorf("server ls -o json = %+v", list)
	}
}

func TestServerArgumentErrorsAreCaughtBeforeSending(t *testing.T) {
	f := setup(t)
	before := len(f.requests(""))
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"server", "add", "web", "10.0.1.1:99999"}, `ADDR:PORT "10.0.1.1:99999": port 99999 is out of range 0-65535`},
		{[]string{"server", "add", "web", "10.0.1.1:http"}, `ADDR:PORT "10.0.1.1:http": port "http" is not a number`},
		{[]string{"server", "add", "web", "web1:80"}, `ADDR:PORT "web1:80": "web1" is not an IP address`},
		{[]string{"server", "add", "web", "2001:db8::1:80:"}, `ADDR:PORT "2001:db8::1:80:": "2001:db8::1:80:" is not an IP address`},
		{[]string{"server", "rm", "web", "fe80::1%eth0"}, `ADDR:PORT "fe80::1%eth0": an address with a zone cannot be a real server`},
		{[]string{"server", "add", "web", "10.0.1.1:80", "--weight", "70000"}, `--weight: 70000 is out of range 0-65535`},
		{[]string{"server", "add", "web", "10.0.1.1:80", "--method", "bogus"}, `--method: "bogus" is not a forwarding method`},
		{[]string{"server", "set", "web", "10.0.1.1:80", "--tunnel", "vxlan"}, `--tunnel: "vxlan" is not a tunnel type`},
		{[]string{"server", "set", "web", "10.0.1.1:80", "--admin", "off"}, `--admin: "off" is not an admin state`},
		{[]string{"server", "set", "web", "10.0.1.1:80"}, `nothing to change`},
		{[]string{"server", "add", "web"}, `missing argument ADDR:PORT`},
		{[]string{"server", "add", "web", "10.0.1.1:80", "extra"}, `unexpected argument "extra" (want SERVICE ADDR:PORT)`},
		{[]string{"server", "add", "web", "10.0.1.1:80", "--weight", "x"}, `invalid argument "x" for "--weight"`},
		{[]string{"service", "add", "x", "--vip", "web-vip"}, `at least one of the flags in the group [port fwmark] is required`},
		{[]string{"service", "add", "x", "--port", "80"}, `--vip is required for a --port service`},
		{[]string{"service", "add", "x", "--vip", "web-vip", "--port", "0"}, `--port: 0 is out of range 1-65535`},
		{[]string{"service", "add", "x", "--fwmark", "1", "--proto", "udp"}, `if any flags in the group [proto fwmark] are set none of the others can be`},
		{[]string{"service", "add", "x", "--vip", "v", "--port", "80", "--proto", "icmp"}, `--proto: "icmp" is not a protocol`},
		{[]string{"service", "add", "x", "--fwmark", "1", "--family", "ipx"}, `--family: "ipx" is not an address family`},
		{[]string{"service", "add", "x", "--vip", "v", "--port", "80", "--persistence-prefix", "24"}, `--persistence-prefix needs --persistent`},
		{[]string{"vip", "add", "v", "192.0.2.300/24"}, `PREFIX "192.0.2.300/24"`},
		{[]string{"member", "add", "d4", "10.0.0.14"}, `RAFT_ADDR "10.0.0.14": want host:port`},
		{[]string{"member", "add", "d4", "10.0.0.14:0"}, `RAFT_ADDR "10.0.0.14:0": port "0" is not a number in 1-65535`},
		{[]string{"member", "add", "d4", "dir4.example:7901"}, `RAFT_ADDR "dir4.example:7901": "dir4.example" is not an IP address`},
		{[]string{"nosuch"}, `unknown command "nosuch"`},
		{[]string{"vip", "lss"}, `unknown command "lss" for "clusterctl vip" (did you mean ls?)`},
		{[]string{"server", "drian", "web", "10.0.1.1"}, `unknown command "drian" for "clusterctl server" (did you mean drain?)`},
		{[]string{"status", "--bogus"}, `unknown flag: --bogus`},
		{[]string{"-o", "yaml", "vip", "ls"}, `-o/--output: "yaml" is not an output format (want table or json)`},
		{[]string{"--timeout", "-1s", "vip", "ls"}, `--timeout: -1s must not be negative`},
		{[]string{"status", "now"}, `unexpected argument "now"`},
	} {
		r := f.run(t, tc.args...)
		wantExit(t, r, exitUsage, "clusterctl: "+tc.msg)
		if !strings.Contains(r.stderr, "--help' for usage") {
			t.Errorf("%v: usage error without the help hint: %q", tc.args, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("%v: stdout %q on a usage error", tc.args, r.stdout)
		}
	}
	if n := len(f.requests("")) - before; n != 0 {
		t.Errorf("%d requests sent by invalid command lines: %+v", n, f.requests("")[before:])
	}
}

func TestAPIErrorsNameTheField(t *testing.T) {
	f := setup(t)
	r := f.run(t, "server", "add", "web", "10.0.1.9:8080")
	wantExit(t, r, exitFailure)
	if want := "clusterctl: server.port: DR cannot remap ports: port 8080 differs from service port 80\n"; r.stderr != want {
		t.Errorf("stderr = %q, want %q", r.stderr, want)
	}
	r = f.run(t, "service", "add", "api", "--vip", "nope", "--port", "443")
	wantExit(t, r, exitFailure, "clusterctl: service.vip: VIP nope does not exist")
	r = f.run(t, "service", "show", "nope")
	wantExit(t, r, exitFailure, "clusterctl: service nope not found")
	r = f.run(t, "server", "rm", "nope", "10.0.1.1")
	wantExit(t, r, exitFailure, "clusterctl: look up the port of service nope for 10.0.1.1: service nope not found")
	r = f.run(t, "vip", "rm", "web-vip")
	wantExit(t, r, exitFailure, "VIP web-vip is used by services web; use force")
	r = f.run(t, "service", "add", "web", "--vip", "web-vip", "--port", "80")
	wantExit(t, r, exitFailure, "service.name: service web already exists")
	if r.stdout != "" {
		t.Errorf("stdout on failure: %q", r.stdout)
	}
	f.must(t, "vip", "rm", "web-vip", "--force")
	if w := f.lastWrite(t); w.Path != "/v1/vips/web-vip" || w.Query != "force=true" {
		t.Errorf("vip rm --force sent %s?%s", w.Path, w.Query)
	}
}

func TestUnavailableClusterExitsThree(t *testing.T) {
	f := setup(t)
	f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set(api.IndexHeader, "12")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"index":12,"error":{"code":"no_leader","message":"no leader is known; retry later"}}`))
		return true
	})
	r := f.run(t, "service", "rm", "web")
	wantExit(t, r, exitUnavailable, "clusterctl: no leader is known; retry later")

	f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html><body><h1>502 Bad Gateway</h1></body></html>"))
		return true
	})
	r = f.run(t, "vip", "ls")
	wantExit(t, r, exitUnavailable, "answered 502 Bad Gateway", `"<html><body><h1>502 Bad Gateway`)

	// A forwarded request that reached a director which just lost
	// leadership is worth retrying too.
	f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusMisdirectedRequest)
		_, _ = w.Write([]byte(`{"index":12,"error":{"code":"not_leader","message":"director d2 received a forwarded request but is not the leader; retry"}}`))
		return true
	})
	r = f.run(t, "vip", "rm", "web-vip")
	wantExit(t, r, exitUnavailable, "is not the leader; retry")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	r = runEnv(t, env{}, "--addr", addr, "status")
	wantExit(t, r, exitUnavailable)
	want := "clusterctl: cannot reach clusterd at http://" + addr + ": connection refused — is it running? set --addr or CLUSTERCTL_ADDR\n"
	if r.stderr != want {
		t.Errorf("stderr = %q, want %q", r.stderr, want)
	}
}

func TestTimeoutExitsThree(t *testing.T) {
	f := setup(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		// Answer nothing until the client gives up.
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return true
	})
	r := f.run(t, "--timeout", "50ms", "service", "rm", "web")
	wantExit(t, r, exitUnavailable, "no answer from clusterd at", "within 50ms", "may still commit")
}

func TestAddrFromEnvironment(t *testing.T) {
	f := setup(t)
	r := runEnv(t, env{Getenv: func(k string) string {
		if k == addrEnv {
			return f.srv.URL
		}
		return ""
	}}, "vip", "ls")
	wantExit(t, r, exitOK)
	if !strings.Contains(r.stdout, "web-vip") {
		t.Errorf("stdout = %q", r.stdout)
	}
	r = runEnv(t, env{}, "--addr", "nohostport", "vip", "ls")
	wantExit(t, r, exitUsage, "--addr: clusterd address \"nohostport\": want host:port")
}

func TestListsAndShow(t *testing.T) {
	f := setup(t)
	f.must(t, "server", "add", "web", "10.0.1.2", "--weight", "2")
	f.must(t, "service", "set", "web", "--persistent", "300", "--persistence-prefix", "24", "--scheduler", "sh", "--sh-port")

	out := f.must(t, "vip", "ls")
	if want := "NAME     PREFIX         INTERFACE\nweb-vip  192.0.2.10/24  eth0\n"; out != want {
		t.Errorf("vip ls:\n%q\nwant\n%q", out, want)
	}
	out = f.must(t, "service", "ls")
	want := `NAME  VIP      SERVICE  SCHEDULER     METHOD  PERSISTENT  SERVERS  WEIGHT
web   web-vip  tcp/80   sh (sh-port)  dr      300s /24    2        3
`
	if out != want {
		t.Errorf("service ls:\n%s\nwant:\n%s", out, want)
	}
	out = f.must(t, "service", "show", "web")
	want = fmt.Sprintf(`Name:        web
VIP:         web-vip
Service:     tcp/80
Scheduler:   sh (sh-port)
Method:      dr
Persistent:  300s /24
One-packet:  no
Index:       %d

ADDRESS      METHOD  WEIGHT  UPPER  LOWER  ADMIN    TUNNEL
10.0.1.1:80  dr      1       -      -      enabled  -
10.0.1.2:80  dr      2       -      -      enabled  -
`, f.currentIndex())
	if out != want {
		t.Errorf("service show:\n%s\nwant:\n%s", out, want)
	}

	var svc struct {
		Index uint64      `json:"index"`
		Data  fsm.Service `json:"data"`
	}
	if err := json.Unmarshal([]byte(f.must(t, "service", "show", "web", "-o", "json", "--consistent")), &svc); err != nil {
		t.Fatal(err)
	}
	if svc.Data.Name != "web" || len(svc.Data.Servers) != 2 || svc.Index != f.currentIndex() {
		t.Errorf("service show -o json = %+v", svc)
	}
	gets := f.requests(http.MethodGet)
	if q := gets[len(gets)-1].Query; q != "consistent=true" {
		t.Errorf("--consistent sent query %q", q)
	}

	var empty struct {
		Data json.RawMessage `json:"data"`
	}
	g := newFakeAPI(t)
	if err := json.Unmarshal([]byte(g.must(t, "-o", "json", "service", "ls")), &empty); err != nil {
		t.Fatal(err)
	}
	if string(empty.Data) != "[]" {
		t.Errorf("empty list prints data %s, want []", empty.Data)
	}
}

func TestStatus(t *testing.T) {
	f := setup(t)
	out := f.must(t, "status")
	for _, s := range []string{"Node:", "d1", "State:", "Leader", "Leader:", "d1 (10.0.0.11:7946)", "Term:", "3",
		"Services:", "1 (1 real server)", "Last reconcile:", "never", "VIP", "web-vip  192.0.2.10/24  d1"} {
		if !strings.Contains(out, s) {
			t.Errorf("status lacks %q:\n%s", s, out)
		}
	}
	var st struct {
		Index uint64     `json:"index"`
		Data  api.Status `json:"data"`
	}
	if err := json.Unmarshal([]byte(f.must(t, "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Data.Node != "d1" || st.Data.Voters != 3 || st.Index == 0 {
		t.Errorf("status -o json = %+v", st)
	}
	// status and ipvs show describe the director asked, so --consistent,
	// which would have the leader answer, is not passed on.
	f.must(t, "--consistent", "status")
	f.must(t, "--consistent", "ipvs", "show")
	f.must(t, "vip", "ls")
	for _, r := range f.requests(http.MethodGet) {
		if r.Query != "" {
			t.Errorf("GET %s sent query %q", r.Path, r.Query)
		}
	}
}

func TestMembersAndLeader(t *testing.T) {
	f := newFakeAPI(t)
	out := f.must(t, "member", "ls")
	want := `ID  ADDRESS         SUFFRAGE  LEADER  API             GOSSIP   PING  WARNING
d1  10.0.0.11:7946  Voter     *       10.0.0.11:7950  alive    -     -
d2  10.0.0.12:7946  Voter             -               alive    -     -
d3  10.0.0.13:7946  Voter             -               suspect  -     -
`
	if out != want {
		t.Errorf("member ls:\n%s\nwant:\n%s", out, want)
	}
	f.must(t, "member", "add", "d4", "10.0.0.14:7946")
	jsonEqual(t, f.lastWrite(t).Body, `{"id":"d4","address":"10.0.0.14:7946"}`)
	r := f.run(t, "member", "rm", "d1")
	wantExit(t, r, exitFailure, "clusterctl: id: d1 is the leader")
	out = f.must(t, "leader", "transfer", "--to", "d2")
	if !strings.HasPrefix(out, "transferred leadership to d2 (index ") {
		t.Errorf("stdout = %q", out)
	}
	jsonEqual(t, f.lastWrite(t).Body, `{"to":"d2"}`)
	f.must(t, "leader", "transfer")
	jsonEqual(t, f.lastWrite(t).Body, `{}`)
	f.must(t, "member", "rm", "d4", "--force")
	if w := f.lastWrite(t); w.Method != http.MethodDelete || w.Path != "/v1/members/d4" || w.Query != "force=true" {
		t.Errorf("member rm --force sent %+v", w)
	}
	r = f.run(t, "leader", "transfer", "--to", "d9")
	wantExit(t, r, exitFailure, "clusterctl: to: d9 is not a member")
}

func TestSnapshotSaveAndRestore(t *testing.T) {
	f := setup(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "snap.json")
	out := f.must(t, "snapshot", "save", file)
	if want := fmt.Sprintf("saved snapshot of 1 VIP, 1 service and 1 real server to %s (index %d)\n", file, f.currentIndex()); out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	saved, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var st fsm.State
	if err := json.Unmarshal(saved, &st); err != nil {
		t.Fatalf("saved file is not a state: %v", err)
	}
	if st.Services["web"] == nil || st.VIPs["web-vip"] == nil || !bytes.HasPrefix(saved, []byte("{\n  ")) {
		t.Errorf("saved state:\n%s", saved)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("save left %d files behind", len(entries))
	}
	if stdout := f.must(t, "snapshot", "save", "-"); stdout != string(saved) {
		t.Errorf("save - wrote\n%s\nwant the file's contents\n%s", stdout, saved)
	}

	f.must(t, "service", "rm", "web")
	posts := len(f.requests(http.MethodPost))

	// Without a terminal there is no one to ask: refuse without --yes.
	r := f.run(t, "snapshot", "restore", file)
	wantExit(t, r, exitUsage, "stdin is not a terminal to confirm it: pass --yes")
	// A person who does not confirm changes nothing.
	r = runEnv(t, env{Stdin: strings.NewReader("no\n"), StdinIsTerminal: true}, "--addr", f.addr(), "snapshot", "restore", file)
	wantExit(t, r, exitFailure, "Type yes to continue", "1 VIP, 1 service and 1 real server", "restore cancelled")
	// From stdin the data and the answer would share a stream.
	r = runEnv(t, env{Stdin: bytes.NewReader(saved), StdinIsTerminal: true}, "--addr", f.addr(), "snapshot", "restore", "-")
	wantExit(t, r, exitUsage, "pass --yes")
	if n := len(f.requests(http.MethodPost)); n != posts {
		t.Fatalf("%d restores sent without confirmation", n-posts)
	}
	if _, ok := f.serviceCopy("web"); ok {
		t.Fatal("service came back without a restore")
	}

	r = runEnv(t, env{Stdin: strings.NewReader("yes\n"), StdinIsTerminal: true}, "--addr", f.addr(), "snapshot", "restore", file)
	wantExit(t, r, exitOK)
	if want := fmt.Sprintf("restored 1 VIP, 1 service and 1 real server from %s (index %d)\n", file, f.currentIndex()); r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
	if _, ok := f.serviceCopy("web"); !ok {
		t.Error("restore did not bring the service back")
	}
	jsonEqual(t, f.lastWrite(t).Body, string(saved))

	r = runEnv(t, env{Stdin: bytes.NewReader(saved)}, "--addr", f.addr(), "-o", "json", "snapshot", "restore", "-", "--yes")
	wantExit(t, r, exitOK)
	jsonEqual(t, r.stdout, fmt.Sprintf(`{"index":%d}`, f.currentIndex()))
}

func TestSnapshotRestoreRefusesBadFiles(t *testing.T) {
	f := newFakeAPI(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		content, msg string
	}{
		{"{\n  \"index\": 3,\n  \"vipz\": {}\n}", `json: unknown field "vipz"`},
		{"{\n  \"index\": 3,\n  \"vips\": {\"v\": {\"name\": \"v\", \"prefix\": 7}}\n}", "line 3"},
		{"{\n  \"index\": 3,\n  \"vips\": {,}\n}", "line 3: invalid character ','"},
		{"", "empty file"},
		{`{"index":1} {"index":2}`, "unexpected data after the JSON object"},
	} {
		p := write("bad.json", tc.content)
		r := f.run(t, "snapshot", "restore", "--yes", p)
		wantExit(t, r, exitFailure, "clusterctl: snapshot "+p+": ", tc.msg)
	}
	r := f.run(t, "snapshot", "restore", "--yes", filepath.Join(dir, "missing.json"))
	wantExit(t, r, exitFailure, "read snapshot: open ", "no such file")
	r = f.run(t, "snapshot", "save", filepath.Join(dir, "no", "such", "dir", "s.json"))
	wantExit(t, r, exitFailure, "save snapshot")
	if n := len(f.requests(http.MethodPost)); n != 0 {
		t.Errorf("%d restores sent for bad files", n)
	}
}

func TestIPVSShow(t *testing.T) {
	f := newFakeAPI(t)
	f.ipvs = api.IPVSReport{Node: "d1", Backend: "kernel", Index: 42, InSync: true, Services: []api.IPVSService{{
		Key: "TCP 192.0.2.10:80", Name: "web",
		Desired: &api.IPVSServiceAttrs{Scheduler: "wlc", Timeout: 300},
		Actual:  &api.IPVSServiceAttrs{Scheduler: "wlc", Timeout: 300},
		Destinations: []api.IPVSDestination{{
			Address: "10.0.1.1:80",
			Desired: &api.IPVSDestAttrs{Method: "dr", Weight: 1},
			Actual:  &api.IPVSDestAttrs{Method: "dr", Weight: 1, ActiveConns: 5, InactiveConns: 2},
		}, {
			Address: "10.0.1.9:80", Diff: "retiring",
			Actual: &api.IPVSDestAttrs{Method: "dr", Weight: 0, ActiveConns: 1},
		}},
	}}}
	out := f.must(t, "ipvs", "show")
	want := `director d1 (kernel backend), configuration index 42
PROT  ADDRESS        SCHEDULER  FORWARD  WEIGHT  ACTIVECONN  INACTCONN  FLAGS           SERVICE  DIFF
TCP   192.0.2.10:80  wlc                                                persistent 300  web
  ->  10.0.1.1:80               Route    1       5           2
  ->  10.0.1.9:80               Route    0       1           0                                   retiring
in sync; 1 destination removed, at weight 0 until its connections end
`
	if out != want {
		t.Errorf("ipvs show:\n%s\nwant:\n%s", out, want)
	}

	f.ipvs.InSync = false
	f.ipvs.Services[0].Diff = "changed"
	f.ipvs.Services[0].Actual = &api.IPVSServiceAttrs{Scheduler: "rr", Timeout: 300}
	f.ipvs.Services[0].Destinations[0].Diff = "changed"
	f.ipvs.Services[0].Destinations[0].Actual = &api.IPVSDestAttrs{Method: "nat", Weight: 3}
	f.ipvs.Services[0].Destinations = append(f.ipvs.Services[0].Destinations[:1],
		api.IPVSDestination{Address: "10.0.1.2:80", Diff: "missing", Desired: &api.IPVSDestAttrs{Method: "dr", Weight: 1}},
		api.IPVSDestination{Address: "10.0.1.3:80", Diff: "extra", Actual: &api.IPVSDestAttrs{Method: "dr", Weight: 1}})
	f.ipvs.Services = append(f.ipvs.Services, api.IPVSService{Key: "FWM 7 inet", Diff: "foreign",
		Actual: &api.IPVSServiceAttrs{Scheduler: "rr"}})
	r := f.run(t, "ipvs", "show")
	wantExit(t, r, exitOK)
	want = `director d1 (kernel backend), configuration index 42
PROT  ADDRESS        SCHEDULER  FORWARD  WEIGHT  ACTIVECONN  INACTCONN  FLAGS           SERVICE  DIFF
TCP   192.0.2.10:80  rr                                                 persistent 300  web      changed: scheduler rr (want wlc)
  ->  10.0.1.1:80               Masq     3       0           0                                   changed: forward Masq (want Route), weight 3 (want 1)
  ->  10.0.1.2:80               Route    1       -           -                                   missing
  ->  10.0.1.3:80               Route    1       0           0                                   extra
FWM   7 inet         rr                                                                          foreign
4 differences; 1 foreign service not managed by Directorate
`
	if r.stdout != want {
		t.Errorf("ipvs show:\n%s\nwant:\n%s", r.stdout, want)
	}
	var rep struct {
		Data api.IPVSReport `json:"data"`
	}
	if err := json.Unmarshal([]byte(f.must(t, "ipvs", "show", "-o", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Data.InSync || len(rep.Data.Services) != 2 || rep.Data.Services[0].Destinations[2].Diff != "extra" {
		t.Errorf("ipvs show -o json = %+v", rep.Data)
	}
}

func TestCompletion(t *testing.T) {
	f := setup(t)
	f.must(t, "service", "add", "api", "--vip", "web-vip", "--port", "443")
	f.must(t, "server", "add", "web", "10.0.1.2")
	complete := func(args ...string) []string {
		t.Helper()
		r := f.run(t, append([]string{"__complete"}, args...)...)
		if r.code != 0 {
			t.Fatalf("__complete %v: exit %d", args, r.code)
		}
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		return lines[:len(lines)-1] // the last line is the directive
	}
	if got, want := complete("service", "rm", ""), []string{"api", "web"}; !sameSet(got, want) {
		t.Errorf("service names = %v, want %v", got, want)
	}
	if got, want := complete("service", "show", "w"), []string{"web"}; !sameSet(got, want) {
		t.Errorf("service names with prefix = %v, want %v", got, want)
	}
	if got, want := complete("server", "drain", "web", ""), []string{"10.0.1.1:80", "10.0.1.2:80"}; !sameSet(got, want) {
		t.Errorf("server keys = %v, want %v", got, want)
	}
	if got, want := complete("vip", "rm", ""), []string{"web-vip"}; !sameSet(got, want) {
		t.Errorf("VIP names = %v, want %v", got, want)
	}
	if got, want := complete("member", "rm", ""), []string{"d1", "d2", "d3"}; !sameSet(got, want) {
		t.Errorf("member IDs = %v, want %v", got, want)
	}
	if got, want := complete("leader", "transfer", "--to", ""), []string{"d2", "d3"}; !sameSet(got, want) {
		t.Errorf("transfer targets = %v, want %v", got, want)
	}
	if got, want := complete("server", "add", "web", "10.0.0.1", "--method", ""), []string{"nat", "dr", "tun"}; !sameSet(got, want) {
		t.Errorf("methods = %v, want %v", got, want)
	}
	// Completion against a dead address offers nothing rather than failing.
	r := runEnv(t, env{}, "--addr", "127.0.0.1:1", "__complete", "service", "rm", "")
	if r.code != 0 || strings.TrimSpace(r.stdout) != ":4" {
		t.Errorf("completion without clusterd: exit %d, stdout %q", r.code, r.stdout)
	}

	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		r := f.run(t, "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, "clusterctl") {
			t.Errorf("completion %s: exit %d, %d bytes", shell, r.code, len(r.stdout))
		}
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestHelpAndVersion(t *testing.T) {
	r := runEnv(t, env{Version: "v1.2.3"}, "--version")
	wantExit(t, r, exitOK)
	if !strings.Contains(r.stdout, "v1.2.3") {
		t.Errorf("--version = %q", r.stdout)
	}
	r = runEnv(t, env{}, "service", "add", "--help")
	wantExit(t, r, exitOK)
	if !strings.Contains(r.stdout, "defaults to dr (ipvsadm -g") {
		t.Errorf("service add --help does not explain the default method:\n%s", r.stdout)
	}
	r = runEnv(t, env{}, "--help")
	if !strings.Contains(r.stdout, "Exit status:") || !strings.Contains(r.stdout, `(default "127.0.0.1:7950")`) {
		t.Errorf("--help does not document the exit status or the default address:\n%s", r.stdout)
	}
}
