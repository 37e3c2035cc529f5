package probes_test

import (
	"cmp"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/directorate/directorate/probes"
)

// startDNS serves a small zone on a loopback UDP port: up.test has an A
// and an AAAA record, alias.test is a CNAME to it, slow.test is never
// answered, and every other name is NXDOMAIN.
func startDNS(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name, qtype := q.Question[0].Name, q.Question[0].Qtype
		rr := func(s string) dns.RR {
			r, err := dns.NewRR(s)
			if err != nil {
				t.Errorf("zone record %q: %v", s, err)
			}
			return r
		}
		switch {
		case name == "slow.test.":
			return
		case name == "up.test." && qtype == dns.TypeA:
			m.Answer = append(m.Answer, rr("up.test. 60 IN A 192.0.2.1"), rr("up.test. 60 IN A 192.0.2.2"))
		case name == "up.test." && qtype == dns.TypeAAAA:
			m.Answer = append(m.Answer, rr("up.test. 60 IN AAAA 2001:db8::1"))
		case name == "up.test.":
		case name == "alias.test." && qtype == dns.TypeA:
			m.Answer = append(m.Answer, rr("alias.test. 60 IN CNAME up.test."), rr("up.test. 60 IN A 192.0.2.1"))
		default:
			m.Rcode = dns.RcodeNameError
		}
		if err := w.WriteMsg(m); err != nil {
			t.Errorf("answer: %v", err)
		}
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() {
		if err := srv.ActivateAndServe(); err != nil {
			t.Errorf("dns server: %v", err)
		}
	}()
	<-started
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("dns server shutdown: %v", err)
		}
	})
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

func TestDNSCheck(t *testing.T) {
	target := startDNS(t)
	c := probes.NewDNSChecker()
	tests := []struct {
		name, qname, qtype, expect string
		timeout                    time.Duration
		want                       []string
	}{
		{name: "answer", qname: "up.test"},
		{name: "answer matches", qname: "up.test.", expect: `^192\.0\.2\.2$`},
		{name: "aaaa", qname: "up.test", qtype: "AAAA", expect: "^2001:db8::1$"},
		{name: "through a cname", qname: "alias.test", expect: `^192\.0\.2\.1$`},
		{name: "answer mismatch", qname: "up.test", expect: `^198\.51\.100\.1$`, want: []string{`no answer matches "^198\\.51\\.100\\.1$"`, "192.0.2.1, 192.0.2.2"}},
		{name: "no records of the type", qname: "up.test", qtype: "MX", want: []string{"no answer of the type asked"}},
		{name: "nxdomain", qname: "missing.test", want: []string{"answer code NXDOMAIN"}},
		{name: "no answer", qname: "slow.test", timeout: 200 * time.Millisecond, want: []string{"dns", "slow.test", "exchange"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := spec(probes.CheckDNS, target, cmp.Or(tt.timeout, time.Second))
			s.DNSName, s.DNSType, s.DNSExpect = tt.qname, tt.qtype, tt.expect
			if err := s.Validate(); err != nil {
				t.Fatalf("test spec invalid: %v", err)
			}
			err := check(t, c, s)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("check failed: %v", err)
				}
				return
			}
			wantErr(t, err, tt.want...)
		})
	}
}

func TestDNSCheckRefused(t *testing.T) {
	// Nothing listens: the kernel answers with ICMP port unreachable.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := netip.MustParseAddrPort(pc.LocalAddr().String())
	pc.Close()
	s := spec(probes.CheckDNS, target, time.Second)
	wantErr(t, check(t, probes.NewDNSChecker(), s), "exchange", "connection refused")
}
