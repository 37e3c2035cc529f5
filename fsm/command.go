package fsm

import (
	"net/netip"
)

// CommandVersion is the newest command encoding this build understands.
// A director refuses (panics on) a log entry with a newer version rather
// than guess at its meaning: see Decode.
const CommandVersion = 1

// CommandType names a command on the wire.
type CommandType string

// Command types. Their payloads are the structs of the same name.
const (
	TypeAddVIP        CommandType = "vip.add"
	TypeDeleteVIP     CommandType = "vip.delete"
	TypeAddService    CommandType = "service.add"
	TypeUpdateService CommandType = "service.update"
	TypeDeleteService CommandType = "service.delete"
	TypeAddServer     CommandType = "server.add"
	TypeUpdateServer  CommandType = "server.update"
	TypeDeleteServer  CommandType = "server.delete"
	TypeReplaceState  CommandType = "state.replace"
	TypeSetHealth     CommandType = "health.set"
)

// Command is one typed change to the replicated state. Every payload type
// below implements it.
type Command interface {
	// Type names the command on the wire.
	Type() CommandType
}

// AddVIP adds a VIP.
type AddVIP struct {
	VIP VIP `json:"vip"`
}

// DeleteVIP removes a VIP. Without Force it is refused while a service uses
// the VIP; with Force those services are removed with it.
type DeleteVIP struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// AddService adds a virtual service, optionally with real servers.
type AddService struct {
	Service Service `json:"service"`
}

// ServicePatch changes the mutable fields of a service. Nil fields are kept.
// Identity (VIP, protocol, port, firewall mark, family) cannot change:
// that is a different kernel service.
type ServicePatch struct {
	Scheduler   *Scheduler   `json:"scheduler,omitempty"`
	SchedFlags  *SchedFlags  `json:"sched_flags,omitempty"`
	Persistence *Persistence `json:"persistence,omitempty"`
	// NoPersistence turns persistence off; it conflicts with Persistence.
	NoPersistence bool    `json:"no_persistence,omitempty"`
	OnePacket     *bool   `json:"one_packet,omitempty"`
	Method        *Method `json:"method,omitempty"`
	// Check replaces the service's default check; NoCheck removes it and
	// conflicts with Check.
	Check   *CheckConfig `json:"check,omitempty"`
	NoCheck bool         `json:"no_check,omitempty"`
	// DownAction is DownQuiesce or DownRemove.
	DownAction       *DownAction `json:"down_action,omitempty"`
	Quorum           *int        `json:"quorum,omitempty"`
	QuorumHysteresis *int        `json:"quorum_hysteresis,omitempty"`
	// Sorry sets the sorry server; NoSorry removes it and conflicts with
	// Sorry.
	Sorry   *SorryServer `json:"sorry,omitempty"`
	NoSorry bool         `json:"no_sorry,omitempty"`
}

// UpdateService patches a service.
type UpdateService struct {
	Name  string       `json:"name"`
	Patch ServicePatch `json:"patch"`
}

// DeleteService removes a service and its real servers.
type DeleteService struct {
	Name string `json:"name"`
}

// AddServer adds a real server to a service. An empty Method takes the
// service's default, an empty Admin means enabled.
type AddServer struct {
	Service string     `json:"service"`
	Server  RealServer `json:"server"`
}

// ServerPatch changes the mutable fields of a real server. Nil fields are
// kept. Address and port are its identity.
type ServerPatch struct {
	Method         *Method         `json:"method,omitempty"`
	Tunnel         *TunnelType     `json:"tunnel,omitempty"`
	TunnelPort     *int            `json:"tunnel_port,omitempty"`
	TunnelChecksum *TunnelChecksum `json:"tunnel_checksum,omitempty"`
	Weight         *int            `json:"weight,omitempty"`
	UpperThreshold *int            `json:"upper_threshold,omitempty"`
	LowerThreshold *int            `json:"lower_threshold,omitempty"`
	Admin          *AdminState     `json:"admin,omitempty"`
	// Check sets the server's own check, overriding the service's;
	// NoCheck removes the override, so the service's check applies
	// again. They conflict.
	Check   *CheckConfig `json:"check,omitempty"`
	NoCheck bool         `json:"no_check,omitempty"`
}

// UpdateServer patches one real server.
type UpdateServer struct {
	Service string      `json:"service"`
	Address netip.Addr  `json:"address"`
	Port    int         `json:"port"`
	Patch   ServerPatch `json:"patch"`
}

// DeleteServer removes one real server from a service.
type DeleteServer struct {
	Service string     `json:"service"`
	Address netip.Addr `json:"address"`
	Port    int        `json:"port"`
}

// ReplaceState swaps in a whole configuration, as `clusterctl snapshot
// restore` does. The state is validated as a whole; its Index is ignored.
type ReplaceState struct {
	State State `json:"state"`
}

// SetHealth commits the directors' agreed health of real servers. The
// leader proposes it in batches. An update naming a service or server that
// no longer exists, or a server that is no longer checked, is skipped
// rather than refused: the server may have changed since the directors
// voted, and the rest of the batch is still good.
type SetHealth struct {
	Updates []HealthUpdate `json:"updates"`
}

// Type implements Command.
func (AddVIP) Type() CommandType { return TypeAddVIP }

// Type implements Command.
func (DeleteVIP) Type() CommandType { return TypeDeleteVIP }

// Type implements Command.
func (AddService) Type() CommandType { return TypeAddService }

// Type implements Command.
func (UpdateService) Type() CommandType { return TypeUpdateService }

// Type implements Command.
func (DeleteService) Type() CommandType { return TypeDeleteService }

// Type implements Command.
func (AddServer) Type() CommandType { return TypeAddServer }

// Type implements Command.
func (UpdateServer) Type() CommandType { return TypeUpdateServer }

// Type implements Command.
func (DeleteServer) Type() CommandType { return TypeDeleteServer }

// Type implements Command.
func (ReplaceState) Type() CommandType { return TypeReplaceState }

// Type implements Command.
func (SetHealth) Type() CommandType { return TypeSetHealth }
