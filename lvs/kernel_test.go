package lvs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"

	"github.com/directorate/directorate/fsm"
)

const testFamily = 0x2a

// reply is one datagram the fake kernel has queued: messages, or the
// error the netlink library returns for an error reply.
type reply struct {
	msgs []netlink.Message
	err  error
}

// fakeKernel stands in for the kernel's IPVS on the far side of a netlink
// socket. It parses requests with its own decoder, written from ip_vs.h
// independently of the package's encoder, applies them with the kernel's
// semantics, and answers as the kernel does: an ack or an error per
// request that asks for one, in order.
//
// Each fakeKernel is one socket; sockets made by sibling share the table.
type fakeKernel struct {
	*fakeIPVS
	queue   []reply
	closed  bool
	inject  func(seq uint32) []reply // extra replies queued before a request's own
	recvErr error                    // returned by the next Receive
}

// fakeIPVS is the kernel side the sockets share.
type fakeIPVS struct {
	mu     sync.Mutex
	table  Table
	sends  int
	failOp func(Op) error
}

func newFakeKernel() *fakeKernel { return &fakeKernel{fakeIPVS: &fakeIPVS{table: make(Table)}} }

// sibling returns another socket to the same kernel.
func (k *fakeKernel) sibling() *fakeKernel { return &fakeKernel{fakeIPVS: k.fakeIPVS} }

func (k *fakeKernel) SetDeadline(time.Time) error { return nil }

func (k *fakeKernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	return nil
}

func (k *fakeKernel) Receive() ([]netlink.Message, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.recvErr != nil {
		err := k.recvErr
		k.recvErr = nil
		return nil, err
	}
	if len(k.queue) == 0 {
		// What the socket reports once the deadline passes with
		// nothing to read.
		return nil, &netlink.OpError{Op: "receive", Err: os.ErrDeadlineExceeded}
	}
	r := k.queue[0]
	k.queue = k.queue[1:]
	return r.msgs, r.err
}

func (k *fakeKernel) SendMessages(msgs []netlink.Message) ([]netlink.Message, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, errors.New("use of closed socket")
	}
	k.sends++
	for _, m := range msgs {
		if m.Header.Type != testFamily || m.Header.Flags&netlink.Request == 0 || m.Header.Sequence == 0 {
			return nil, fmt.Errorf("bad request header %+v", m.Header)
		}
		if k.inject != nil {
			k.queue = append(k.queue, k.inject(m.Header.Sequence)...)
		}
		var gm genetlink.Message
		if err := gm.UnmarshalBinary(m.Data); err != nil {
			return nil, err
		}
		if m.Header.Flags&netlink.Dump != 0 {
			k.dump(m.Header.Sequence, gm)
			continue
		}
		if gm.Header.Command == 4 { // GET_SERVICE of one service
			k.getService(m.Header.Sequence, gm)
			continue
		}
		err := k.handle(gm)
		switch {
		case err != nil:
			k.queue = append(k.queue, reply{err: &netlink.OpError{Op: "receive", Err: err, Sequence: m.Header.Sequence}})
		case m.Header.Flags&netlink.Acknowledge != 0:
			k.queue = append(k.queue, reply{msgs: []netlink.Message{{
				Header: netlink.Header{Type: netlink.Error, Sequence: m.Header.Sequence},
				Data:   make([]byte, 4+16),
			}}})
		}
	}
	return msgs, nil
}

// handle applies one change request.
func (k *fakeKernel) handle(gm genetlink.Message) error {
	kinds := map[uint8]OpKind{1: AddService, 2: UpdateService, 3: DeleteService, 5: AddDest, 6: UpdateDest, 7: DeleteDest}
	kind, ok := kinds[gm.Header.Command]
	if !ok || gm.Header.Version != 1 {
		return syscall.EOPNOTSUPP
	}
	op := Op{Kind: kind}
	svcAttrs, dstAttrs, err := parseTop(gm.Data)
	if err != nil {
		return err
	}
	full := kind == AddService || kind == UpdateService
	if op.Service, err = parseSvc(svcAttrs, full); err != nil {
		return err
	}
	if kind.IsDest() {
		if dstAttrs == nil {
			return syscall.EINVAL
		}
		if op.Dest, err = parseDst(dstAttrs, kind != DeleteDest); err != nil {
			return err
		}
	}
	if k.failOp != nil {
		if err := k.failOp(op); err != nil {
			return err
		}
	}
	return applyOp(k.table, op)
}

