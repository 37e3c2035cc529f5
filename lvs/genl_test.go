package lvs

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
	"github.com/mdlayher/netlink"
)

// attrs decodes one level of attributes into type -> raw value, failing
// on a duplicate. Nested values keep their bytes; the nested flag is
// reported separately.
func attrs(t *testing.T, b []byte) (map[uint16][]byte, map[uint16]bool) {
	t.Helper()
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint16][]byte{}
	nested := map[uint16]bool{}
	for ad.Next() {
		if _, dup := out[ad.Type()]; dup {
			t.Fatalf("attribute %d twice", ad.Type())
		}
		out[ad.Type()] = ad.Bytes()
		nested[ad.Type()] = ad.TypeFlags()&netlink.Nested != 0
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	return out, nested
}

func ne16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }
func ne32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func requireAttrs(t *testing.T, what string, got map[uint16][]byte, want map[uint16][]byte) {
	t.Helper()
	for typ, w := range want {
		g, ok := got[typ]
		if !ok {
			t.Errorf("%s: attribute %d missing", what, typ)
			continue
		}
		if !bytes.Equal(g, w) {
			t.Errorf("%s: attribute %d = % x, want % x", what, typ, g, w)
		}
	}
	for typ := range got {
		if _, ok := want[typ]; !ok {
			t.Errorf("%s: unexpected attribute %d = % x", what, typ, got[typ])
		}
	}
}

// top decodes an op's message into its service and destination
// attributes.
func top(t *testing.T, op Op) (cmd uint8, svc, dst map[uint16][]byte) {
	t.Helper()
	gm, err := encodeOp(op)
	if err != nil {
		t.Fatalf("encode %s: %v", op, err)
	}
	if gm.Header.Version != 1 {
		t.Errorf("genl version %d, want 1", gm.Header.Version)
	}
	outer, nested := attrs(t, gm.Data)
	for typ := range outer {
		if !nested[typ] {
			t.Errorf("%s: attribute %d lacks the nested flag", op, typ)
		}
	}
	svc, _ = attrs(t, outer[cmdAttrService])
	if b, ok := outer[cmdAttrDest]; ok {
		dst, _ = attrs(t, b)
	}
	wantOuter := 1
	if op.Kind.IsDest() {
		wantOuter = 2
	}
	if len(outer) != wantOuter {
		t.Errorf("%s: %d outer attributes, want %d", op, len(outer), wantOuter)
	}
	return gm.Header.Command, svc, dst
}

var (
	tcp4 = ipvs.Service{
		Family: ipvs.INET, Protocol: ipvs.TCP, Address: netip.MustParseAddr("10.0.0.1"), Port: 80,
		Scheduler: "wlc", Flags: ipvs.ServicePersistent | ipvs.ServiceHashed, Timeout: 300,
		Netmask: netmask.MaskFrom(24, 32),
	}
	tcp6 = ipvs.Service{
		Family: ipvs.INET6, Protocol: ipvs.UDP, Address: netip.MustParseAddr("2001:db8::1"), Port: 53,
		Scheduler: "sh", Flags: ipvs.ServicePersistent | ipvs.ServiceSchedulerOpt1, Timeout: 60,
		Netmask: netmask.MaskFrom(64, 128),
	}
	mark = ipvs.Service{Family: ipvs.INET, FWMark: 7, Scheduler: "rr", Netmask: netmask.MaskFrom(32, 32)}
)

