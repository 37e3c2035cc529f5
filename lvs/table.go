package lvs

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
)

// ServiceKey is the identity of a kernel virtual service: protocol,
// address and port, or firewall mark and family. It is comparable and
// keys a Table.
type ServiceKey struct {
	Family ipvs.AddressFamily
	// Protocol, Addr and Port are zero for a firewall-mark service.
	Protocol ipvs.Protocol
	Addr     netip.Addr
	Port     uint16
	FWMark   uint32
}

// KeyOf returns the identity of s.
func KeyOf(s ipvs.Service) ServiceKey {
	if s.FWMark != 0 {
		return ServiceKey{Family: s.Family, FWMark: s.FWMark}
	}
	return ServiceKey{Family: s.Family, Protocol: s.Protocol, Addr: s.Address, Port: s.Port}
}

// String returns the key in ipvsadm's notation: "TCP 10.0.0.1:80",
// "UDP [2001:db8::1]:53", or "FWM 7 inet" (the family named as fsm names
// it, which is what the API reports).
func (k ServiceKey) String() string {
	if k.FWMark != 0 {
		return "FWM " + strconv.FormatUint(uint64(k.FWMark), 10) + " " + familyName(k.Family)
	}
	return ProtocolName(k.Protocol) + " " + netip.AddrPortFrom(k.Addr, k.Port).String()
}

// Compare orders keys as `ipvs show` lists them: IPv4 first, address
// services before firewall marks, then by protocol, address and port.
func (k ServiceKey) Compare(o ServiceKey) int {
	if c := cmp.Compare(k.Family, o.Family); c != 0 {
		return c
	}
	if c := cmpBool(k.FWMark != 0, o.FWMark != 0); c != 0 {
		return c
	}
	if c := cmp.Compare(k.FWMark, o.FWMark); c != 0 {
		return c
	}
	if c := cmp.Compare(k.Protocol, o.Protocol); c != 0 {
		return c
	}
	if c := k.Addr.Compare(o.Addr); c != 0 {
		return c
	}
	return cmp.Compare(k.Port, o.Port)
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	default:
		return 1
	}
}

// ProtocolName names a protocol as ipvsadm does: TCP, UDP, SCTP.
func ProtocolName(p ipvs.Protocol) string {
	switch p {
	case ipvs.TCP:
		return "TCP"
	case ipvs.UDP:
		return "UDP"
	case ipvs.SCTP:
		return "SCTP"
	}
	return "proto-" + strconv.Itoa(int(p))
}

func familyName(f ipvs.AddressFamily) string {
	switch f {
	case ipvs.INET:
		return "inet"
	case ipvs.INET6:
		return "inet6"
	}
	return "af-" + strconv.Itoa(int(f))
}

// MethodName names a forwarding method as fsm does: nat, dr, tun; the
// kernel's two internal methods are local and bypass.
func MethodName(m ipvs.ForwardType) string {
	switch m {
	case ipvs.Masquerade:
		return "nat"
	case ipvs.DirectRoute:
		return "dr"
	case ipvs.Tunnel:
		return "tun"
	case ipvs.Local:
		return "local"
	case ipvs.Bypass:
		return "bypass"
	}
	return "method-" + strconv.Itoa(int(m))
}

// userFlags are the service flags a user sets. The kernel adds
// ipvs.ServiceHashed to every service it holds, so comparisons ignore it.
const userFlags = ipvs.ServicePersistent | ipvs.ServiceOnePacket |
	ipvs.ServiceSchedulerOpt1 | ipvs.ServiceSchedulerOpt2 | ipvs.ServiceSchedulerOpt3

// FlagNames lists a service's flags as ipvsadm prints them: persistent,
// one-packet, and the scheduler flags named for the scheduler
// (sh-fallback, sh-port, mh-fallback, mh-port; flag-1..3 otherwise).
func FlagNames(s ipvs.Service) []string {
	var out []string
	if s.Flags&ipvs.ServicePersistent != 0 {
		out = append(out, "persistent")
	}
	if s.Flags&ipvs.ServiceOnePacket != 0 {
		out = append(out, "one-packet")
	}
	names := [3]string{"flag-1", "flag-2", "flag-3"}
	switch s.Scheduler {
	case "sh":
		names[0], names[1] = "sh-fallback", "sh-port"
	case "mh":
		names[0], names[1] = "mh-fallback", "mh-port"
	}
	for i, f := range []ipvs.Flags{ipvs.ServiceSchedulerOpt1, ipvs.ServiceSchedulerOpt2, ipvs.ServiceSchedulerOpt3} {
		if s.Flags&f != 0 {
			out = append(out, names[i])
		}
	}
	return out
}