func (k *fakeKernel) dump(seq uint32, gm genetlink.Message) {
	var payloads [][]byte
	switch gm.Header.Command {
	case 4: // GET_SERVICE
		for _, key := range k.table.Keys() {
			payloads = append(payloads, kernelService(k.table[key].Service))
		}
	case 8: // GET_DEST
		svcAttrs, _, err := parseTop(gm.Data)
		if err != nil {
			k.queue = append(k.queue, reply{err: &netlink.OpError{Err: err, Sequence: seq}})
			return
		}
		id, err := parseSvc(svcAttrs, false)
		if err != nil {
			k.queue = append(k.queue, reply{err: &netlink.OpError{Err: err, Sequence: seq}})
			return
		}
		if s := k.table[KeyOf(id)]; s != nil {
			for _, d := range s.Dests {
				payloads = append(payloads, kernelDest(d, true))
			}
		}
	}
	msgs := make([]netlink.Message, len(payloads))
	for i, p := range payloads {
		data, _ := genetlink.Message{Header: genetlink.Header{Command: gm.Header.Command, Version: 1}, Data: p}.MarshalBinary()
		msgs[i] = netlink.Message{Header: netlink.Header{Type: testFamily, Flags: netlink.Multi, Sequence: seq}, Data: data}
	}
	// The library strips the final "done" message of a multi-part reply.
	k.queue = append(k.queue, reply{msgs: msgs})
}

// getService answers a GET_SERVICE request as ip_vs_genl_get_cmd does:
// one NEW_SERVICE message, or ESRCH.
func (k *fakeKernel) getService(seq uint32, gm genetlink.Message) {
	svcAttrs, _, err := parseTop(gm.Data)
	var id ipvs.Service
	if err == nil {
		id, err = parseSvc(svcAttrs, false)
	}
	if err == nil && k.table[KeyOf(id)] == nil {
		err = syscall.ESRCH
	}
	if err != nil {
		k.queue = append(k.queue, reply{err: &netlink.OpError{Op: "receive", Err: err, Sequence: seq}})
		return
	}
	data, _ := genetlink.Message{Header: genetlink.Header{Command: 1, Version: 1}, Data: kernelService(k.table[KeyOf(id)].Service)}.MarshalBinary()
	k.queue = append(k.queue, reply{msgs: []netlink.Message{{Header: netlink.Header{Type: testFamily, Sequence: seq}, Data: data}}})
}

func parseTop(b []byte) (svc, dst map[uint16][]byte, err error) {
	top, err := netlink.UnmarshalAttributes(b)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range top {
		m := map[uint16][]byte{}
		inner, err := netlink.UnmarshalAttributes(a.Data)
		if err != nil {
			return nil, nil, err
		}
		for _, x := range inner {
			m[x.Type] = x.Data
		}
		switch a.Type &^ netlink.Nested {
		case 1:
			svc = m
		case 2:
			dst = m
		}
	}
	if svc == nil {
		return nil, nil, syscall.EINVAL
	}
	return svc, dst, nil
}

// parseSvc reads service attributes as ip_vs_genl_parse_service does:
// family, then fwmark or protocol/address/port, then (full) the four
// settings, all required.
func parseSvc(a map[uint16][]byte, full bool) (ipvs.Service, error) {
	var s ipvs.Service
	af, ok := a[1]
	if !ok || len(af) != 2 {
		return s, syscall.EINVAL
	}
	s.Family = ipvs.AddressFamily(binary.NativeEndian.Uint16(af))
	if fw, ok := a[5]; ok {
		s.FWMark = binary.NativeEndian.Uint32(fw)
	} else {
		proto, addr, port := a[2], a[3], a[4]
		if len(proto) != 2 || len(port) != 2 || len(addr) == 0 || len(addr) > 16 {
			return s, syscall.EINVAL
		}
		s.Protocol = ipvs.Protocol(binary.NativeEndian.Uint16(proto))
		var buf [16]byte
		copy(buf[:], addr)
		if s.Family == ipvs.INET {
			s.Address = netip.AddrFrom4([4]byte(buf[:4]))
		} else {
			s.Address = netip.AddrFrom16(buf)
		}
		s.Port = binary.BigEndian.Uint16(port)
	}
	if !full {
		return s, nil
	}
	sched, flags, timeout, mask := a[6], a[7], a[8], a[9]
	if len(sched) < 2 || sched[len(sched)-1] != 0 || len(flags) != 8 || len(timeout) != 4 || len(mask) != 4 {
		return s, syscall.EINVAL
	}
	s.Scheduler = string(sched[:len(sched)-1])
	f, fmask := binary.NativeEndian.Uint32(flags), binary.NativeEndian.Uint32(flags[4:])
	if fmask != ^uint32(0) || f&uint32(ipvs.ServiceHashed) != 0 {
		return s, syscall.EINVAL
	}
	s.Flags = ipvs.Flags(f)
	s.Timeout = binary.NativeEndian.Uint32(timeout)
	if s.Family == ipvs.INET6 {
		plen := binary.NativeEndian.Uint32(mask)
		if plen < 1 || plen > 128 {
			return s, syscall.EINVAL
		}
		s.Netmask = netmask.MaskFrom(int(plen), 128)
	} else {
		s.Netmask = netmask.MaskFrom4([4]byte(mask))
	}
	return s, nil
}