func TestEncodeServiceOps(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::1").As16()
	flags := func(f uint32) []byte { return append(ne32(f), 0xff, 0xff, 0xff, 0xff) }
	tests := []struct {
		op   Op
		cmd  uint8
		want map[uint16][]byte
	}{
		{Op{Kind: AddService, Service: tcp4}, cmdNewService, map[uint16][]byte{
			svcAttrAF: ne16(2), svcAttrProtocol: ne16(6), svcAttrAddr: {10, 0, 0, 1}, svcAttrPort: {0, 80},
			svcAttrSchedName: []byte("wlc\x00"),
			// The hashed bit is the kernel's: never sent.
			svcAttrFlags:   flags(1),
			svcAttrTimeout: ne32(300), svcAttrNetmask: {255, 255, 255, 0},
		}},
		{Op{Kind: UpdateService, Service: tcp6}, cmdSetService, map[uint16][]byte{
			svcAttrAF: ne16(10), svcAttrProtocol: ne16(17), svcAttrAddr: v6[:], svcAttrPort: {0, 53},
			svcAttrSchedName: []byte("sh\x00"), svcAttrFlags: flags(1 | 8), svcAttrTimeout: ne32(60),
			// IPv6: the prefix length, as a native integer.
			svcAttrNetmask: ne32(64),
		}},
		{Op{Kind: AddService, Service: mark}, cmdNewService, map[uint16][]byte{
			svcAttrAF: ne16(2), svcAttrFWMark: ne32(7), svcAttrSchedName: []byte("rr\x00"),
			svcAttrFlags: flags(0), svcAttrTimeout: ne32(0), svcAttrNetmask: {255, 255, 255, 255},
		}},
		{Op{Kind: DeleteService, Service: tcp4}, cmdDelService, map[uint16][]byte{
			svcAttrAF: ne16(2), svcAttrProtocol: ne16(6), svcAttrAddr: {10, 0, 0, 1}, svcAttrPort: {0, 80},
		}},
		{Op{Kind: DeleteService, Service: mark}, cmdDelService, map[uint16][]byte{
			svcAttrAF: ne16(2), svcAttrFWMark: ne32(7),
		}},
	}
	for _, tt := range tests {
		cmd, svc, dst := top(t, tt.op)
		if cmd != tt.cmd {
			t.Errorf("%s: command %d, want %d", tt.op, cmd, tt.cmd)
		}
		if dst != nil {
			t.Errorf("%s: has a destination attribute", tt.op)
		}
		requireAttrs(t, tt.op.String(), svc, tt.want)
	}
}

func TestEncodeDestOps(t *testing.T) {
	nat := ipvs.Destination{Address: netip.MustParseAddr("10.1.0.2"), Port: 8080, Family: ipvs.INET,
		FwdMethod: ipvs.Masquerade, Weight: 5, UpperThreshold: 100, LowerThreshold: 10}
	gue := ipvs.Destination{Address: netip.MustParseAddr("2001:db8:1::2"), Port: 80, Family: ipvs.INET6,
		FwdMethod: ipvs.Tunnel, Weight: 1, TunnelType: ipvs.GUE, TunnelPort: 6080, TunnelFlags: ipvs.TunnelEncapChecksum}
	gueAddr := gue.Address.As16()
	svcID := map[uint16][]byte{svcAttrAF: ne16(2), svcAttrProtocol: ne16(6), svcAttrAddr: {10, 0, 0, 1}, svcAttrPort: {0, 80}}
	tests := []struct {
		op   Op
		cmd  uint8
		want map[uint16][]byte
	}{
		{Op{Kind: AddDest, Service: tcp4, Dest: nat}, cmdNewDest, map[uint16][]byte{
			destAttrAddr: {10, 1, 0, 2}, destAttrPort: {0x1f, 0x90}, destAttrAddrFamily: ne16(2),
			destAttrFwdMethod: ne32(0), destAttrWeight: ne32(5), destAttrUThresh: ne32(100), destAttrLThresh: ne32(10),
		}},
		{Op{Kind: UpdateDest, Service: tcp4, Dest: gue}, cmdSetDest, map[uint16][]byte{
			destAttrAddr: gueAddr[:], destAttrPort: {0, 80}, destAttrAddrFamily: ne16(10),
			destAttrFwdMethod: ne32(2), destAttrWeight: ne32(1), destAttrUThresh: ne32(0), destAttrLThresh: ne32(0),
			destAttrTunType: {1}, destAttrTunPort: {0x17, 0xc0}, destAttrTunFlags: ne16(1),
		}},
		{Op{Kind: DeleteDest, Service: tcp4, Dest: nat}, cmdDelDest, map[uint16][]byte{
			destAttrAddr: {10, 1, 0, 2}, destAttrPort: {0x1f, 0x90}, destAttrAddrFamily: ne16(2),
		}},
	}
	for _, tt := range tests {
		cmd, svc, dst := top(t, tt.op)
		if cmd != tt.cmd {
			t.Errorf("%s: command %d, want %d", tt.op, cmd, tt.cmd)
		}
		// A destination op names its service by identity only.
		requireAttrs(t, tt.op.String()+" service", svc, svcID)
		requireAttrs(t, tt.op.String(), dst, tt.want)
	}
}

