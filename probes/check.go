package probes

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// CheckKind names a type of real-server health check.
type CheckKind string

// The check kinds. Their names are the `kind` values of a service's or a
// real server's check in the replicated state.
const (
	// CheckNone is always up: a server that must not be checked.
	CheckNone CheckKind = "none"
	// CheckTCP connects to Target and closes the connection.
	CheckTCP CheckKind = "tcp"
	// CheckHTTP sends a GET and checks the status and, optionally, the body.
	CheckHTTP CheckKind = "http"
	// CheckHTTPS is CheckHTTP over TLS, with or without verification.
	CheckHTTPS CheckKind = "https"
	// CheckDNS sends one DNS query over UDP and checks the answer.
	CheckDNS CheckKind = "dns"
	// CheckExec runs an operator's command, like keepalived's MISC_CHECK
	// and ldirectord's external checks: exit status 0 is up.
	CheckExec CheckKind = "exec"
)

// Defaults for optional fields of a CheckSpec, applied when the field is
// empty.
const (
	// DefaultPath is the path of an HTTP(S) check without one.
	DefaultPath = "/"
	// DefaultExpectStatus accepts success and redirects, as ldirectord's
	// and keepalived's HTTP checks do when no status is given.
	DefaultExpectStatus = "200-399"
	// DefaultDNSType is the query type of a DNS check without one.
	DefaultDNSType = "A"
)

// Environment variables an exec check's command receives.
const (
	EnvCheckAddr = "DIRECTORATE_CHECK_ADDR"
	EnvCheckPort = "DIRECTORATE_CHECK_PORT"
)

// CheckSpec is one health check of one target. It is comparable: two
// equal specs are one check, and the Scheduler runs it once however many
// services reference it.
type CheckSpec struct {
	Kind   CheckKind
	Target netip.AddrPort
	// Interval is the time between the starts of two attempts; Timeout
	// bounds one attempt and is at most Interval, so a check never
	// overlaps its own next run. Each run starts up to Jitter (less than
	// Interval) after its slot, so checks of many servers configured at
	// once do not stay in lockstep.
	Interval, Timeout, Jitter time.Duration
	// Rise successes in a row make a check up, Fall failures in a row
	// make it down.
	Rise, Fall int

	// Path (default "/"), Host header (default: the target address),
	// ExpectStatus as comma-separated codes and ranges such as
	// "200-299,301" (default "200-399"), and BodyRegex, a Go regexp the
	// first 1 MiB of the body must match (empty: the body is not read):
	// HTTP and HTTPS only.
	Path, Host, ExpectStatus, BodyRegex string
	// TLSVerify checks the server's certificate against the system roots
	// and ServerName (default: Host without its port, else the target's
	// address). HTTPS only.
	TLSVerify  bool
	ServerName string

	// DNSName is the name queried, DNSType its type (default "A"), and
	// DNSExpect an optional Go regexp that the data of at least one
	// answer record must match, such as "^192\.0\.2\.1$" for an A record.
	// An answer with a code other than NOERROR, or with no records, is a
	// failure. DNS only.
	DNSName, DNSType, DNSExpect string

	// Command is run by /bin/sh -c with DIRECTORATE_CHECK_ADDR and
	// DIRECTORATE_CHECK_PORT set to the target's address and port; exit
	// status 0 is a success. At Timeout its whole process group is
	// killed. Exec only.
	Command string
}

// String identifies the check in logs: its kind and target.
func (s CheckSpec) String() string {
	if s.Kind == CheckNone {
		return string(s.Kind)
	}
	return string(s.Kind) + " " + s.Target.String()
}

