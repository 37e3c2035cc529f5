package fsm

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// Limits the validation enforces.
const (
	// MaxNameLen bounds VIP and service names, which appear in URLs, CLI
	// output and metric labels.
	MaxNameLen = 63
	// MaxFWMark is the largest firewall mark: the kernel's is a u32.
	MaxFWMark = math.MaxUint32
	// MaxPersistenceTimeout is ipvsadm's limit (MAX_TIMEOUT, 31 days). The
	// kernel multiplies the timeout by HZ in 32 bits, so a larger value
	// could overflow, and a table ipvsadm cannot restore helps nobody.
	MaxPersistenceTimeout = 31 * 24 * 60 * 60
	// MaxThreshold bounds connection thresholds. The kernel field is a
	// u32, but ipvsadm accepts 0..INT_MAX, and so do we.
	MaxThreshold = math.MaxInt32
	// maxIfNameLen is IFNAMSIZ minus the terminating NUL.
	maxIfNameLen = 15
)

func invalid(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...), Kind: ErrInvalid}
}

func notFound(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...), Kind: ErrNotFound}
}

func conflict(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...), Kind: ErrConflict}
}

// validateName checks a VIP or service name: they appear in URL paths and
// shell commands, so they are kept to a conservative alphabet.
func validateName(field, name string) error {
	if name == "" {
		return invalid(field, "required")
	}
	if len(name) > MaxNameLen {
		return invalid(field, "%q is %d characters long; at most %d are allowed", name, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return invalid(field, "%q must start with a letter or digit", name)
		}
		if !alnum && c != '.' && c != '_' && c != '-' {
			return invalid(field, "%q may only contain letters, digits, '.', '_' and '-'", name)
		}
	}
	return nil
}

// validateVIP checks a VIP on its own; uniqueness is the store's job.
func validateVIP(p string, v *VIP) error {
	if err := validateName(p+".name", v.Name); err != nil {
		return err
	}
	if err := validateVIPPrefix(p+".prefix", v.Prefix); err != nil {
		return err
	}
	if v.Interface != "" {
		if err := validateInterface(p+".interface", v.Interface); err != nil {
			return err
		}
	}
	return nil
}

func validateVIPPrefix(field string, pfx netip.Prefix) error {
	addr := pfx.Addr()
	if !addr.IsValid() {
		return invalid(field, "required, such as 192.0.2.10/24 or 2001:db8::10/64")
	}
	if !pfx.IsValid() {
		return invalid(field, "prefix length out of range for %s (0..%d)", FamilyOf(addr), addr.BitLen())
	}
	if addr.Is4In6() {
		return invalid(field, "IPv4-mapped IPv6 address %s is not allowed: use the IPv4 address %s", addr, addr.Unmap())
	}
	switch {
	case addr.IsUnspecified():
		return invalid(field, "%s is the unspecified address", addr)
	case addr.IsLoopback():
		return invalid(field, "%s is a loopback address", addr)
	case addr.IsMulticast():
		return invalid(field, "%s is a multicast address", addr)
	case addr.IsLinkLocalUnicast():
		// IPv6 link-local needs a zone, which neither a VIP nor IPVS
		// can carry; IPv4 link-local is never routed to a director.
		return invalid(field, "%s is a link-local address", addr)
	case addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return invalid(field, "%s is the broadcast address", addr)
	}
	if pfx.Bits() == 0 {
		return invalid(field, "prefix length 0 would put every address on the link; use the VIP's subnet length or /%d", addr.BitLen())
	}
	if addr.Is4() && pfx.Bits() < 31 && addr == lastAddr(pfx) {
		return invalid(field, "%s is the broadcast address of %s", addr, pfx.Masked())
	}
	return nil
}

