// Package api holds the HTTP/JSON wire types shared by clusterd and
// clusterctl, and a client for them.
//
// Endpoints (all under /v1; bodies are JSON; unknown fields are refused):
//
//	GET    /v1/status                              Status
//	GET    /v1/vips                                []fsm.VIP
//	POST   /v1/vips                                fsm.VIP
//	DELETE /v1/vips/{name}[?force=true]
//	GET    /v1/services                            []ServiceSummary
//	POST   /v1/services                            fsm.Service
//	GET    /v1/services/{name}                     fsm.Service
//	PATCH  /v1/services/{name}                     fsm.ServicePatch
//	DELETE /v1/services/{name}
//	GET    /v1/services/{name}/servers             []fsm.RealServer
//	POST   /v1/services/{name}/servers             fsm.RealServer
//	PATCH  /v1/services/{name}/servers/{addrport}  fsm.ServerPatch
//	DELETE /v1/services/{name}/servers/{addrport}
//	GET    /v1/services/{name}/health              ServiceHealth
//	GET    /v1/services/{name}/servers/{addrport}/connections  Connections (the leader's kernel)
//	GET    /v1/members                             []Member
//	POST   /v1/members                             MemberAdd
//	DELETE /v1/members/{id}[?force=true]
//	POST   /v1/leader/transfer                     LeaderTransfer
//	GET    /v1/snapshot                            fsm.State
//	POST   /v1/snapshot                            fsm.State (restore)
//	GET    /v1/ipvs                                IPVSReport
//	GET    /v1/tokens                              []TokenInfo (operator)
//	POST   /v1/tokens                              TokenCreate -> NewToken
//	DELETE /v1/tokens/{id}
//	POST   /v1/tokens/bootstrap                    TokenCreate -> NewToken (client certificate, no token)
//
// Every request carries "Authorization: Bearer ID.SECRET" unless the
// directors run with insecure: true. GETs need a token of role read or
// operator; everything else, and GET /v1/tokens, needs operator. A missing
// or bad token is answered 401, a role that is not enough 403, both with
// Code CodeDenied.
//
// {addrport} is fsm.ServerKey, path-escaped. The GETs of the replicated
// state and of /v1/members accept ?consistent (or ?consistent=true), which
// is then answered by the leader after it confirms its leadership;
// /v1/status and /v1/ipvs always describe the director asked; the
// live views of /v1/services/{name}/health are those gossip delivered to
// the director asked (the leader's with ?consistent), and connections are
// always read from the leader's kernel table. Writes sent
// to a follower are forwarded to the leader.
//
// Every success is a Response whose Data holds the type above, and every
// failure an ErrorResponse. Both carry the configuration index, which is
// also sent in the X-Directorate-Index header.
package api

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/directorate/directorate/fsm"
)

// IndexHeader carries the configuration index on every response.
const IndexHeader = "X-Directorate-Index"

// ForwardedHeader marks a request a follower forwarded to the leader, so a
// leadership change in flight cannot bounce it back and forth.
const ForwardedHeader = "X-Directorate-Forwarded"

// MaxBodyBytes bounds a request body; the whole state of a large site fits.
const MaxBodyBytes = 64 << 20

// Response wraps every successful answer.
type Response struct {
	Index uint64          `json:"index"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// ErrorResponse wraps every failure.
type ErrorResponse struct {
	Index uint64 `json:"index"`
	Error Error  `json:"error"`
}

// Error codes, one per kind of failure a client may act on.
const (
	CodeInvalid     = "invalid"      // 400: the request is wrong; Field says where
	CodeNotFound    = "not_found"    // 404
	CodeConflict    = "conflict"     // 409: already exists, or still referenced
	CodeNoLeader    = "no_leader"    // 503: no leader is known; retry later
	CodeUnavailable = "unavailable"  // 503: e.g. the leader could not be reached
	CodeInternal    = "internal"     // 500
	CodeTooLarge    = "too_large"    // 413
	CodeUnsupported = "unsupported"  // 405/415
	CodeRefused     = "refused"      // 409: a safety check refused the change; Force may override
	CodeTimeout     = "timeout"      // 504: not committed in time; it may still commit
	CodeNotLeader   = "not_leader"   // 421: reached a follower that must not forward
	CodeDenied      = "unauthorized" // 401/403
)

// Error is a failure a person can act on. Field names the offending request
// field, when there is one.
type Error struct {
	Code    string `json:"code"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
	// Status is the HTTP status; it is filled in by the client.
	Status int `json:"-"`
}