// Validate says what is wrong with the spec. Each error names the field,
// in the snake_case of the replicated state's check configuration, and
// the reason; all problems are reported together.
func (s CheckSpec) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch s.Kind {
	case CheckNone, CheckTCP, CheckHTTP, CheckHTTPS, CheckDNS, CheckExec:
	case "":
		bad("kind", "missing (one of none, tcp, http, https, dns, exec)")
	default:
		bad("kind", "unknown kind %q (one of none, tcp, http, https, dns, exec)", s.Kind)
	}
	if s.Kind != CheckNone {
		if !s.Target.Addr().IsValid() {
			bad("target", "missing address")
		} else if s.Target.Port() == 0 {
			bad("port", "must be 1..65535")
		}
	}
	if s.Interval <= 0 {
		bad("interval", "must be > 0, got %s", s.Interval)
	}
	if s.Timeout <= 0 {
		bad("timeout", "must be > 0, got %s", s.Timeout)
	} else if s.Interval > 0 && s.Timeout > s.Interval {
		bad("timeout", "must be at most the interval (%s), got %s", s.Interval, s.Timeout)
	}
	if s.Jitter < 0 {
		bad("jitter", "must be >= 0, got %s", s.Jitter)
	} else if s.Interval > 0 && s.Jitter >= s.Interval {
		bad("jitter", "must be less than the interval (%s), got %s", s.Interval, s.Jitter)
	}
	if s.Rise < 1 {
		bad("rise", "must be >= 1, got %d", s.Rise)
	}
	if s.Fall < 1 {
		bad("fall", "must be >= 1, got %d", s.Fall)
	}

	web := s.Kind == CheckHTTP || s.Kind == CheckHTTPS
	only := func(field string, set bool, allowed bool, kinds string) {
		if set && !allowed {
			bad(field, "only for %s checks, not %s", kinds, s.Kind)
		}
	}
	only("path", s.Path != "", web, "http and https")
	only("host", s.Host != "", web, "http and https")
	only("expect_status", s.ExpectStatus != "", web, "http and https")
	only("body_regex", s.BodyRegex != "", web, "http and https")
	only("tls_verify", s.TLSVerify, s.Kind == CheckHTTPS, "https")
	only("server_name", s.ServerName != "", s.Kind == CheckHTTPS, "https")
	only("dns_name", s.DNSName != "", s.Kind == CheckDNS, "dns")
	only("dns_type", s.DNSType != "", s.Kind == CheckDNS, "dns")
	only("dns_expect", s.DNSExpect != "", s.Kind == CheckDNS, "dns")
	only("command", s.Command != "", s.Kind == CheckExec, "exec")

	if web {
		if s.Path != "" && !strings.HasPrefix(s.Path, "/") {
			bad("path", "must start with /, got %q", s.Path)
		}
		if strings.ContainsAny(s.Path, " \t\r\n") {
			bad("path", "must not contain white space, got %q", s.Path)
		}
		if strings.ContainsAny(s.Host, " \t\r\n/") {
			bad("host", "must be a host name with an optional port, got %q", s.Host)
		}
		if s.ExpectStatus != "" {
			if _, err := parseStatusSet(s.ExpectStatus); err != nil {
				bad("expect_status", "%v", err)
			}
		}
		if _, err := regexp.Compile(s.BodyRegex); err != nil {
			bad("body_regex", "%v", err)
		}
	}
	if s.Kind == CheckDNS {
		if s.DNSName == "" {
			bad("dns_name", "missing")
		} else if _, ok := dns.IsDomainName(s.DNSName); !ok {
			bad("dns_name", "not a domain name: %q", s.DNSName)
		}
		if s.DNSType != "" {
			if _, ok := dns.StringToType[strings.ToUpper(s.DNSType)]; !ok {
				bad("dns_type", "unknown record type %q", s.DNSType)
			}
		}
		if _, err := regexp.Compile(s.DNSExpect); err != nil {
			bad("dns_expect", "%v", err)
		}
	}
	if s.Kind == CheckExec && strings.TrimSpace(s.Command) == "" {
		bad("command", "missing")
	}
	return errors.Join(errs...)
}

// statusSet is a parsed ExpectStatus: inclusive ranges of codes.
type statusSet [][2]int

func (ss statusSet) contains(code int) bool {
	for _, r := range ss {
		if code >= r[0] && code <= r[1] {
			return true
		}
	}
	return false
}

// parseStatusSet reads "200-299,301".
func parseStatusSet(s string) (statusSet, error) {
	var set statusSet
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseStatusCode(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parseStatusCode(hi); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("range %q runs backwards", part)
			}
		}
		set = append(set, [2]int{a, b})
	}
	return set, nil
}

func parseStatusCode(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 100 || n > 599 {
		return 0, fmt.Errorf("%q is not a status code 100..599", s)
	}
	return n, nil
}

// Health is a check's verdict on its target.
type Health string

// The health states. A new check is unknown until Rise successes in a row
// make it up or Fall failures in a row make it down.
const (
	HealthUnknown Health = "unknown"
	HealthUp      Health = "up"
	HealthDown    Health = "down"
)

// CheckStatus is the state of one scheduled check.
type CheckStatus struct {
	Spec   CheckSpec
	Health Health
	// Since is when Health last changed; zero while unknown.
	Since time.Time
	// LastRun is when the last attempt finished; zero before the first.
	LastRun time.Time
	// LastError says why the last attempt failed; empty after a success.
	LastError string
	// Latency is how long the last attempt took.
	Latency time.Duration
	// Successes and Failures count the current run of equal results: one
	// of them is always zero.
	Successes, Failures int
}

// Checker makes one attempt of a check and returns nil if the target
// passed. It must return by ctx's deadline, which the Scheduler sets to
// the spec's Timeout. The real checkers are NewTCPChecker,
// NewHTTPChecker, NewDNSChecker, NewExecChecker and NoneChecker; tests
// inject fakes.
type Checker interface {
	Check(ctx context.Context, spec CheckSpec) error
}

// NoneChecker is the checker of CheckNone: every attempt succeeds.
type NoneChecker struct{}

// Check implements Checker.
func (NoneChecker) Check(context.Context, CheckSpec) error { return nil }
