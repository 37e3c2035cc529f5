package fsm

import (
	"net/netip"
	"strconv"
	"strings"
)

// ServiceIdentity is what the kernel keys a virtual service by: protocol,
// address and port, or firewall mark and family. No two services share one.
type ServiceIdentity struct {
	// FWMark is non-zero for a firewall-mark service, whose identity is
	// FWMark and Family alone.
	FWMark   int64
	Family   Family
	Protocol Protocol
	Address  netip.Addr
	Port     int
}

// String renders the identity in ipvsadm's notation, as api.IPVSService
// keys it: "TCP 10.0.0.1:80", "UDP [2001:db8::1]:53" or "FWM 7 inet".
func (id ServiceIdentity) String() string {
	if id.FWMark != 0 {
		return "FWM " + strconv.FormatInt(id.FWMark, 10) + " " + string(id.Family)
	}
	return strings.ToUpper(string(id.Protocol)) + " " + netip.AddrPortFrom(id.Address, uint16(id.Port)).String()
}

// identityOf computes svc's identity given the address of its VIP (unused
// for a firewall-mark service).
func identityOf(svc *Service, vipAddr netip.Addr) ServiceIdentity {
	if svc.FWMark != 0 {
		return ServiceIdentity{FWMark: svc.FWMark, Family: svc.Family}
	}
	return ServiceIdentity{Family: svc.Family, Protocol: svc.Protocol, Address: vipAddr, Port: svc.Port}
}

// ServiceIdentity returns the kernel identity of svc, a service of s. It
// reports false when svc names a VIP that s does not hold, which a
// validated state never does.
func (s *State) ServiceIdentity(svc *Service) (ServiceIdentity, bool) {
	if svc.FWMark != 0 {
		return identityOf(svc, netip.Addr{}), true
	}
	vip, ok := s.VIPs[svc.VIP]
	if !ok || vip == nil {
		return ServiceIdentity{}, false
	}
	return identityOf(svc, vip.Prefix.Addr()), true
}