// Error returns the message, prefixed with the field when there is one.
func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Message)
	}
	return e.Message
}

// Status describes one director and the cluster as it sees it.
type Status struct {
	Node              string      `json:"node"`
	Version           string      `json:"version"`
	State             string      `json:"state"` // Leader, Follower, Candidate, Shutdown
	Leader            string      `json:"leader"`
	LeaderAddr        string      `json:"leader_addr"`
	Term              uint64      `json:"term"`
	Index             uint64      `json:"index"`
	LastLeaderContact time.Time   `json:"last_leader_contact,omitzero"`
	Voters            int         `json:"voters"`
	Backend           string      `json:"backend"` // kernel or dry-run
	VIPs              []VIPHolder `json:"vips"`
	Services          int         `json:"services"`
	Servers           int         `json:"servers"`
	// LastReconcile reports the IPVS reconciler's last run on this director.
	LastReconcile ReconcileStatus `json:"last_reconcile"`
	// Ping is this director's ping-node score; nil without ping nodes.
	Ping *PingScore `json:"ping,omitempty"`
	// LatePeers, on the leader, are the voters it has not heard from for
	// longer than warn_time (Heartbeat's warntime).
	LatePeers []string `json:"late_peers,omitempty"`
}

// PingScore says how many of its ping nodes and groups a director reaches.
type PingScore struct {
	Value int `json:"value"`
	Max   int `json:"max"`
	// Ready is false until every ping node has answered or failed once.
	Ready bool `json:"ready"`
}

// VIPHolder says which director holds a VIP.
type VIPHolder struct {
	Name   string       `json:"name"`
	Prefix netip.Prefix `json:"prefix"`
	Holder string       `json:"holder"`
	// Renewed is when this director last renewed the VIP's kernel
	// lifetime; set only by the director that holds it.
	Renewed time.Time `json:"renewed,omitzero"`
	// Expires is when the kernel would drop the VIP without renewal.
	Expires time.Time `json:"expires,omitzero"`
}

// ReconcileStatus summarises one reconcile of the kernel table.
type ReconcileStatus struct {
	At       time.Time     `json:"at,omitzero"`
	Index    uint64        `json:"index"`
	Duration time.Duration `json:"duration"`
	Changes  int           `json:"changes"`
	// Retiring counts removed destinations still at weight 0 while
	// their connections end.
	Retiring int    `json:"retiring,omitempty"`
	Error    string `json:"error,omitempty"`
}

// ServiceSummary is a service without its real servers, with counts.
type ServiceSummary struct {
	fsm.Service
	ServerCount  int `json:"server_count"`
	ActiveWeight int `json:"active_weight"`
}

// Member is one director as Raft sees it.
type Member struct {
	ID       string `json:"id"`
	Address  string `json:"address"`  // raft address
	Suffrage string `json:"suffrage"` // Voter, Nonvoter, Staging
	Leader   bool   `json:"leader"`
	// APIAddress and Gossip come from gossip; empty when unknown.
	APIAddress string `json:"api_address,omitempty"`
	Gossip     string `json:"gossip,omitempty"`
	// PingScore and PingMax are the ping-node score the director announces
	// through gossip; PingMax is 0 without ping nodes.
	PingScore int `json:"ping_score,omitempty"`
	PingMax   int `json:"ping_max,omitempty"`
	// Warning is what the director announces through gossip, such as a
	// late peer.
	Warning string `json:"warning,omitempty"` // alive, dead, left or unknown
}

// MemberAdd asks the leader to add a voter.
type MemberAdd struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// LeaderTransfer asks the leader to hand over. An empty To lets Raft pick the
// most up-to-date follower.
type LeaderTransfer struct {
	To string `json:"to,omitempty"`
}