// lastAddr returns the highest address of an IPv4 prefix.
func lastAddr(pfx netip.Prefix) netip.Addr {
	b := pfx.Masked().Addr().As4()
	host := uint32(1)<<(32-pfx.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// validateInterface applies the kernel's dev_valid_name rules, and refuses
// what ip(8) or a shell would mangle.
func validateInterface(field, name string) error {
	if len(name) > maxIfNameLen {
		return invalid(field, "%q is %d bytes long; Linux interface names have at most %d", name, len(name), maxIfNameLen)
	}
	if name == "." || name == ".." {
		return invalid(field, "%q is not a valid interface name", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == ':' || c == '%' {
			return invalid(field, "%q: interface names may not contain whitespace, control characters, '/', ':' or '%%'", name)
		}
	}
	return nil
}

func validFamily(f Family) bool { return f == IPv4 || f == IPv6 }

func familyBits(f Family) int {
	if f == IPv4 {
		return 32
	}
	return 128
}

func validScheduler(s Scheduler) bool {
	for _, known := range Schedulers() {
		if s == known {
			return true
		}
	}
	return false
}

func schedulerList() string {
	names := make([]string, len(Schedulers()))
	for i, s := range Schedulers() {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

func validMethod(m Method) bool { return m == NAT || m == DR || m == TUN }

// validateServiceSettings checks the mutable fields of a service: the
// rules a patch must satisfy as well. The identity fields (and the Family
// derived from them) must already be valid.
func validateServiceSettings(p string, svc *Service) error {
	if svc.Scheduler == "" {
		return invalid(p+".scheduler", "required: one of %s", schedulerList())
	}
	if !validScheduler(svc.Scheduler) {
		return invalid(p+".scheduler", "unknown scheduler %q: one of %s", svc.Scheduler, schedulerList())
	}
	f := svc.SchedFlags
	if svc.Scheduler != "sh" {
		if f.SHFallback {
			return invalid(p+".sched_flags.sh_fallback", "only for scheduler sh, not %s", svc.Scheduler)
		}
		if f.SHPort {
			return invalid(p+".sched_flags.sh_port", "only for scheduler sh, not %s", svc.Scheduler)
		}
	}
	if svc.Scheduler != "mh" {
		if f.MHFallback {
			return invalid(p+".sched_flags.mh_fallback", "only for scheduler mh, not %s", svc.Scheduler)
		}
		if f.MHPort {
			return invalid(p+".sched_flags.mh_port", "only for scheduler mh, not %s", svc.Scheduler)
		}
	}
	if per := svc.Persistence; per != nil {
		if per.Timeout < 1 || per.Timeout > MaxPersistenceTimeout {
			return invalid(p+".persistence.timeout", "%d is out of range: 1..%d seconds", per.Timeout, MaxPersistenceTimeout)
		}
		if bits := familyBits(svc.Family); per.PrefixLen < 0 || per.PrefixLen > bits {
			return invalid(p+".persistence.prefix_len", "%d is out of range for %s: 0..%d (0 means %d)", per.PrefixLen, svc.Family, bits, bits)
		}
	}
	if svc.OnePacket && svc.FWMark == 0 && svc.Protocol != UDP {
		return invalid(p+".one_packet", "one-packet scheduling is only for udp (or firewall-mark) services, not %s", svc.Protocol)
	}
	if svc.Method == "" {
		return invalid(p+".method", "required: the default forwarding method of the service's servers, nat, dr or tun")
	}
	if !validMethod(svc.Method) {
		return invalid(p+".method", "unknown method %q: nat, dr or tun", svc.Method)
	}
	return nil
}

// validateServer checks a real server of svc and resolves its defaults
// (Method from the service, Admin enabled). srv must be the caller's own
// copy; svc must already be valid. The rules follow what the kernel does
// with the destination, so a server that passes can be programmed.
func validateServer(p string, svc *Service, srv *RealServer) error {
	if err := validateServerAddress(p+".address", srv.Address); err != nil {
		return err
	}
	minPort := 1
	if svc.FWMark != 0 {
		minPort = 0
	}
	if srv.Port < minPort || srv.Port > 65535 {
		if minPort == 0 {
			return invalid(p+".port", "%d is out of range: 0..65535 (0: the port the client used)", srv.Port)
		}
		return invalid(p+".port", "%d is out of range: 1..65535", srv.Port)
	}
	if srv.Method == "" {
		srv.Method = svc.Method
	}
	if !validMethod(srv.Method) {
		return invalid(p+".method", "unknown method %q: nat, dr or tun (empty: the service's %s)", srv.Method, svc.Method)
	}
	if srv.Method == DR || srv.Method == TUN {
		if svc.FWMark == 0 && srv.Port != svc.Port {
			return invalid(p+".port", "%s cannot remap ports: must equal the service port %d, not %d", srv.Method, svc.Port, srv.Port)
		}
		// DR and TUN deliver the packet as the client sent it, so on a
		// firewall-mark service the destination port is never used. A
		// non-zero one would look like a remap that does not happen, and
		// would let 10.0.0.1:80 and 10.0.0.1:443 be two destinations that
		// are really one server with twice the weight. Hence 0 only.
		if svc.FWMark != 0 && srv.Port != 0 {
			return invalid(p+".port", "must be 0 for a %s server of a firewall-mark service: %s forwards to the port the client used", srv.Method, srv.Method)
		}
	}
	if fam := FamilyOf(srv.Address); fam != svc.Family && srv.Method != TUN {
		return invalid(p+".address", "an %s server on an %s service needs method tun, not %s", fam, svc.Family, srv.Method)
	}
	if err := validateTunnel(p, srv); err != nil {
		return err
	}
	if srv.Weight < 0 || srv.Weight > MaxWeight {
		return invalid(p+".weight", "%d is out of range: 0..%d", srv.Weight, MaxWeight)
	}
	if srv.UpperThreshold < 0 || srv.UpperThreshold > MaxThreshold {
		return invalid(p+".upper_threshold", "%d is out of range: 0..%d (0: none)", srv.UpperThreshold, MaxThreshold)
	}
	if srv.LowerThreshold < 0 || srv.LowerThreshold > MaxThreshold {
		return invalid(p+".lower_threshold", "%d is out of range: 0..%d (0: none)", srv.LowerThreshold, MaxThreshold)
	}
	if srv.UpperThreshold > 0 && srv.LowerThreshold > srv.UpperThreshold {
		return invalid(p+".lower_threshold", "%d is above upper_threshold %d", srv.LowerThreshold, srv.UpperThreshold)
	}
	switch srv.Admin {
	case "":
		srv.Admin = Enabled
	case Enabled, Drained, Disabled:
	default:
		return invalid(p+".admin", "unknown admin state %q: enabled, drained or disabled", srv.Admin)
	}
	return nil
}

func validateServerAddress(field string, addr netip.Addr) error {
	switch {
	case !addr.IsValid():
		return invalid(field, "required")
	case addr.Zone() != "":
		return invalid(field, "%s has a zone, which IPVS cannot carry", addr)
	case addr.Is4In6():
		return invalid(field, "IPv4-mapped IPv6 address %s is not allowed: use the IPv4 address %s", addr, addr.Unmap())
	case addr.IsUnspecified():
		return invalid(field, "%s is the unspecified address", addr)
	case addr.IsMulticast():
		return invalid(field, "%s is a multicast address", addr)
	case addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return invalid(field, "%s is the broadcast address", addr)
	case addr.Is6() && addr.IsLinkLocalUnicast():
		return invalid(field, "%s is an IPv6 link-local address, which needs a zone IPVS cannot carry", addr)
	}
	// Loopback is allowed: IPVS delivers to a local real server.
	return nil
}

// validateTunnel checks the TUN-only fields. An empty Tunnel on a TUN
// server means ipip, and an empty TunnelChecksum means nocsum, as in
// ipvsadm; neither is filled in, so a patch that moves a plain ipip
// server to another method needs no clean-up.
func validateTunnel(p string, srv *RealServer) error {
	if srv.Method != TUN {
		if srv.Tunnel != "" {
			return invalid(p+".tunnel", "only for method tun, not %s: clear it", srv.Method)
		}
		if srv.TunnelPort != 0 {
			return invalid(p+".tunnel_port", "only for method tun with tunnel gue, not %s: clear it", srv.Method)
		}
		if srv.TunnelChecksum != "" {
			return invalid(p+".tunnel_checksum", "only for method tun with tunnel gue or gre, not %s: clear it", srv.Method)
		}
		return nil
	}
	tunnel := srv.Tunnel
	switch tunnel {
	case "":
		tunnel = TunnelIPIP
	case TunnelIPIP, TunnelGUE, TunnelGRE:
	default:
		return invalid(p+".tunnel", "unknown tunnel type %q: ipip, gue or gre (empty: ipip)", srv.Tunnel)
	}
	if tunnel == TunnelGUE {
		if srv.TunnelPort < 1 || srv.TunnelPort > 65535 {
			return invalid(p+".tunnel_port", "required for tunnel gue: 1..65535, not %d", srv.TunnelPort)
		}
	} else if srv.TunnelPort != 0 {
		return invalid(p+".tunnel_port", "only for tunnel gue, not %s", tunnel)
	}
	switch srv.TunnelChecksum {
	case "":
	case ChecksumNone, ChecksumOn:
		if tunnel == TunnelIPIP {
			return invalid(p+".tunnel_checksum", "only for tunnel gue or gre, not ipip")
		}
	case ChecksumRemote:
		if tunnel != TunnelGUE {
			return invalid(p+".tunnel_checksum", "remcsum is only for tunnel gue, not %s", tunnel)
		}
	default:
		return invalid(p+".tunnel_checksum", "unknown checksum mode %q: nocsum, csum or remcsum", srv.TunnelChecksum)
	}
	return nil
}
