// Package fsm is Directorate's replicated model: VIPs, virtual services and
// real servers (with their health checks, the health the directors agreed
// on, quorums and sorry servers), the typed commands that change them, the
// validation rules the kernel and the LVS model impose, and a pure Apply.
//
// Apply never reads a clock, a random source, the kernel or the network, so
// every director that applies the same log reaches the same state.
package fsm

import (
	"net/netip"
)

// Protocol is a virtual service's transport protocol.
type Protocol string

// Protocols IPVS can balance.
const (
	TCP  Protocol = "tcp"
	UDP  Protocol = "udp"
	SCTP Protocol = "sctp"
)

// Family is an address family, named as ipvsadm and ip(8) name them.
type Family string

// Address families.
const (
	IPv4 Family = "inet"
	IPv6 Family = "inet6"
)

// FamilyOf reports the family of addr, treating IPv4-mapped IPv6 as IPv6
// because the kernel does.
func FamilyOf(addr netip.Addr) Family {
	if addr.Is4() {
		return IPv4
	}
	return IPv6
}

// Scheduler is the name of a kernel IPVS scheduler.
type Scheduler string

// Schedulers lists every scheduler the stock kernel ships, in ipvsadm's
// order. It returns a fresh slice so no importer can change what
// validation accepts.
func Schedulers() []Scheduler {
	return []Scheduler{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf"}
}

// Method is a real server's packet-forwarding method.
type Method string

// Forwarding methods. NAT masquerades, DR routes by MAC rewrite, TUN
// encapsulates.
const (
	NAT Method = "nat"
	DR  Method = "dr"
	TUN Method = "tun"
)

// TunnelType is the encapsulation used by the TUN method.
type TunnelType string

// Tunnel encapsulations. GUE and GRE need kernel 5.2 or later.
const (
	TunnelIPIP TunnelType = "ipip"
	TunnelGUE  TunnelType = "gue"
	TunnelGRE  TunnelType = "gre"
)

// TunnelChecksum selects the checksum mode of GUE and GRE tunnels.
type TunnelChecksum string

// Tunnel checksum modes, as ipvsadm names them.
const (
	ChecksumNone   TunnelChecksum = "nocsum"
	ChecksumOn     TunnelChecksum = "csum"
	ChecksumRemote TunnelChecksum = "remcsum"
)

// AdminState is the operator's intent for a real server. It always wins over
// health state.
type AdminState string

// Admin states. A drained server keeps its established connections at
// weight 0; a disabled one is removed from the kernel table.
const (
	Enabled  AdminState = "enabled"
	Drained  AdminState = "drained"
	Disabled AdminState = "disabled"
)

// MaxWeight is the largest real-server weight Directorate accepts.
const MaxWeight = 65535

// VIP is a virtual address the leader claims. Prefix carries the address and
// its prefix length, as `ip addr add` takes it.
type VIP struct {
	Name   string       `json:"name"`
	Prefix netip.Prefix `json:"prefix"`
	// Interface pins the VIP to a link. Empty means each director picks the
	// interface whose subnet contains the address.
	Interface string `json:"interface,omitempty"`
}

// SchedFlags are the scheduler flags the kernel offers for sh and mh.
type SchedFlags struct {
	SHFallback bool `json:"sh_fallback,omitempty"`
	SHPort     bool `json:"sh_port,omitempty"`
	MHFallback bool `json:"mh_fallback,omitempty"`
	MHPort     bool `json:"mh_port,omitempty"`
}

// Persistence makes a client stick to one real server.
type Persistence struct {
	// Timeout in seconds; must be positive.
	Timeout int `json:"timeout"`
	// PrefixLen groups clients by network: 32 (IPv4) or 128 (IPv6) means
	// per client address. Zero means the full length of the family.
	PrefixLen int `json:"prefix_len,omitempty"`
}

// Service is a virtual service: a VIP, protocol and port, or a firewall mark,
// with its scheduling policy and real servers.
type Service struct {
	Name string `json:"name"`
	// VIP names the VIP the service listens on. Required unless FWMark is
	// set; with FWMark it only ties the service to a VIP the leader claims.
	VIP      string   `json:"vip,omitempty"`
	Protocol Protocol `json:"protocol,omitempty"`
	Port     int      `json:"port,omitempty"`
	FWMark   int64    `json:"fwmark,omitempty"`
	// Family is derived from the VIP; it must be given for a firewall-mark
	// service without a VIP.
	Family      Family       `json:"family,omitempty"`
	Scheduler   Scheduler    `json:"scheduler"`
	SchedFlags  SchedFlags   `json:"sched_flags,omitzero"`
	Persistence *Persistence `json:"persistence,omitempty"`
	// OnePacket schedules every UDP datagram on its own (ipvsadm -o).
	OnePacket bool `json:"one_packet,omitempty"`
	// Method is the forwarding method of real servers added without one.
	Method Method `json:"method"`
	// Servers are keyed by ServerKey.
	Servers map[string]*RealServer `json:"servers,omitempty"`

	// Check is the health check of servers without their own.
	Check *CheckConfig `json:"check,omitempty"`
	// DownAction is what a server found down becomes; empty means
	// DownQuiesce.
	DownAction DownAction `json:"down_action,omitempty"`
	// Quorum is the least total weight of healthy, enabled servers the
	// service needs; below it the sorry server takes the traffic and the
	// quorum hooks run. 0 means none, or 1 when Sorry is set.
	Quorum int `json:"quorum,omitempty"`
	// QuorumHysteresis widens the threshold both ways: quorum is lost
	// below Quorum-QuorumHysteresis and regained at
	// Quorum+QuorumHysteresis, so a server flapping at the edge does not
	// flip traffic to the sorry server and back.
	QuorumHysteresis int `json:"quorum_hysteresis,omitempty"`
	// Sorry receives the traffic while the service is below quorum.
	Sorry *SorryServer `json:"sorry,omitempty"`
	// QuorumLost is derived: Apply maintains it from the servers' health,
	// admin state and weight with the hysteresis above. Requests may not
	// set it; a snapshot carries it because inside the hysteresis band it
	// depends on history.
	QuorumLost bool `json:"quorum_lost,omitempty"`
}

// RealServer is a backend of one virtual service.
type RealServer struct {
	Address netip.Addr `json:"address"`
	// Port must equal the service port for DR and TUN; NAT may remap it.
	// Zero on a firewall-mark service means "the port the client used".
	Port           int            `json:"port"`
	Method         Method         `json:"method"`
	Tunnel         TunnelType     `json:"tunnel,omitempty"`
	TunnelPort     int            `json:"tunnel_port,omitempty"`
	TunnelChecksum TunnelChecksum `json:"tunnel_checksum,omitempty"`
	Weight         int            `json:"weight"`
	UpperThreshold int            `json:"upper_threshold,omitempty"`
	LowerThreshold int            `json:"lower_threshold,omitempty"`
	Admin          AdminState     `json:"admin"`
	// Check overrides the service's check for this server, whole; kind
	// none means always up.
	Check *CheckConfig `json:"check,omitempty"`
	// Health is the agreed result of the server's check, written only by
	// SetHealth. Nil means never checked or not checked: up.
	Health *Health `json:"health,omitempty"`
}

// ServerKey is the identity of a real server within its service, as
// netip.AddrPort prints it: 10.0.0.1:80 or [2001:db8::1]:80.
func ServerKey(addr netip.Addr, port int) string {
	return netip.AddrPortFrom(addr, uint16(port)).String()
}

// Key returns the server's identity within its service.
func (r *RealServer) Key() string { return ServerKey(r.Address, r.Port) }

// State is the whole replicated configuration. Index is the Raft index of
// the last applied command: the configuration version every read reports.
type State struct {
	Index    uint64              `json:"index"`
	VIPs     map[string]*VIP     `json:"vips"`
	Services map[string]*Service `json:"services"`
	// Tokens are the API tokens, keyed by ID; see Token.
	Tokens map[string]*Token `json:"tokens,omitempty"`
	// Keyring is the gossip keyring, nil until a key is installed; see
	// Keyring.
	Keyring *Keyring `json:"keyring,omitempty"`
}