// Destination is a kernel real server: its settings in cloudflare/ipvs's
// vocabulary, plus the connection counters List reads. Diffs ignore the
// counters.
type Destination struct {
	ipvs.Destination
	ActiveConns     uint32
	InactiveConns   uint32
	PersistentConns uint32
}

// Key returns the destination's identity within its service.
func (d Destination) Key() netip.AddrPort {
	return netip.AddrPortFrom(d.Address, d.Port)
}

// Service is a kernel virtual service and its destinations.
type Service struct {
	ipvs.Service
	// Name is the Directorate service this one comes from; empty for a
	// service read from the kernel.
	Name string
	// Dests are sorted by Key, which lets a diff walk two services'
	// destinations in step instead of hashing each one.
	Dests []Destination
}

// Key returns the service's identity.
func (s *Service) Key() ServiceKey { return KeyOf(s.Service) }

// Dest returns the destination at addr, or nil.
func (s *Service) Dest(addr netip.AddrPort) *Destination {
	if i, ok := s.find(addr); ok {
		return &s.Dests[i]
	}
	return nil
}

func (s *Service) find(addr netip.AddrPort) (int, bool) {
	return slices.BinarySearchFunc(s.Dests, addr, func(d Destination, a netip.AddrPort) int {
		return d.Key().Compare(a)
	})
}

// SortDests restores the order Dests must keep, for callers that built
// the slice themselves.
func (s *Service) SortDests() {
	slices.SortFunc(s.Dests, func(a, b Destination) int { return a.Key().Compare(b.Key()) })
}

// Clone returns a deep copy of s.
func (s *Service) Clone() *Service {
	c := *s
	c.Dests = slices.Clone(s.Dests)
	return &c
}

// Table is a set of kernel virtual services keyed by identity.
type Table map[ServiceKey]*Service

// Keys returns the table's keys in Compare order.
func (t Table) Keys() []ServiceKey {
	keys := make([]ServiceKey, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, ServiceKey.Compare)
	return keys
}

// Clone returns a deep copy of t.
func (t Table) Clone() Table {
	c := make(Table, len(t))
	for k, s := range t {
		c[k] = s.Clone()
	}
	return c
}

// Count returns the number of services and destinations in t.
func (t Table) Count() (services, dests int) {
	for _, s := range t {
		dests += len(s.Dests)
	}
	return len(t), dests
}

// Add inserts s under its key, replacing any service with that identity,
// and sorts its destinations.
func (t Table) Add(s *Service) {
	s.SortDests()
	t[s.Key()] = s
}

// fullMask is the netmask of a service without persistence: the whole
// address, which is what ipvsadm sends and the kernel reports.
func fullMask(f ipvs.AddressFamily) netmask.Mask {
	if f == ipvs.INET6 {
		return netmask.MaskFrom(128, 128)
	}
	return netmask.MaskFrom(32, 32)
}

// sameServiceAttrs reports whether two services with one identity have the
// same settings.
func sameServiceAttrs(a, b *ipvs.Service) bool {
	return a.Scheduler == b.Scheduler &&
		a.Flags&userFlags == b.Flags&userFlags &&
		a.Timeout == b.Timeout &&
		a.Netmask == b.Netmask
}

// sameDestAttrs reports whether the kernel destination got matches the
// desired one want. Tunnel settings only matter for the tunnel method: the
// kernel ignores them otherwise, and kernels before 5.2 do not report
// them.
func sameDestAttrs(want, got *ipvs.Destination) bool {
	if want.FwdMethod != got.FwdMethod || want.Weight != got.Weight ||
		want.UpperThreshold != got.UpperThreshold || want.LowerThreshold != got.LowerThreshold {
		return false
	}
	if want.FwdMethod == ipvs.Tunnel {
		return want.TunnelType == got.TunnelType && want.TunnelPort == got.TunnelPort &&
			want.TunnelFlags == got.TunnelFlags
	}
	return true
}