// parseDst reads destination attributes as ip_vs_genl_parse_dest does.
func parseDst(a map[uint16][]byte, full bool) (ipvs.Destination, error) {
	var d ipvs.Destination
	addr, port := a[1], a[2]
	if len(port) != 2 || len(addr) == 0 || len(addr) > 16 {
		return d, syscall.EINVAL
	}
	d.Family = ipvs.INET
	if af, ok := a[11]; ok {
		d.Family = ipvs.AddressFamily(binary.NativeEndian.Uint16(af))
	}
	var buf [16]byte
	copy(buf[:], addr)
	if d.Family == ipvs.INET {
		d.Address = netip.AddrFrom4([4]byte(buf[:4]))
	} else {
		d.Address = netip.AddrFrom16(buf)
	}
	d.Port = binary.BigEndian.Uint16(port)
	if !full {
		return d, nil
	}
	fwd, weight, u, l := a[3], a[4], a[5], a[6]
	if len(fwd) != 4 || len(weight) != 4 || len(u) != 4 || len(l) != 4 {
		return d, syscall.EINVAL
	}
	d.FwdMethod = ipvs.ForwardType(binary.NativeEndian.Uint32(fwd) & 7)
	d.Weight = binary.NativeEndian.Uint32(weight)
	d.UpperThreshold = binary.NativeEndian.Uint32(u)
	d.LowerThreshold = binary.NativeEndian.Uint32(l)
	if t, ok := a[13]; ok && len(t) == 1 {
		d.TunnelType = ipvs.TunnelType(t[0])
	}
	if p, ok := a[14]; ok && len(p) == 2 {
		d.TunnelPort = binary.BigEndian.Uint16(p)
	}
	if f, ok := a[15]; ok && len(f) == 2 {
		d.TunnelFlags = ipvs.TunnelFlags(binary.NativeEndian.Uint16(f))
	}
	if d.FwdMethod == ipvs.Tunnel && d.TunnelType == ipvs.GUE && d.TunnelPort == 0 {
		return d, syscall.EINVAL
	}
	return d, nil
}

// kernelRig is a Kernel backend on a fake kernel. fk is the first socket
// it opened; socks are all of them.
type kernelRig struct {
	fk    *fakeKernel
	k     *Kernel
	socks []*fakeKernel
}

func newKernelRig(t *testing.T, batch int) *kernelRig {
	kr := &kernelRig{fk: newFakeKernel()}
	kr.k = newKernel(testLogger(t), KernelOptions{Batch: batch}, func() (nlConn, uint16, error) {
		s := kr.fk
		if len(kr.socks) > 0 {
			s = kr.fk.sibling()
		}
		kr.socks = append(kr.socks, s)
		return s, testFamily, nil
	})
	if err := kr.k.connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kr.k.Close() })
	return kr
}

// richState exercises every kind of setting the encoder carries.
func richState() *fsm.State {
	st := webState()
	p := tcpService("persist", "v4", 443)
	p.Persistence = &fsm.Persistence{Timeout: 900, PrefixLen: 24}
	p.Scheduler = "sh"
	p.SchedFlags = fsm.SchedFlags{SHFallback: true}
	p.Method = fsm.TUN
	g := addServer(p, "10.1.0.5", 443, 2)
	g.Tunnel, g.TunnelPort, g.TunnelChecksum = fsm.TunnelGUE, 6080, fsm.ChecksumOn
	addServer(p, "10.1.0.6", 443, 3).UpperThreshold = 50
	st.Services["persist"] = p
	m := &fsm.Service{Name: "mark", FWMark: 42, Family: fsm.IPv6, Scheduler: "mh",
		SchedFlags: fsm.SchedFlags{MHPort: true}, Persistence: &fsm.Persistence{Timeout: 30, PrefixLen: 48},
		Method: fsm.DR, Servers: map[string]*fsm.RealServer{}}
	addServer(m, "2001:db8:1::9", 0, 4)
	st.Services["mark"] = m
	return st
}

