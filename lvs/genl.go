package lvs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// The IPVS generic netlink protocol, from include/uapi/linux/ip_vs.h.
const (
	genlName    = "IPVS"
	genlVersion = 1

	cmdNewService = 1
	cmdSetService = 2
	cmdDelService = 3
	cmdGetService = 4
	cmdNewDest    = 5
	cmdSetDest    = 6
	cmdDelDest    = 7
	cmdGetDest    = 8

	cmdAttrService = 1
	cmdAttrDest    = 2

	svcAttrAF        = 1
	svcAttrProtocol  = 2
	svcAttrAddr      = 3
	svcAttrPort      = 4
	svcAttrFWMark    = 5
	svcAttrSchedName = 6
	svcAttrFlags     = 7
	svcAttrTimeout   = 8
	svcAttrNetmask   = 9

	destAttrAddr         = 1
	destAttrPort         = 2
	destAttrFwdMethod    = 3
	destAttrWeight       = 4
	destAttrUThresh      = 5
	destAttrLThresh      = 6
	destAttrActiveConns  = 7
	destAttrInactConns   = 8
	destAttrPersistConns = 9
	destAttrAddrFamily   = 11
	destAttrTunType      = 13
	destAttrTunPort      = 14
	destAttrTunFlags     = 15

	// fwdMask selects the forwarding method in a destination's
	// connection flags (IP_VS_CONN_F_FWD_MASK).
	fwdMask = 0x7
)

// opCommand maps an op kind to its IPVS command.
var opCommand = [...]uint8{
	AddService:    cmdNewService,
	UpdateService: cmdSetService,
	DeleteService: cmdDelService,
	AddDest:       cmdNewDest,
	UpdateDest:    cmdSetDest,
	DeleteDest:    cmdDelDest,
}

// encodeOp returns the generic netlink message for op: its command and
// attributes, without the netlink header.
func encodeOp(op Op) (genetlink.Message, error) {
	if op.Kind < AddService || op.Kind > DeleteDest {
		return genetlink.Message{}, fmt.Errorf("unknown op kind %d", op.Kind)
	}
	ae := netlink.NewAttributeEncoder()
	full := op.Kind == AddService || op.Kind == UpdateService
	ae.Nested(cmdAttrService, func(nae *netlink.AttributeEncoder) error {
		return encodeService(nae, op.Service, full)
	})
	if op.Kind.IsDest() {
		ae.Nested(cmdAttrDest, func(nae *netlink.AttributeEncoder) error {
			return encodeDest(nae, op.Dest, op.Kind != DeleteDest)
		})
	}
	b, err := ae.Encode()
	if err != nil {
		return genetlink.Message{}, err
	}
	return genetlink.Message{
		Header: genetlink.Header{Command: opCommand[op.Kind], Version: genlVersion},
		Data:   b,
	}, nil
}

// encodeService writes a service's identity and, when full, its settings:
// the kernel requires all four settings for NEW and SET and reads only
// the identity otherwise.
func encodeService(ae *netlink.AttributeEncoder, s ipvs.Service, full bool) error {
	if s.Family != ipvs.INET && s.Family != ipvs.INET6 {
		return fmt.Errorf("service %s: unknown address family %d", KeyOf(s), s.Family)
	}
	ae.Uint16(svcAttrAF, uint16(s.Family))
	if s.FWMark != 0 {
		ae.Uint32(svcAttrFWMark, s.FWMark)
	} else {
		if !s.Address.IsValid() || afOf(s.Address) != s.Family {
			return fmt.Errorf("service %s: address does not match family %s", KeyOf(s), familyName(s.Family))
		}
		ae.Uint16(svcAttrProtocol, uint16(s.Protocol))
		ae.Bytes(svcAttrAddr, s.Address.AsSlice())
		ae.Bytes(svcAttrPort, be16(s.Port))
	}
	if !full {
		return nil
	}
	mask, err := encodeNetmask(s.Family, s.Netmask)
	if err != nil {
		return fmt.Errorf("service %s: %w", KeyOf(s), err)
	}
	ae.String(svcAttrSchedName, s.Scheduler)
	// struct ip_vs_flags { flags, mask }: the mask says which bits to
	// set. The kernel owns the hashed bit and refuses a new service that
	// claims it.
	flags := make([]byte, 8)
	binary.NativeEndian.PutUint32(flags[0:], uint32(s.Flags&^ipvs.ServiceHashed))
	binary.NativeEndian.PutUint32(flags[4:], ^uint32(0))
	ae.Bytes(svcAttrFlags, flags)
	ae.Uint32(svcAttrTimeout, s.Timeout)
	ae.Bytes(svcAttrNetmask, mask)
	return nil
}

