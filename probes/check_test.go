package probes_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/probes"
)

// validSpec is a minimal valid check of kind k.
func validSpec(k probes.CheckKind) probes.CheckSpec {
	s := probes.CheckSpec{
		Kind:     k,
		Target:   netip.MustParseAddrPort("192.0.2.10:80"),
		Interval: time.Second, Timeout: 500 * time.Millisecond, Jitter: 100 * time.Millisecond,
		Rise: 2, Fall: 3,
	}
	switch k {
	case probes.CheckDNS:
		s.DNSName = "www.example."
	case probes.CheckExec:
		s.Command = "true"
	}
	return s
}

func TestCheckSpecValidateAccepts(t *testing.T) {
	for _, k := range []probes.CheckKind{probes.CheckNone, probes.CheckTCP, probes.CheckHTTP, probes.CheckHTTPS, probes.CheckDNS, probes.CheckExec} {
		if err := validSpec(k).Validate(); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	full := validSpec(probes.CheckHTTPS)
	full.Path, full.Host, full.ExpectStatus, full.BodyRegex = "/health?full=1", "www.example:8443", "200-299, 301", "^ok"
	full.TLSVerify, full.ServerName = true, "www.example"
	if err := full.Validate(); err != nil {
		t.Errorf("full https: %v", err)
	}
	none := probes.CheckSpec{Kind: probes.CheckNone, Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1}
	if err := none.Validate(); err != nil {
		t.Errorf("none without a target: %v", err)
	}
	dns := validSpec(probes.CheckDNS)
	dns.DNSType, dns.DNSExpect = "aaaa", `^2001:db8::`
	if err := dns.Validate(); err != nil {
		t.Errorf("dns: %v", err)
	}
}

func TestCheckSpecValidateRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(*probes.CheckSpec)
		kind probes.CheckKind
		want []string // every one must appear in the error
	}{
		{"no kind", func(s *probes.CheckSpec) { s.Kind = "" }, probes.CheckTCP, []string{"kind: missing"}},
		{"unknown kind", func(s *probes.CheckSpec) { s.Kind = "smtp" }, probes.CheckTCP, []string{`kind: unknown kind "smtp"`}},
		{"no target", func(s *probes.CheckSpec) { s.Target = netip.AddrPort{} }, probes.CheckTCP, []string{"target: missing address"}},
		{"port 0", func(s *probes.CheckSpec) { s.Target = netip.MustParseAddrPort("192.0.2.1:0") }, probes.CheckTCP, []string{"port: must be 1..65535"}},
		{"interval", func(s *probes.CheckSpec) { s.Interval = 0 }, probes.CheckTCP, []string{"interval: must be > 0"}},
		{"timeout 0", func(s *probes.CheckSpec) { s.Timeout = 0 }, probes.CheckTCP, []string{"timeout: must be > 0"}},
		{"timeout over interval", func(s *probes.CheckSpec) { s.Timeout = 2 * time.Second }, probes.CheckTCP, []string{"timeout: must be at most the interval"}},
		{"negative jitter", func(s *probes.CheckSpec) { s.Jitter = -1 }, probes.CheckTCP, []string{"jitter: must be >= 0"}},
		{"jitter of a whole interval", func(s *probes.CheckSpec) { s.Jitter = time.Second }, probes.CheckTCP, []string{"jitter: must be less than the interval"}},
		{"rise and fall", func(s *probes.CheckSpec) { s.Rise, s.Fall = 0, -1 }, probes.CheckTCP, []string{"rise: must be >= 1", "fall: must be >= 1"}},
		{"path on tcp", func(s *probes.CheckSpec) { s.Path = "/" }, probes.CheckTCP, []string{"path: only for http and https checks, not tcp"}},
		{"tls on http", func(s *probes.CheckSpec) { s.TLSVerify, s.ServerName = true, "x" }, probes.CheckHTTP, []string{"tls_verify: only for https", "server_name: only for https"}},
		{"command on dns", func(s *probes.CheckSpec) { s.Command = "true" }, probes.CheckDNS, []string{"command: only for exec"}},
		{"dns fields on tcp", func(s *probes.CheckSpec) { s.DNSName, s.DNSType, s.DNSExpect = "a.", "A", "x" }, probes.CheckTCP, []string{"dns_name: only for dns", "dns_type: only", "dns_expect: only"}},
		{"relative path", func(s *probes.CheckSpec) { s.Path = "health" }, probes.CheckHTTP, []string{"path: must start with /"}},
		{"path with space", func(s *probes.CheckSpec) { s.Path = "/a b" }, probes.CheckHTTP, []string{"path: must not contain white space"}},
		{"host with slash", func(s *probes.CheckSpec) { s.Host = "a/b" }, probes.CheckHTTP, []string{"host: must be a host name"}},
		{"status out of range", func(s *probes.CheckSpec) { s.ExpectStatus = "200,700" }, probes.CheckHTTP, []string{`expect_status: "700" is not a status code`}},
		{"status backwards", func(s *probes.CheckSpec) { s.ExpectStatus = "299-200" }, probes.CheckHTTP, []string{`expect_status: range "299-200" runs backwards`}},
		{"status junk", func(s *probes.CheckSpec) { s.ExpectStatus = "ok" }, probes.CheckHTTP, []string{`expect_status: "ok" is not`}},
		{"body regex", func(s *probes.CheckSpec) { s.BodyRegex = "(" }, probes.CheckHTTP, []string{"body_regex: error parsing regexp"}},
		{"no dns name", func(s *probes.CheckSpec) { s.DNSName = "" }, probes.CheckDNS, []string{"dns_name: missing"}},
		{"bad dns name", func(s *probes.CheckSpec) { s.DNSName = "a..b" }, probes.CheckDNS, []string{"dns_name: not a domain name"}},
		{"dns type", func(s *probes.CheckSpec) { s.DNSType = "AX" }, probes.CheckDNS, []string{`dns_type: unknown record type "AX"`}},
		{"dns expect", func(s *probes.CheckSpec) { s.DNSExpect = "[" }, probes.CheckDNS, []string{"dns_expect: error parsing regexp"}},
		{"no command", func(s *probes.CheckSpec) { s.Command = "  " }, probes.CheckExec, []string{"command: missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec(tt.kind)
			tt.edit(&s)
			err := s.Validate()
			if err == nil {
				t.Fatalf("Validate(%+v) = nil", s)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// spec returns a valid spec of kind k against target with a timeout.
func spec(k probes.CheckKind, target netip.AddrPort, timeout time.Duration) probes.CheckSpec {
	s := validSpec(k)
	s.Target = target
	s.Interval, s.Timeout, s.Jitter = max(timeout, time.Second), timeout, 0
	return s
}

// check runs one attempt with the spec's timeout, as the Scheduler does,
// and fails the test if it overruns the timeout by far.
func check(t *testing.T, c probes.Checker, s probes.CheckSpec) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	defer cancel()
	start := time.Now()
	err := c.Check(ctx, s)
	if took := time.Since(start); took > s.Timeout+2*time.Second {
		t.Errorf("check took %s, timeout %s", took, s.Timeout)
	}
	return err
}

// wantErr fails unless err is non-nil and says every one of subs.
func wantErr(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("check passed, want an error saying %q", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

// closedPort returns a loopback TCP address nobody listens on.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	return ap
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func addrPort(a net.Addr) netip.AddrPort { return netip.MustParseAddrPort(a.String()) }

func TestTCPCheck(t *testing.T) {
	c := probes.NewTCPChecker()
	l := listenTCP(t)
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.Close()
			accepted <- struct{}{}
		}
	}()
	if err := check(t, c, spec(probes.CheckTCP, addrPort(l.Addr()), time.Second)); err != nil {
		t.Fatalf("listening port: %v", err)
	}
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the check never reached the listener")
	}
	err := check(t, c, spec(probes.CheckTCP, closedPort(t), time.Second))
	wantErr(t, err, "tcp connect", "connection refused")
}

func TestTCPCheckTimeout(t *testing.T) {
	target := fullBacklog(t)
	err := check(t, probes.NewTCPChecker(), spec(probes.CheckTCP, target, 200*time.Millisecond))
	wantErr(t, err, "tcp connect", "timeout")
}
