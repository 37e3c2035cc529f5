package fsm

import (
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Limits on health-check settings. They keep a typo (an interval of 2ns,
// a fall of 3000) from reaching every director's scheduler.
const (
	// MinCheckInterval and MaxCheckInterval bound CheckConfig.Interval.
	MinCheckInterval = Duration(10 * time.Millisecond)
	MaxCheckInterval = Duration(time.Hour)
	// MinCheckTimeout and MaxCheckTimeout bound CheckConfig.Timeout,
	// which may not exceed the interval either.
	MinCheckTimeout = Duration(time.Millisecond)
	MaxCheckTimeout = Duration(5 * time.Minute)
	// MaxCheckCount bounds Rise and Fall.
	MaxCheckCount = 100
	// MaxCheckText bounds paths, host names, regexps and commands.
	MaxCheckText = 4096
	// MaxQuorum bounds Quorum and QuorumHysteresis.
	MaxQuorum = math.MaxInt32
	// MaxHealthUpdates bounds the updates of one SetHealth.
	MaxHealthUpdates = 100000
	// MaxHealthViews bounds the director views one health record keeps.
	MaxHealthViews = 255
	// maxDirectorIDLen bounds a director id used as a view's key.
	maxDirectorIDLen = 128
)

// CheckKinds lists the check kinds validation accepts. It returns a fresh
// slice so no importer can change what validation accepts.
func CheckKinds() []string {
	return []string{CheckNone, CheckTCP, CheckHTTP, CheckHTTPS, CheckDNS, CheckExec}
}

// DNSTypes lists the query types a dns check may use.
func DNSTypes() []string {
	return []string{"A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"}
}

// checkNeedsPort reports whether a check kind connects to a port.
func checkNeedsPort(kind string) bool {
	return kind == CheckTCP || kind == CheckHTTP || kind == CheckHTTPS || kind == CheckDNS
}

// validateCheck checks a check configuration and returns a copy with the
// defaults filled in; in is not modified. p is the check's own path, such
// as "service.check".
func validateCheck(p string, in *CheckConfig) (*CheckConfig, error) {
	cc := *in
	switch cc.Kind {
	case "":
		return nil, invalid(p+".kind", "required: one of %s", strings.Join(CheckKinds(), ", "))
	case CheckNone:
		if cc != (CheckConfig{Kind: CheckNone}) {
			return nil, invalid(p, "kind none takes no other settings: clear them")
		}
		return &cc, nil
	case CheckTCP, CheckHTTP, CheckHTTPS, CheckDNS, CheckExec:
	default:
		return nil, invalid(p+".kind", "unknown check kind %q: one of %s", cc.Kind, strings.Join(CheckKinds(), ", "))
	}
	if cc.Port < 0 || cc.Port > 65535 {
		return nil, invalid(p+".port", "%d is out of range: 0..65535 (0: the real server's port)", cc.Port)
	}
	if err := fillTiming(p, &cc); err != nil {
		return nil, err
	}
	http := cc.Kind == CheckHTTP || cc.Kind == CheckHTTPS
	if !http {
		for _, f := range []struct{ name, value string }{
			{"path", cc.Path}, {"host", cc.Host}, {"expect_status", cc.ExpectStatus}, {"body_regex", cc.BodyRegex},
		} {
			if f.value != "" {
				return nil, invalid(p+"."+f.name, "only for kind http or https, not %s: clear it", cc.Kind)
			}
		}
	}
	if cc.Kind != CheckHTTPS {
		if cc.TLSVerify {
			return nil, invalid(p+".tls_verify", "only for kind https, not %s: clear it", cc.Kind)
		}
		if cc.ServerName != "" {
			return nil, invalid(p+".server_name", "only for kind https, not %s: clear it", cc.Kind)
		}
	}
	if cc.Kind != CheckDNS {
		for _, f := range []struct{ name, value string }{
			{"dns_name", cc.DNSName}, {"dns_type", cc.DNSType}, {"dns_expect", cc.DNSExpect},
		} {
			if f.value != "" {
				return nil, invalid(p+"."+f.name, "only for kind dns, not %s: clear it", cc.Kind)
			}
		}
	}
	if cc.Kind != CheckExec && cc.Command != "" {
		return nil, invalid(p+".command", "only for kind exec, not %s: clear it", cc.Kind)
	}
	var err error
	switch cc.Kind {
	case CheckHTTP, CheckHTTPS:
		err = validateHTTPCheck(p, &cc)
	case CheckDNS:
		err = validateDNSCheck(p, &cc)
	case CheckExec:
		err = validateExecCheck(p, &cc)
	}
	if err != nil {
		return nil, err
	}
	return &cc, nil
}

func fillTiming(p string, cc *CheckConfig) error {
	if cc.Interval == 0 {
		cc.Interval = DefaultCheckInterval
	}
	if cc.Interval < MinCheckInterval || cc.Interval > MaxCheckInterval {
		return invalid(p+".interval", "%s is out of range: %s..%s", cc.Interval, MinCheckInterval, MaxCheckInterval)
	}
	if cc.Timeout == 0 {
		cc.Timeout = min(DefaultCheckTimeout, cc.Interval)
	}
	if cc.Timeout < MinCheckTimeout || cc.Timeout > MaxCheckTimeout {
		return invalid(p+".timeout", "%s is out of range: %s..%s", cc.Timeout, MinCheckTimeout, MaxCheckTimeout)
	}
	if cc.Timeout > cc.Interval {
		// A check that may outlive its interval would overlap the next
		// one and the schedule would drift.
		return invalid(p+".timeout", "%s is longer than the interval %s", cc.Timeout, cc.Interval)
	}
	if cc.Jitter < 0 || cc.Jitter >= cc.Interval {
		return invalid(p+".jitter", "%s is out of range: 0 up to (not including) the interval %s", cc.Jitter, cc.Interval)
	}
	if cc.Rise == 0 {
		cc.Rise = DefaultCheckRise
	}
	if cc.Rise < 1 || cc.Rise > MaxCheckCount {
		return invalid(p+".rise", "%d is out of range: 1..%d", cc.Rise, MaxCheckCount)
	}
	if cc.Fall == 0 {
		cc.Fall = DefaultCheckFall
	}
	if cc.Fall < 1 || cc.Fall > MaxCheckCount {
		return invalid(p+".fall", "%d is out of range: 1..%d", cc.Fall, MaxCheckCount)
	}
	return nil
}

// printable reports whether s is non-control, non-space ASCII: what an
// HTTP request line or header value can carry without escaping.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func validateText(field, s string) error {
	if len(s) > MaxCheckText {
		return invalid(field, "is %d bytes long; at most %d are allowed", len(s), MaxCheckText)
	}
	return nil
}

func validateRegexp(field, expr string) error {
	if err := validateText(field, expr); err != nil {
		return err
	}
	if _, err := regexp.Compile(expr); err != nil {
		return invalid(field, "%q does not compile: %v", expr, err)
	}
	return nil
}

func validateHTTPCheck(p string, cc *CheckConfig) error {
	if cc.Path == "" {
		cc.Path = DefaultCheckPath
	}
	if err := validateText(p+".path", cc.Path); err != nil {
		return err
	}
	if cc.Path[0] != '/' || !printable(cc.Path) {
		return invalid(p+".path", "%q must start with '/' and contain no spaces or control characters", cc.Path)
	}
	if len(cc.Host) > 255 || !printable(cc.Host) {
		return invalid(p+".host", "%q is not a valid Host header: at most 255 characters, no spaces or control characters", cc.Host)
	}
	if _, err := ParseStatusRanges(cc.ExpectStatus); err != nil {
		return invalid(p+".expect_status", "%v", err)
	}
	if cc.BodyRegex != "" {
		if err := validateRegexp(p+".body_regex", cc.BodyRegex); err != nil {
			return err
		}
	}
	if len(cc.ServerName) > 253 || !printable(cc.ServerName) {
		return invalid(p+".server_name", "%q is not a valid TLS server name: at most 253 characters, no spaces or control characters", cc.ServerName)
	}
	return nil
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Lo, Hi int }

// ParseStatusRanges parses an expected-status list such as "200-299,301".
// An empty list means 200-399.
func ParseStatusRanges(s string) ([]StatusRange, error) {
	if s == "" {
		return []StatusRange{{200, 399}}, nil
	}
	parts := strings.Split(s, ",")
	out := make([]StatusRange, 0, len(parts))
	for _, part := range parts {
		loS, hiS, isRange := strings.Cut(part, "-")
		lo, err := parseStatus(loS)
		if err != nil {
			return nil, err
		}
		hi := lo
		if isRange {
			if hi, err = parseStatus(hiS); err != nil {
				return nil, err
			}
			if hi < lo {
				return nil, fmt.Errorf("range %q is empty: %d > %d", part, lo, hi)
			}
		}
		out = append(out, StatusRange{lo, hi})
	}
	return out, nil
}

func parseStatus(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || len(s) != 3 || n < 100 || n > 599 {
		return 0, fmt.Errorf("%q is not an HTTP status code (100..599); use a list such as 200-299,301", s)
	}
	return n, nil
}

func validateDNSCheck(p string, cc *CheckConfig) error {
	if cc.DNSName == "" {
		return invalid(p+".dns_name", "required for kind dns: the name to query, such as example.com")
	}
	if !validDomainName(cc.DNSName) {
		return invalid(p+".dns_name", "%q is not a domain name: labels of 1..63 letters, digits, '-' or '_', at most 253 characters", cc.DNSName)
	}
	if cc.DNSType == "" {
		cc.DNSType = DefaultCheckDNSType
	}
	known := false
	for _, t := range DNSTypes() {
		if cc.DNSType == t {
			known = true
		}
	}
	if !known {
		return invalid(p+".dns_type", "unknown query type %q: one of %s (upper case)", cc.DNSType, strings.Join(DNSTypes(), ", "))
	}
	if cc.DNSExpect != "" {
		if err := validateRegexp(p+".dns_expect", cc.DNSExpect); err != nil {
			return err
		}
	}
	return nil
}

// validDomainName accepts a name with or without the final dot, and "."
// for the root. Underscores are allowed because SRV names have them.
func validDomainName(name string) bool {
	if name == "." {
		return true
	}
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func validateExecCheck(p string, cc *CheckConfig) error {
	if strings.TrimSpace(cc.Command) == "" {
		return invalid(p+".command", "required for kind exec: a command for /bin/sh -c")
	}
	if err := validateText(p+".command", cc.Command); err != nil {
		return err
	}
	if strings.IndexByte(cc.Command, 0) >= 0 {
		return invalid(p+".command", "contains a NUL byte")
	}
	return nil
}

// validateServiceHealth checks and normalises the health settings of a
// service: its default check, down action, quorum and sorry server. svc
// must be the caller's copy with valid identity and method; its Check and
// Sorry are replaced by normalised copies.
func validateServiceHealth(p string, svc *Service) error {
	if svc.Check != nil {
		cc, err := validateCheck(p+".check", svc.Check)
		if err != nil {
			return err
		}
		svc.Check = cc
	}
	switch svc.DownAction {
	case "", DownQuiesce, DownRemove:
	default:
		return invalid(p+".down_action", "unknown down action %q: quiesce (weight 0, connections kept) or remove", svc.DownAction)
	}
	if svc.Quorum < 0 || svc.Quorum > MaxQuorum {
		return invalid(p+".quorum", "%d is out of range: 0..%d (0: none, or 1 with a sorry server)", svc.Quorum, MaxQuorum)
	}
	if svc.QuorumHysteresis < 0 {
		return invalid(p+".quorum_hysteresis", "%d is negative", svc.QuorumHysteresis)
	}
	if q := svc.EffectiveQuorum(); svc.QuorumHysteresis > 0 && svc.QuorumHysteresis >= q {
		return invalid(p+".quorum_hysteresis", "%d must be below the quorum %d", svc.QuorumHysteresis, q)
	}
	if svc.Sorry != nil {
		// Unlike a real server, a sorry server may not cross families
		// even with tun: it stands in for the whole service, and one
		// that cannot answer on the service's family is no stand-in.
		if a := svc.Sorry.Address; a.IsValid() && FamilyOf(a) != svc.Family {
			return invalid(p+".sorry.address", "%s is %s but the service is %s: a sorry server must be of the service's family", a, FamilyOf(a), svc.Family)
		}
		rs := RealServer{Address: svc.Sorry.Address, Port: svc.Sorry.Port, Method: svc.Sorry.Method, Admin: Enabled}
		if err := validateServer(p+".sorry", svc, &rs); err != nil {
			return err
		}
		key := rs.Key()
		if _, ok := svc.Servers[key]; ok {
			return conflict(p+".sorry", "%s is a real server of the service; a sorry server must be another destination", key)
		}
		svc.Sorry = &SorryServer{Address: rs.Address, Port: rs.Port, Method: rs.Method}
	}
	return nil
}

// validateServerHealth checks a real server's own check and health. It
// replaces srv.Check with a normalised copy; srv must be the caller's.
func validateServerHealth(p string, svc *Service, srv *RealServer) error {
	if srv.Check != nil {
		cc, err := validateCheck(p+".check", srv.Check)
		if err != nil {
			return err
		}
		srv.Check = cc
	}
	if err := validateCheckTarget(p+".check.port", svc, srv); err != nil {
		return err
	}
	if h := srv.Health; h != nil {
		if EffectiveCheck(svc, srv) == nil {
			return invalid(p+".health", "the server is not checked, so it has no health")
		}
		if h.State != HealthUp && h.State != HealthDown {
			return invalid(p+".health.state", "unknown state %q: up or down", h.State)
		}
		if err := validateViews(p+".health.views", h.Views); err != nil {
			return err
		}
	}
	if svc.Sorry != nil && srv.Address == svc.Sorry.Address && srv.Port == svc.Sorry.Port {
		return conflict(p, "%s is the service's sorry server", srv.Key())
	}
	return nil
}

// validateCheckTarget refuses a check that would connect to port 0: a
// firewall-mark server without a port whose check names none.
func validateCheckTarget(field string, svc *Service, srv *RealServer) error {
	cc := EffectiveCheck(svc, srv)
	if cc == nil || !checkNeedsPort(cc.Kind) || cc.Port != 0 || srv.Port != 0 {
		return nil
	}
	return invalid(field, "required: server %s has port 0, so a %s check must name the port to check", srv.Key(), cc.Kind)
}

func validateViews(field string, views map[string]string) error {
	if len(views) > MaxHealthViews {
		return invalid(field, "%d views; at most %d are allowed", len(views), MaxHealthViews)
	}
	for id, v := range views {
		if id == "" || len(id) > maxDirectorIDLen {
			return invalid(field, "director id %q must be 1..%d bytes", id, maxDirectorIDLen)
		}
		if v != HealthUp && v != HealthDown && v != HealthUnknown {
			return invalid(field+"["+id+"]", "unknown view %q: up, down or unknown", v)
		}
	}
	return nil
}

// validateHealthUpdate checks the shape of one update; whether its server
// exists is Apply's business, not validation's.
func validateHealthUpdate(p string, u *HealthUpdate) error {
	if err := validateName(p+".service", u.Service); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(u.Server)
	if err != nil || ap.String() != u.Server {
		return invalid(p+".server", "%q is not a server key such as 10.0.0.1:80 or [2001:db8::1]:80", u.Server)
	}
	if u.State != HealthUp && u.State != HealthDown {
		return invalid(p+".state", "unknown state %q: up or down", u.State)
	}
	return validateViews(p+".views", u.Views)
}