// encodeNetmask encodes a persistence netmask as the kernel reads it
// (nla_get_be32, unconverted): the IPv4 mask's bytes in network order, or
// the IPv6 prefix length as a native integer, 1..128.
func encodeNetmask(fam ipvs.AddressFamily, m netmask.Mask) ([]byte, error) {
	if fam == ipvs.INET6 {
		bits := m.Bits()
		if !m.Is6() || bits < 1 || bits > 128 {
			return nil, fmt.Errorf("netmask %s is not an IPv6 prefix length of 1..128", m)
		}
		b := make([]byte, 4)
		binary.NativeEndian.PutUint32(b, uint32(bits))
		return b, nil
	}
	if !m.Is4() {
		return nil, fmt.Errorf("netmask %s is not an IPv4 netmask", m)
	}
	return m.AsSlice(), nil
}

// encodeDest writes a destination's identity and, when full, its
// settings. Tunnel settings go only with the tunnel method.
func encodeDest(ae *netlink.AttributeEncoder, d ipvs.Destination, full bool) error {
	if !d.Address.IsValid() {
		return errors.New("destination has no address")
	}
	ae.Bytes(destAttrAddr, d.Address.AsSlice())
	ae.Bytes(destAttrPort, be16(d.Port))
	ae.Uint16(destAttrAddrFamily, uint16(afOf(d.Address)))
	if !full {
		return nil
	}
	ae.Uint32(destAttrFwdMethod, uint32(d.FwdMethod)&fwdMask)
	ae.Uint32(destAttrWeight, d.Weight)
	ae.Uint32(destAttrUThresh, d.UpperThreshold)
	ae.Uint32(destAttrLThresh, d.LowerThreshold)
	if d.FwdMethod == ipvs.Tunnel {
		ae.Uint8(destAttrTunType, uint8(d.TunnelType))
		ae.Bytes(destAttrTunPort, be16(d.TunnelPort))
		ae.Uint16(destAttrTunFlags, uint16(d.TunnelFlags))
	}
	return nil
}

// encodeGetDests returns the dump request for a service's destinations.
func encodeGetDests(s ipvs.Service) (genetlink.Message, error) {
	return encodeServiceRequest(cmdGetDest, s)
}

// encodeServiceRequest returns a request cmd that names the service s by
// its identity alone.
func encodeServiceRequest(cmd uint8, s ipvs.Service) (genetlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(cmdAttrService, func(nae *netlink.AttributeEncoder) error {
		return encodeService(nae, s, false)
	})
	b, err := ae.Encode()
	if err != nil {
		return genetlink.Message{}, err
	}
	return genetlink.Message{Header: genetlink.Header{Command: cmd, Version: genlVersion}, Data: b}, nil
}

func be16(v uint16) []byte {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, v)
	return b
}

// decodeServiceMsg decodes one message of a GET_SERVICE dump.
func decodeServiceMsg(data []byte) (ipvs.Service, error) {
	var s ipvs.Service
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return s, err
	}
	found := false
	for ad.Next() {
		if ad.Type() == cmdAttrService {
			found = true
			ad.Do(func(b []byte) error {
				var err error
				s, err = decodeService(b)
				return err
			})
		}
	}
	if err := ad.Err(); err != nil {
		return s, err
	}
	if !found {
		return s, errors.New("service message without a service attribute")
	}
	return s, nil
}