func TestEncodeRefusesBadInput(t *testing.T) {
	bad := []Op{
		{Kind: AddService, Service: ipvs.Service{Family: 99, FWMark: 1, Scheduler: "rr"}},
		{Kind: AddService, Service: ipvs.Service{Family: ipvs.INET6, Protocol: ipvs.TCP, Address: netip.MustParseAddr("10.0.0.1"), Port: 1, Scheduler: "rr", Netmask: netmask.MaskFrom(128, 128)}},
		{Kind: AddService, Service: ipvs.Service{Family: ipvs.INET6, FWMark: 1, Scheduler: "rr", Netmask: netmask.MaskFrom(32, 32)}},
		{Kind: AddService, Service: ipvs.Service{Family: ipvs.INET, FWMark: 1, Scheduler: "rr"}},
		{Kind: AddDest, Service: mark},
		{Kind: 0, Service: mark},
	}
	for _, op := range bad {
		if _, err := encodeOp(op); err == nil {
			t.Errorf("%s: no error", op)
		}
	}
}

// kernelService encodes a service the way the kernel reports it in a
// GET_SERVICE dump: a 16-byte address, the flags with an all-ones mask,
// and statistics the decoder must skip.
func kernelService(s ipvs.Service) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(cmdAttrService, func(n *netlink.AttributeEncoder) error {
		n.Uint16(svcAttrAF, uint16(s.Family))
		if s.FWMark != 0 {
			n.Uint32(svcAttrFWMark, s.FWMark)
		} else {
			n.Uint16(svcAttrProtocol, uint16(s.Protocol))
			a := s.Address.As16()
			if s.Address.Is4() {
				a = [16]byte{}
				v4 := s.Address.As4()
				copy(a[:], v4[:])
			}
			n.Bytes(svcAttrAddr, a[:])
			n.Bytes(svcAttrPort, binary.BigEndian.AppendUint16(nil, s.Port))
		}
		n.String(svcAttrSchedName, s.Scheduler)
		n.Bytes(svcAttrFlags, append(ne32(uint32(s.Flags|ipvs.ServiceHashed)), 0xff, 0xff, 0xff, 0xff))
		n.Uint32(svcAttrTimeout, s.Timeout)
		if s.Family == ipvs.INET6 {
			n.Uint32(svcAttrNetmask, uint32(s.Netmask.Bits()))
		} else {
			n.Bytes(svcAttrNetmask, s.Netmask.AsSlice())
		}
		n.Nested(10, func(st *netlink.AttributeEncoder) error { // IPVS_SVC_ATTR_STATS
			st.Uint32(1, 12345)
			return nil
		})
		n.String(11, "sip") // IPVS_SVC_ATTR_PE_NAME
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

// kernelDest encodes a destination as a GET_DEST dump reports it.
func kernelDest(d Destination, withFamily bool) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(cmdAttrDest, func(n *netlink.AttributeEncoder) error {
		a := d.Address.As16()
		if d.Address.Is4() {
			a = [16]byte{}
			v4 := d.Address.As4()
			copy(a[:], v4[:])
		}
		n.Bytes(destAttrAddr, a[:])
		n.Bytes(destAttrPort, binary.BigEndian.AppendUint16(nil, d.Port))
		// The kernel reports the connection flags masked to the method.
		n.Uint32(destAttrFwdMethod, uint32(d.FwdMethod))
		n.Uint32(destAttrWeight, d.Weight)
		n.Uint32(destAttrUThresh, d.UpperThreshold)
		n.Uint32(destAttrLThresh, d.LowerThreshold)
		n.Uint32(destAttrActiveConns, d.ActiveConns)
		n.Uint32(destAttrInactConns, d.InactiveConns)
		n.Uint32(destAttrPersistConns, d.PersistentConns)
		if withFamily {
			n.Uint16(destAttrAddrFamily, uint16(d.Family))
		}
		n.Uint8(destAttrTunType, uint8(d.TunnelType))
		n.Bytes(destAttrTunPort, binary.BigEndian.AppendUint16(nil, d.TunnelPort))
		n.Uint16(destAttrTunFlags, uint16(d.TunnelFlags))
		n.Nested(12, func(st *netlink.AttributeEncoder) error { // IPVS_DEST_ATTR_STATS64
			st.Uint64(1, 1)
			return nil
		})
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

func TestDecodeKernelReplies(t *testing.T) {
	for _, s := range []ipvs.Service{tcp4, tcp6, mark} {
		got, err := decodeServiceMsg(kernelService(s))
		if err != nil {
			t.Fatalf("%s: %v", KeyOf(s), err)
		}
		if KeyOf(got) != KeyOf(s) || !sameServiceAttrs(&got, &s) || got.Flags&ipvs.ServiceHashed == 0 {
			t.Errorf("decoded %+v\n   want %+v (with the hashed flag)", got, s)
		}
	}
	d := Destination{Destination: ipvs.Destination{Address: netip.MustParseAddr("2001:db8:1::2"), Port: 80, Family: ipvs.INET6,
		FwdMethod: ipvs.Tunnel, Weight: 3, UpperThreshold: 9, LowerThreshold: 2, TunnelType: ipvs.GRE, TunnelFlags: ipvs.TunnelEncapChecksum},
		ActiveConns: 4, InactiveConns: 5, PersistentConns: 6}
	got, err := decodeDestMsg(kernelDest(d, true), ipvs.INET)
	if err != nil {
		t.Fatal(err)
	}
	if got != d {
		t.Errorf("decoded %+v\n   want %+v", got, d)
	}
	// Kernels before 3.18 send no family: the service's applies.
	d4 := Destination{Destination: ipvs.Destination{Address: netip.MustParseAddr("10.1.0.1"), Port: 80, Family: ipvs.INET, Weight: 1}}
	got, err = decodeDestMsg(kernelDest(d4, false), ipvs.INET)
	if err != nil || got != d4 {
		t.Errorf("decoded %+v, %v; want %+v", got, err, d4)
	}
}

func TestDecodeRejectsMalformedReplies(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(cmdAttrService, func(n *netlink.AttributeEncoder) error {
		n.Uint16(svcAttrAF, 2)
		n.Uint16(svcAttrProtocol, 6)
		n.Bytes(svcAttrAddr, []byte{10, 0, 0, 1})
		n.Bytes(svcAttrPort, []byte{0, 80})
		n.Uint32(svcAttrFlags, 0) // 4 bytes: not a struct ip_vs_flags
		n.Bytes(svcAttrNetmask, []byte{255, 255, 255, 255})
		return nil
	})
	b, _ := ae.Encode()
	if _, err := decodeServiceMsg(b); err == nil || !strings.Contains(err.Error(), "flags") {
		t.Errorf("short flags: %v", err)
	}
	if _, err := decodeServiceMsg(nil); err == nil {
		t.Error("empty message decoded")
	}
	if _, err := decodeDestMsg([]byte{4, 0, 2, 0}, ipvs.INET); err == nil {
		t.Error("destination without an address decoded")
	}
}