// IPVSReport puts a director's kernel table next to the desired state.
type IPVSReport struct {
	Node     string        `json:"node"`
	Backend  string        `json:"backend"`
	Index    uint64        `json:"index"`
	Services []IPVSService `json:"services"`
	// InSync is true when no service or destination differs.
	InSync bool `json:"in_sync"`
}

// IPVSService is one kernel virtual service, desired and actual.
type IPVSService struct {
	// Key is ipvsadm's notation: "TCP 10.0.0.1:80" or "FWM 7 inet".
	Key     string            `json:"key"`
	Name    string            `json:"name,omitempty"` // the Directorate service; empty when foreign
	Desired *IPVSServiceAttrs `json:"desired,omitempty"`
	Actual  *IPVSServiceAttrs `json:"actual,omitempty"`
	// Diff is missing, extra, changed, foreign, "held: REASON" (in the
	// state, but not programmable), or empty.
	Diff         string            `json:"diff,omitempty"`
	Destinations []IPVSDestination `json:"destinations"`
}

// IPVSServiceAttrs are a kernel service's settings.
type IPVSServiceAttrs struct {
	Scheduler string   `json:"scheduler"`
	Flags     []string `json:"flags,omitempty"`
	Timeout   int      `json:"timeout,omitempty"`
	Netmask   string   `json:"netmask,omitempty"`
}

// IPVSDestination is one kernel real server, desired and actual.
type IPVSDestination struct {
	Address string         `json:"address"` // host:port
	Desired *IPVSDestAttrs `json:"desired,omitempty"`
	Actual  *IPVSDestAttrs `json:"actual,omitempty"`
	Diff    string         `json:"diff,omitempty"` // missing, extra, changed, or empty
}

// IPVSDestAttrs are a kernel destination's settings and counters.
type IPVSDestAttrs struct {
	Method        string `json:"method"`
	Weight        int    `json:"weight"`
	Upper         int    `json:"upper_threshold,omitempty"`
	Lower         int    `json:"lower_threshold,omitempty"`
	ActiveConns   int    `json:"active_conns,omitempty"`
	InactiveConns int    `json:"inactive_conns,omitempty"`
}

// ServiceHealth is the health of a service's real servers: what the
// directors agreed on (committed in the replicated state) and what each of
// them sees now.
type ServiceHealth struct {
	Service string `json:"service"`
	// Node is the director that answered; Live views are its view of the
	// gossip.
	Node string `json:"node"`
	// HealthyWeight is the total weight of enabled, healthy servers;
	// Quorum is the weight the service needs (0: none), and QuorumLost
	// says the sorry server, if any, takes the traffic.
	HealthyWeight int            `json:"healthy_weight"`
	Quorum        int            `json:"quorum,omitempty"`
	QuorumLost    bool           `json:"quorum_lost,omitempty"`
	Servers       []ServerHealth `json:"servers"`
}

// ServerHealth is one real server's health.
type ServerHealth struct {
	Server string `json:"server"` // fsm.ServerKey
	// Check is the kind of the check that applies ("" when not checked).
	Check string `json:"check,omitempty"`
	// Admin is the operator's state, which wins over health.
	Admin fsm.AdminState `json:"admin"`
	// State is the committed health: up or down, or empty while nothing
	// was committed (the server counts as up). Index is the raft index of
	// its last transition and Views each director's view then.
	State string            `json:"state,omitempty"`
	Index uint64            `json:"index,omitempty"`
	Views map[string]string `json:"views,omitempty"`
	// Live is each live director's current view: up, down or unknown.
	Live map[string]string `json:"live,omitempty"`
}

// Connections are a real server's connection counts in the leader's
// kernel IPVS table, which `clusterctl server drain --wait` polls.
type Connections struct {
	Node    string `json:"node"`
	Service string `json:"service"`
	Server  string `json:"server"`
	// Present is false when the kernel table has no such destination
	// (removed, or not programmed yet); the counts are then zero.
	Present  bool `json:"present"`
	Weight   int  `json:"weight"`
	Active   int  `json:"active"`
	Inactive int  `json:"inactive"`
}