// decodeService decodes the nested service attributes the kernel reports.
func decodeService(b []byte) (ipvs.Service, error) {
	var s ipvs.Service
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return s, err
	}
	var addr, mask, flags []byte
	for ad.Next() {
		switch ad.Type() {
		case svcAttrAF:
			s.Family = ipvs.AddressFamily(ad.Uint16())
		case svcAttrProtocol:
			s.Protocol = ipvs.Protocol(ad.Uint16())
		case svcAttrAddr:
			addr = ad.Bytes()
		case svcAttrPort:
			s.Port = decodeBE16(ad)
		case svcAttrFWMark:
			s.FWMark = ad.Uint32()
		case svcAttrSchedName:
			s.Scheduler = ad.String()
		case svcAttrFlags:
			flags = ad.Bytes()
		case svcAttrTimeout:
			s.Timeout = ad.Uint32()
		case svcAttrNetmask:
			mask = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return s, err
	}
	if s.Family != ipvs.INET && s.Family != ipvs.INET6 {
		return s, fmt.Errorf("service with unknown address family %d", s.Family)
	}
	if s.FWMark == 0 {
		a, err := decodeAddr(s.Family, addr)
		if err != nil {
			return s, fmt.Errorf("service address: %w", err)
		}
		s.Address = a
	}
	if len(flags) != 8 {
		return s, fmt.Errorf("service flags: %d bytes, want 8", len(flags))
	}
	s.Flags = ipvs.Flags(binary.NativeEndian.Uint32(flags))
	switch {
	case len(mask) != 4:
		return s, fmt.Errorf("service netmask: %d bytes, want 4", len(mask))
	case s.Family == ipvs.INET:
		s.Netmask = netmask.MaskFrom4([4]byte(mask))
	default:
		s.Netmask = netmask.MaskFrom(int(binary.NativeEndian.Uint32(mask)), 128)
	}
	return s, nil
}

// decodeDestMsg decodes one message of a GET_DEST dump of a service of
// family fam.
func decodeDestMsg(data []byte, fam ipvs.AddressFamily) (Destination, error) {
	var d Destination
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return d, err
	}
	found := false
	for ad.Next() {
		if ad.Type() == cmdAttrDest {
			found = true
			ad.Do(func(b []byte) error {
				var err error
				d, err = decodeDest(b, fam)
				return err
			})
		}
	}
	if err := ad.Err(); err != nil {
		return d, err
	}
	if !found {
		return d, errors.New("destination message without a destination attribute")
	}
	return d, nil
}

// decodeDest decodes the nested destination attributes. Kernels before
// 3.18 do not report a destination's family; it is then the service's.
func decodeDest(b []byte, fam ipvs.AddressFamily) (Destination, error) {
	d := Destination{Destination: ipvs.Destination{Family: fam}}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return d, err
	}
	var addr []byte
	for ad.Next() {
		switch ad.Type() {
		case destAttrAddr:
			addr = ad.Bytes()
		case destAttrPort:
			d.Port = decodeBE16(ad)
		case destAttrFwdMethod:
			d.FwdMethod = ipvs.ForwardType(ad.Uint32() & fwdMask)
		case destAttrWeight:
			d.Weight = ad.Uint32()
		case destAttrUThresh:
			d.UpperThreshold = ad.Uint32()
		case destAttrLThresh:
			d.LowerThreshold = ad.Uint32()
		case destAttrActiveConns:
			d.ActiveConns = ad.Uint32()
		case destAttrInactConns:
			d.InactiveConns = ad.Uint32()
		case destAttrPersistConns:
			d.PersistentConns = ad.Uint32()
		case destAttrAddrFamily:
			d.Family = ipvs.AddressFamily(ad.Uint16())
		case destAttrTunType:
			d.TunnelType = ipvs.TunnelType(ad.Uint8())
		case destAttrTunPort:
			d.TunnelPort = decodeBE16(ad)
		case destAttrTunFlags:
			d.TunnelFlags = ipvs.TunnelFlags(ad.Uint16())
		}
	}
	if err := ad.Err(); err != nil {
		return d, err
	}
	a, err := decodeAddr(d.Family, addr)
	if err != nil {
		return d, fmt.Errorf("destination address: %w", err)
	}
	d.Address = a
	return d, nil
}

// decodeAddr reads a union nf_inet_addr: 16 bytes, of which an IPv4
// address uses the first 4.
func decodeAddr(fam ipvs.AddressFamily, b []byte) (netip.Addr, error) {
	switch {
	case fam == ipvs.INET && len(b) >= 4:
		return netip.AddrFrom4([4]byte(b[:4])), nil
	case fam == ipvs.INET6 && len(b) >= 16:
		return netip.AddrFrom16([16]byte(b[:16])), nil
	}
	return netip.Addr{}, fmt.Errorf("%d bytes for family %s", len(b), familyName(fam))
}

// decodeBE16 reads a port: a 16-bit value in network byte order.
func decodeBE16(ad *netlink.AttributeDecoder) uint16 {
	var v uint16
	ad.Do(func(b []byte) error {
		if len(b) != 2 {
			return fmt.Errorf("port attribute of %d bytes, want 2", len(b))
		}
		v = binary.BigEndian.Uint16(b)
		return nil
	})
	return v
}
