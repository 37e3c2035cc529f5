package fsm

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// Duration is a time.Duration that travels as a Go duration string such as
// "1.5s" or "250ms". Only that form is accepted: a bare number would leave
// an operator guessing whether it means seconds or nanoseconds.
type Duration time.Duration

// String formats d as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string such as "3s". null leaves d
// alone, as encoding/json does for other types.
func (d *Duration) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"1.5s\", not %s", data)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Check kinds, as CheckConfig.Kind names them. They match the probes
// package's kinds, which clusterd converts to.
const (
	// CheckNone marks a server always up. As a real server's override it
	// switches off the service's default check for that server.
	CheckNone = "none"
	// CheckTCP connects and closes.
	CheckTCP = "tcp"
	// CheckHTTP sends a GET and matches the status and, optionally, the body.
	CheckHTTP = "http"
	// CheckHTTPS is CheckHTTP over TLS.
	CheckHTTPS = "https"
	// CheckDNS sends a DNS query over UDP and expects an answer.
	CheckDNS = "dns"
	// CheckExec runs an external command (keepalived's MISC_CHECK).
	CheckExec = "exec"
)

// Defaults that validation fills into a CheckConfig when a field is zero.
// They follow HAProxy's inter/rise/fall rather than keepalived's 60 s
// delay_loop: a 2 s interval with fall 3 takes a dead server out in about
// 6 s, and rise 2 keeps a flapping one out until it answers twice.
const (
	DefaultCheckInterval = Duration(2 * time.Second)
	DefaultCheckTimeout  = Duration(time.Second)
	DefaultCheckRise     = 2
	DefaultCheckFall     = 3
	// DefaultCheckPath is the path of an HTTP(S) check without one.
	DefaultCheckPath = "/"
	// DefaultCheckDNSType is the query type of a DNS check without one.
	DefaultCheckDNSType = "A"
)

// CheckConfig is a health check in the replicated state: a service's
// default for its real servers, or one server's override. Fields that do
// not apply to Kind must be empty. Validation fills in the defaults above,
// so the stored form is explicit.
type CheckConfig struct {
	Kind string `json:"kind"`
	// Port to check; 0 means the real server's own port.
	Port     int      `json:"port,omitempty"`
	Interval Duration `json:"interval,omitempty"`
	Timeout  Duration `json:"timeout,omitempty"`
	// Jitter spreads checks so that servers added together are not
	// checked in lockstep; 0..Interval.
	Jitter Duration `json:"jitter,omitempty"`
	// Rise consecutive successes bring a server up, Fall consecutive
	// failures take it down.
	Rise int `json:"rise,omitempty"`
	Fall int `json:"fall,omitempty"`

	// Path, Host, ExpectStatus and BodyRegex are for http and https.
	// ExpectStatus lists codes and ranges, such as "200-299,301"; empty
	// means 200-399.
	Path         string `json:"path,omitempty"`
	Host         string `json:"host,omitempty"`
	ExpectStatus string `json:"expect_status,omitempty"`
	BodyRegex    string `json:"body_regex,omitempty"`
	// TLSVerify and ServerName are for https.
	TLSVerify  bool   `json:"tls_verify,omitempty"`
	ServerName string `json:"server_name,omitempty"`

	// DNSName is the name a dns check queries, DNSType the query type,
	// and DNSExpect an optional regexp one answer record must match.
	DNSName   string `json:"dns_name,omitempty"`
	DNSType   string `json:"dns_type,omitempty"`
	DNSExpect string `json:"dns_expect,omitempty"`

	// Command is the exec check's shell command, run by /bin/sh -c.
	Command string `json:"command,omitempty"`
}

// DownAction says what a server that health checks found down becomes.
type DownAction string

// Down actions. Quiesce is ldirectord's quiescent=yes and the default.
const (
	// DownQuiesce sets the server's weight to 0: no new connections,
	// established ones finish.
	DownQuiesce DownAction = "quiesce"
	// DownRemove deletes the server from the kernel table, which breaks
	// its established connections at once.
	DownRemove DownAction = "remove"
)

// SorryServer receives a service's traffic while the service is below its
// quorum of healthy weight.
type SorryServer struct {
	Address netip.Addr `json:"address"`
	// Port follows the rules of a real server's port.
	Port int `json:"port"`
	// Method defaults to the service's method when added.
	Method Method `json:"method"`
}

// Health states of a real server, as HealthUpdate and Health carry them.
// HealthUnknown appears only in a director's view: a committed state is
// up or down.
const (
	HealthUp      = "up"
	HealthDown    = "down"
	HealthUnknown = "unknown"
)

// Health is the health of a real server that the directors agreed on. It
// is written only by SetHealth, which the leader proposes.
type Health struct {
	// State is HealthUp or HealthDown.
	State string `json:"state"`
	// Index is the Raft index of the last transition of State.
	Index uint64 `json:"index"`
	// Views is each director's view (up, down or unknown) when the leader
	// proposed the last update, keyed by director id.
	Views map[string]string `json:"views,omitempty"`
}

// HealthUpdate sets the agreed health of one real server.
type HealthUpdate struct {
	Service string `json:"service"`
	// Server is the server's ServerKey.
	Server string `json:"server"`
	// State is HealthUp or HealthDown.
	State string            `json:"state"`
	Views map[string]string `json:"views,omitempty"`
}

// EffectiveCheck returns the check that applies to rs, a server of svc: its
// own override, else the service's default. It returns nil when the server
// is not checked (no check, or kind none). The result points into the
// state and must not be modified.
func EffectiveCheck(svc *Service, rs *RealServer) *CheckConfig {
	cc := svc.Check
	if rs.Check != nil {
		cc = rs.Check
	}
	if cc == nil || cc.Kind == CheckNone {
		return nil
	}
	return cc
}

// Healthy reports whether rs counts as up for its service: a server
// without agreed health (never checked, or not checked) is up.
func (r *RealServer) Healthy() bool {
	return r.Health == nil || r.Health.State != HealthDown
}

// HealthyWeight is the total weight of svc's servers that can take new
// connections: enabled by the operator and healthy. It is what Quorum is
// compared with.
func HealthyWeight(svc *Service) int {
	total := 0
	for _, srv := range svc.Servers {
		if srv != nil && srv.Admin == Enabled && srv.Healthy() {
			total += srv.Weight
		}
	}
	return total
}

// EffectiveQuorum is the healthy weight svc needs: Quorum, or 1 when only a
// sorry server is set. Zero means no quorum.
func (svc *Service) EffectiveQuorum() int {
	if svc.Quorum == 0 && svc.Sorry != nil {
		return 1
	}
	return svc.Quorum
}

// QuorumUp reports whether svc has its quorum of healthy weight, as last
// maintained by Apply. A service without a quorum always has it.
func (svc *Service) QuorumUp() bool { return !svc.QuorumLost }

// EffectiveDownAction is the service's DownAction with the default filled.
func (svc *Service) EffectiveDownAction() DownAction {
	if svc.DownAction == "" {
		return DownQuiesce
	}
	return svc.DownAction
}

// nextQuorumLost applies the hysteresis rule to svc given whether it had
// lost quorum before: quorum is lost when the healthy weight drops below
// quorum-hysteresis and regained when it reaches quorum+hysteresis; in
// between it stays as it was.
func nextQuorumLost(svc *Service, wasLost bool) bool {
	q := svc.EffectiveQuorum()
	if q == 0 {
		return false
	}
	w := HealthyWeight(svc)
	switch {
	case w < q-svc.QuorumHysteresis:
		return true
	case w >= q+svc.QuorumHysteresis:
		return false
	}
	return wasLost
}