func TestKernelBackendOnFakeKernel(t *testing.T) {
	kr := newKernelRig(t, 3)
	r := NewReconciler(kr.k, testLogger(t), Options{ResyncInterval: -1})
	st := richState()
	d := mustDesired(t, st)
	res, err := r.Reconcile(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	// What the fake kernel parsed is what was desired: the encoding
	// carries every setting.
	if rep := Diff(d, kr.fk.table, nil); !rep.InSync {
		t.Fatalf("fake kernel table differs from desired: %+v", rep)
	}
	// And List reads it back: the decoding does too.
	requireInSync(t, d, kr.k)
	if want := (res.Ops.Total() + 2) / 3; kr.fk.sends < want {
		t.Errorf("%d ops in batches of 3 took %d writes", res.Ops.Total(), kr.fk.sends)
	}

	st.Services["persist"].Servers["10.1.0.6:443"].Weight = 9
	sends := kr.fk.sends
	res, err = r.Reconcile(t.Context(), mustDesired(t, st))
	if err != nil || res.Ops != (OpCounts{UpdateDest: 1}) {
		t.Fatalf("weight change: %+v, %v", res, err)
	}
	// One write for the change; the rest are List's dumps (one for the
	// services, one per service).
	if got := kr.fk.sends - sends; got != 1+1+len(kr.fk.table) {
		t.Errorf("weight change took %d writes", got)
	}
	if kr.fk.table[KeyOf(mustDesired(t, st).Services.byName("persist").Service)].Dest(netip.MustParseAddrPort("10.1.0.6:443")).Weight != 9 {
		t.Error("weight not applied")
	}
}

func (t Table) byName(name string) *Service {
	for _, s := range t {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func TestKernelMatchesErrorsBySequence(t *testing.T) {
	kr := newKernelRig(t, 4)
	ops := make([]Op, 10)
	for i := range ops {
		ops[i] = Op{Kind: AddService, Service: ipvs.Service{Family: ipvs.INET, FWMark: uint32(i + 1), Scheduler: "rr", Netmask: fullMask(ipvs.INET)}}
	}
	ops[2].Service.Scheduler = "nosuch"                       // the kernel says ENOENT
	ops[7] = Op{Kind: DeleteService, Service: ops[7].Service} // ESRCH: not there
	// Replies to requests of an abandoned batch arrive first and must
	// not be taken for this batch's.
	kr.fk.inject = func(seq uint32) []reply {
		if seq%4 != 0 {
			return nil
		}
		return []reply{
			{msgs: []netlink.Message{{Header: netlink.Header{Type: netlink.Error, Sequence: seq + 1000}, Data: make([]byte, 20)}}},
			{err: &netlink.OpError{Err: syscall.EEXIST, Sequence: seq + 2000}},
		}
	}
	err := kr.k.Apply(t.Context(), ops)
	oes := OpErrors(err)
	if len(oes) != 2 || oes[0].Index != 2 || oes[1].Index != 7 {
		t.Fatalf("op errors %v, want ops 2 and 7", err)
	}
	if !errors.Is(oes[0], syscall.ENOENT) || !errors.Is(oes[1], syscall.ESRCH) {
		t.Errorf("errnos: %v", err)
	}
	if !strings.Contains(err.Error(), "add service FWM 3 inet: no such file or directory") ||
		!strings.Contains(err.Error(), "delete service FWM 8 inet: no such process") {
		t.Errorf("error text: %v", err)
	}
	if kr.fk.sends != 3 {
		t.Errorf("10 ops in batches of 4 took %d writes, want 3", kr.fk.sends)
	}
	if len(kr.fk.table) != 8 {
		t.Errorf("kernel has %d services, want the 8 good ones", len(kr.fk.table))
	}
	if len(kr.socks) != 1 || kr.fk.closed {
		t.Errorf("a clean batch with op failures reopened the socket (%d sockets)", len(kr.socks))
	}
}

func TestKernelTransportFailures(t *testing.T) {
	ops := []Op{
		{Kind: AddService, Service: mark},
		{Kind: AddService, Service: tcp4},
	}
	t.Run("receive error", func(t *testing.T) {
		kr := newKernelRig(t, 10)
		kr.fk.recvErr = &netlink.OpError{Op: "receive", Err: os.NewSyscallError("recvmsg", syscall.ENOBUFS)}
		err := kr.k.Apply(t.Context(), ops)
		if !errors.Is(err, syscall.ENOBUFS) || !strings.Contains(err.Error(), "read IPVS acknowledgements (2 of 2 outstanding)") {
			t.Fatalf("err = %v", err)
		}
		if !kr.fk.closed {
			t.Error("socket with unread replies kept")
		}
		// The next call reopens the socket and works.
		if _, err := kr.k.List(t.Context()); err != nil || len(kr.socks) < 2 || kr.socks[len(kr.socks)-1].closed {
			t.Fatalf("after reopen: %v, %d sockets", err, len(kr.socks))
		}
	})
	t.Run("context canceled", func(t *testing.T) {
		kr := newKernelRig(t, 1)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := kr.k.Apply(ctx, ops)
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "2 IPVS ops not sent") {
			t.Fatalf("err = %v", err)
		}
		if kr.fk.sends != 0 {
			t.Error("sent after cancel")
		}
	})
	t.Run("unencodable op", func(t *testing.T) {
		kr := newKernelRig(t, 10)
		bad := Op{Kind: AddService, Service: ipvs.Service{Family: 77, FWMark: 1}}
		err := kr.k.Apply(t.Context(), []Op{ops[0], bad, ops[1]})
		oes := OpErrors(err)
		if len(oes) != 1 || oes[0].Index != 1 || !strings.Contains(err.Error(), "encode") {
			t.Fatalf("err = %v", err)
		}
		if len(kr.fk.table) != 2 {
			t.Errorf("the good ops were not applied: %v", kr.fk.table.Keys())
		}
	})
	t.Run("closed", func(t *testing.T) {
		kr := newKernelRig(t, 10)
		_ = kr.k.Close()
		if err := kr.k.Apply(t.Context(), ops); !errors.Is(err, ErrClosed) {
			t.Fatalf("err = %v", err)
		}
		if _, err := kr.k.List(t.Context()); !errors.Is(err, ErrClosed) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestKernelAckTimeout(t *testing.T) {
	kr := newKernelRig(t, 10)
	// A kernel that swallows a request: its ack never comes, and the
	// read deadline ends the wait with an error instead of a hang.
	kr.k.conn = &swallowingConn{fakeKernel: kr.fk}
	err := kr.k.Apply(t.Context(), []Op{{Kind: AddService, Service: mark}})
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "1 of 1 outstanding") {
		t.Fatalf("err = %v", err)
	}
}

// swallowingConn drops every reply.
type swallowingConn struct{ *fakeKernel }

func (c *swallowingConn) SendMessages(msgs []netlink.Message) ([]netlink.Message, error) {
	out, err := c.fakeKernel.SendMessages(msgs)
	c.mu.Lock()
	c.queue = nil
	c.mu.Unlock()
	return out, err
}

func TestResolveFamilyWithoutIPVS(t *testing.T) {
	c := nltest.Dial(func(req []netlink.Message) ([]netlink.Message, error) {
		return nltest.Error(int(syscall.ENOENT), req)
	})
	defer c.Close()
	_, err := resolveFamily(c)
	if !errors.Is(err, ErrNoIPVS) {
		t.Fatalf("err = %v, want ErrNoIPVS", err)
	}
	if !strings.Contains(err.Error(), "modprobe ip_vs") || !strings.Contains(err.Error(), "lvs.backend: dry-run") {
		t.Errorf("message %q does not tell the operator what to do", err)
	}
}

func TestKernelListInParallel(t *testing.T) {
	kr := newKernelRig(t, 64)
	kr.k.opts.ListWorkers = 4
	d := mustDesired(t, bigState(37, 3))
	r := NewReconciler(kr.k, testLogger(t), Options{ResyncInterval: -1})
	if _, err := r.Reconcile(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	requireInSync(t, d, kr.k)
	if len(kr.socks) != 4 {
		t.Errorf("List used %d sockets, want 4", len(kr.socks))
	}
	// A failing dump on one worker fails the List and drops every socket.
	kr.socks[2].recvErr = &netlink.OpError{Op: "receive", Err: syscall.EIO}
	if _, err := kr.k.List(t.Context()); !errors.Is(err, syscall.EIO) {
		t.Fatalf("err = %v", err)
	}
	for i, s := range kr.socks[:4] {
		if !s.closed {
			t.Errorf("socket %d kept after a failed List", i)
		}
	}
}
