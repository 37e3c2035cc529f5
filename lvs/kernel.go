package lvs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudflare/ipvs"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// ErrNoIPVS says the kernel has no IPVS: the generic netlink family
// "IPVS" does not exist.
var ErrNoIPVS = errors.New("IPVS is not available in this kernel: load the ip_vs module (modprobe ip_vs) or set lvs.backend: dry-run")

// ErrClosed is returned by a backend used after Close.
var ErrClosed = errors.New("backend closed")

// ErrServiceNotFound says a backend has no service with the key asked for.
var ErrServiceNotFound = errors.New("no such IPVS service")

// Defaults of KernelOptions.
const (
	DefaultBatch         = 256
	DefaultKernelTimeout = 30 * time.Second
	DefaultListWorkers   = 2
)

// KernelOptions tune the Kernel backend.
type KernelOptions struct {
	// NetNS is an open file descriptor of the network namespace whose
	// IPVS table to program; 0 means the caller's.
	NetNS int
	// Batch is how many requests go to the kernel in one write before
	// their acknowledgements are read; 0 means DefaultBatch.
	Batch int
	// Timeout bounds each wait for the kernel when the context has no
	// deadline; 0 means DefaultKernelTimeout.
	Timeout time.Duration
	// ListWorkers is how many sockets List uses to dump destinations in
	// parallel (the kernel runs one dump at a time per socket); 0 means
	// DefaultListWorkers.
	ListWorkers int

	// recvBuffer overrides defaultRecvBuffer, for measurements; -1
	// makes the library peek at each datagram's size.
	recvBuffer int
}

// defaultRecvBuffer is the read buffer. It saves the peek the netlink
// library otherwise makes before each read, and it also sizes the
// kernel's dump replies: the kernel allocates each dump skb as large as
// the largest read so far (up to 32 KiB), and under a 64 KiB buffer those
// high-order allocations made listing slower and erratic (measured:
// 2,000 services × 10 listed in 2.1 s with 8 KiB, 3.2 to 5.4 s with 64
// KiB). A dump reply never exceeds 8 KiB at this size (NLMSG_GOODSIZE is
// at most 8 KiB), and other replies are far smaller.
const defaultRecvBuffer = 8 << 10

// nlConn is the part of *netlink.Conn the Kernel backend uses, so tests
// can stand in for the kernel.
type nlConn interface {
	SendMessages(msgs []netlink.Message) ([]netlink.Message, error)
	Receive() ([]netlink.Message, error)
	SetDeadline(t time.Time) error
	Close() error
}

// Kernel programs the kernel's IPVS table over generic netlink.
//
// Apply pipelines: it writes a batch of requests, each with its own
// sequence number and the acknowledge flag, in one system call, then
// reads the acknowledgements and matches each error to its request by
// sequence number. A blocking round trip per object is several times
// slower at scale (in the TCG test VM: 22,000 ops took 18.5 s one at a
// time, 7.6 s in batches of 256).
//
// List reads the services with one GET_SERVICE dump and then dumps each
// service's destinations. The kernel runs one dump at a time per socket,
// so those cannot be pipelined; ListWorkers sockets dump in parallel
// instead.
type Kernel struct {
	log  *slog.Logger
	opts KernelOptions
	dial func() (nlConn, uint16, error)
	seq  atomic.Uint32

	mu     sync.Mutex
	conn   nlConn
	family uint16
	// listConns are the extra sockets of List's workers.
	listConns []nlConn
	closed    bool
}

// NewKernel opens a generic netlink socket and resolves the IPVS family.
// A kernel without IPVS gives an error that wraps ErrNoIPVS.
func NewKernel(log *slog.Logger, opts KernelOptions) (*Kernel, error) {
	opts = opts.withDefaults()
	k := newKernel(log, opts, func() (nlConn, uint16, error) { return dialIPVS(opts.NetNS, max(opts.recvBuffer, 0)) })
	if err := k.connect(); err != nil {
		return nil, err
	}
	return k, nil
}

func newKernel(log *slog.Logger, opts KernelOptions, dial func() (nlConn, uint16, error)) *Kernel {
	return &Kernel{log: log.With("backend", "kernel"), opts: opts.withDefaults(), dial: dial}
}

func (o KernelOptions) withDefaults() KernelOptions {
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultKernelTimeout
	}
	if o.ListWorkers <= 0 {
		o.ListWorkers = DefaultListWorkers
	}
	if o.recvBuffer == 0 {
		o.recvBuffer = defaultRecvBuffer
	}
	return o
}

// connect (re)opens the socket; k.mu must be held or k unshared.
func (k *Kernel) connect() error {
	c, fam, err := k.dial()
	if err != nil {
		return err
	}
	k.conn, k.family = c, fam
	return nil
}

// resolveFamily looks the IPVS family up over c.
func resolveFamily(c *netlink.Conn) (uint16, error) {
	f, err := genetlink.NewConn(c).GetFamily(genlName)
	if errors.Is(err, os.ErrNotExist) {
		return 0, ErrNoIPVS
	}
	if err != nil {
		return 0, fmt.Errorf("look up the IPVS generic netlink family: %w", err)
	}
	return f.ID, nil
}

// Name implements Backend.
func (k *Kernel) Name() string { return "kernel" }

// Close implements Backend.
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	var errs []error
	for _, c := range k.listConns {
		errs = append(errs, c.Close())
	}
	k.listConns = nil
	if k.conn != nil {
		errs = append(errs, k.conn.Close())
	}
	return errors.Join(errs...)
}

// use returns the socket, reopening it after a failure left it with
// unread replies.
func (k *Kernel) use() (nlConn, error) {
	if k.closed {
		return nil, ErrClosed
	}
	if k.conn == nil {
		if err := k.connect(); err != nil {
			return nil, fmt.Errorf("reopen the IPVS netlink socket: %w", err)
		}
	}
	return k.conn, nil
}

// discard drops a socket whose stream of replies can no longer be
// trusted: late replies to an abandoned batch would otherwise be read as
// answers to the next one.
func (k *Kernel) discard() {
	if k.conn != nil {
		_ = k.conn.Close()
		k.conn = nil
	}
	for _, c := range k.listConns {
		_ = c.Close()
	}
	k.listConns = nil
}

// nextSeq returns a fresh sequence number; 0 is skipped because the
// netlink library treats it as "fill in for me".
func (k *Kernel) nextSeq() uint32 {
	for {
		if s := k.seq.Add(1); s != 0 {
			return s
		}
	}
}

func (k *Kernel) deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(k.opts.Timeout)
}

// Apply implements Backend.
func (k *Kernel) Apply(ctx context.Context, ops []Op) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	conn, err := k.use()
	if err != nil {
		return err
	}
	began := time.Now()
	var errs []error
	defer func() {
		k.log.DebugContext(ctx, "applied IPVS ops", "ops", len(ops), "failed", len(errs), "duration", time.Since(began))
	}()
	for start := 0; start < len(ops); start += k.opts.Batch {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("%d IPVS ops not sent: %w", len(ops)-start, err))...)
		}
		end := min(start+k.opts.Batch, len(ops))
		batchErrs, err := k.applyBatch(ctx, conn, ops, start, end)
		errs = append(errs, batchErrs...)
		if err != nil {
			k.discard()
			return errors.Join(append(errs, err)...)
		}
	}
	return errors.Join(errs...)
}

// applyBatch sends ops[start:end] in one write and reads every reply.
// It returns the failed ops, and a non-nil error when the batch could not
// be completed: then the fate of the ops without a reply is unknown.
func (k *Kernel) applyBatch(ctx context.Context, conn nlConn, ops []Op, start, end int) ([]error, error) {
	var errs []error
	msgs := make([]netlink.Message, 0, end-start)
	index := make(map[uint32]int, end-start) // sequence -> op index
	for i := start; i < end; i++ {
		m, err := k.request(ops[i])
		if err != nil {
			errs = append(errs, &OpError{Op: ops[i], Index: i, Err: fmt.Errorf("encode: %w", err)})
			continue
		}
		index[m.Header.Sequence] = i
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		return errs, nil
	}
	if err := conn.SetDeadline(k.deadline(ctx)); err != nil {
		return errs, fmt.Errorf("set netlink deadline: %w", err)
	}
	if _, err := conn.SendMessages(msgs); err != nil {
		return errs, fmt.Errorf("send %d IPVS requests (%s first): %w", len(msgs), ops[start], err)
	}
	for len(index) > 0 {
		replies, err := conn.Receive()
		if err != nil {
			var oe *netlink.OpError
			if errors.As(err, &oe) && oe.Sequence != 0 {
				if i, ok := index[oe.Sequence]; ok {
					delete(index, oe.Sequence)
					errs = append(errs, &OpError{Op: ops[i], Index: i, Err: kernelError(oe)})
				}
				// An error for another sequence number answers a
				// request of an abandoned batch; skip it.
				continue
			}
			return errs, fmt.Errorf("read IPVS acknowledgements (%d of %d outstanding): %w", len(index), len(msgs), err)
		}
		for _, m := range replies {
			if m.Header.Type == netlink.Error {
				delete(index, m.Header.Sequence)
			}
		}
	}
	return errs, nil
}

// request encodes op as a netlink request that asks for an
// acknowledgement, under a fresh sequence number.
func (k *Kernel) request(op Op) (netlink.Message, error) {
	gm, err := encodeOp(op)
	if err != nil {
		return netlink.Message{}, err
	}
	data, err := gm.MarshalBinary()
	if err != nil {
		return netlink.Message{}, err
	}
	return netlink.Message{
		Header: netlink.Header{
			Type:     netlink.HeaderType(k.family),
			Flags:    netlink.Request | netlink.Acknowledge,
			Sequence: k.nextSeq(),
		},
		Data: data,
	}, nil
}

// kernelError turns a netlink error reply into the errno it carries, with
// the kernel's extended message when there is one, so errors.Is matches
// syscall.EINVAL and friends.
func kernelError(oe *netlink.OpError) error {
	if oe.Message != "" {
		return fmt.Errorf("%w: %s", oe.Err, oe.Message)
	}
	return oe.Err
}

// List implements Backend.
func (k *Kernel) List(ctx context.Context) (Table, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	conn, err := k.use()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	t, err := k.list(ctx, conn)
	if err != nil {
		k.discard()
		return nil, err
	}
	services, dests := t.Count()
	k.log.DebugContext(ctx, "listed IPVS table", "services", services, "dests", dests, "duration", time.Since(start))
	return t, nil
}

func (k *Kernel) list(ctx context.Context, conn nlConn) (Table, error) {
	get := genetlink.Message{Header: genetlink.Header{Command: cmdGetService, Version: genlVersion}}
	replies, err := k.dump(ctx, conn, get)
	if err != nil {
		return nil, fmt.Errorf("dump IPVS services: %w", err)
	}
	t := make(Table, len(replies))
	order := make([]*Service, 0, len(replies))
	for _, data := range replies {
		s, err := decodeServiceMsg(data)
		if err != nil {
			return nil, fmt.Errorf("decode IPVS service: %w", err)
		}
		svc := &Service{Service: s}
		t[svc.Key()] = svc
		order = append(order, svc)
	}
	conns := []nlConn{conn}
	for len(conns) < min(k.opts.ListWorkers, len(order)) {
		i := len(conns) - 1
		if i >= len(k.listConns) {
			c, _, err := k.dial()
			if err != nil {
				return nil, fmt.Errorf("open a socket for listing: %w", err)
			}
			k.listConns = append(k.listConns, c)
		}
		conns = append(conns, k.listConns[i])
	}
	// Worker w dumps every len(conns)th service, starting at w.
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for w, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(order); i += len(conns) {
				if err := k.listDests(ctx, c, order[i]); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

// ListService implements Backend: a GET_SERVICE request for the one
// service, then a dump of its destinations.
func (k *Kernel) ListService(ctx context.Context, key ServiceKey) (*Service, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	conn, err := k.use()
	if err != nil {
		return nil, err
	}
	id := ipvs.Service{Family: key.Family, Protocol: key.Protocol, Address: key.Addr, Port: key.Port, FWMark: key.FWMark}
	req, err := encodeServiceRequest(cmdGetService, id)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	data, err := k.get(ctx, conn, req)
	if err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil, fmt.Errorf("get %s: %w", key, ErrServiceNotFound)
		}
		k.discard()
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	s, err := decodeServiceMsg(data)
	if err != nil {
		k.discard()
		return nil, fmt.Errorf("decode IPVS service %s: %w", key, err)
	}
	svc := &Service{Service: s}
	if err := k.listDests(ctx, conn, svc); err != nil {
		k.discard()
		return nil, err
	}
	return svc, nil
}

// get sends one request that is not a dump and returns the payload of its
// reply, or the kernel's error for it.
func (k *Kernel) get(ctx context.Context, conn nlConn, gm genetlink.Message) ([]byte, error) {
	data, err := gm.MarshalBinary()
	if err != nil {
		return nil, err
	}
	seq := k.nextSeq()
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(k.family), Flags: netlink.Request, Sequence: seq},
		Data:   data,
	}
	if err := conn.SetDeadline(k.deadline(ctx)); err != nil {
		return nil, fmt.Errorf("set netlink deadline: %w", err)
	}
	if _, err := conn.SendMessages([]netlink.Message{req}); err != nil {
		return nil, err
	}
	for {
		replies, err := conn.Receive()
		if err != nil {
			var oe *netlink.OpError
			if errors.As(err, &oe) {
				if oe.Sequence != 0 && oe.Sequence != seq {
					continue // a late reply to an abandoned request
				}
				return nil, kernelError(oe)
			}
			return nil, err
		}
		for _, m := range replies {
			if m.Header.Sequence != seq {
				continue
			}
			var g genetlink.Message
			if err := g.UnmarshalBinary(m.Data); err != nil {
				return nil, err
			}
			return g.Data, nil
		}
	}
}

// listDests fills in the destinations of svc with one dump over conn.
func (k *Kernel) listDests(ctx context.Context, conn nlConn, svc *Service) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req, err := encodeGetDests(svc.Service)
	if err != nil {
		return fmt.Errorf("dump destinations of %s: %w", svc.Key(), err)
	}
	replies, err := k.dump(ctx, conn, req)
	if err != nil {
		return fmt.Errorf("dump destinations of %s: %w", svc.Key(), err)
	}
	svc.Dests = make([]Destination, 0, len(replies))
	for _, data := range replies {
		d, err := decodeDestMsg(data, svc.Family)
		if err != nil {
			return fmt.Errorf("decode destination of %s: %w", svc.Key(), err)
		}
		svc.Dests = append(svc.Dests, d)
	}
	svc.SortDests()
	return nil
}

// dump runs one dump request and returns the payloads (generic netlink
// header stripped) of its replies.
func (k *Kernel) dump(ctx context.Context, conn nlConn, gm genetlink.Message) ([][]byte, error) {
	data, err := gm.MarshalBinary()
	if err != nil {
		return nil, err
	}
	seq := k.nextSeq()
	req := netlink.Message{
		Header: netlink.Header{
			Type:     netlink.HeaderType(k.family),
			Flags:    netlink.Request | netlink.Dump,
			Sequence: seq,
		},
		Data: data,
	}
	if err := conn.SetDeadline(k.deadline(ctx)); err != nil {
		return nil, fmt.Errorf("set netlink deadline: %w", err)
	}
	if _, err := conn.SendMessages([]netlink.Message{req}); err != nil {
		return nil, err
	}
	for {
		replies, err := conn.Receive()
		if err != nil {
			var oe *netlink.OpError
			if errors.As(err, &oe) && oe.Sequence != 0 && oe.Sequence != seq {
				continue // a late reply to an abandoned request
			}
			return nil, err
		}
		out := make([][]byte, 0, len(replies))
		stray := 0
		for _, m := range replies {
			if m.Header.Sequence != seq {
				stray++
				continue
			}
			var g genetlink.Message
			if err := g.UnmarshalBinary(m.Data); err != nil {
				return nil, err
			}
			out = append(out, g.Data)
		}
		if stray > 0 && len(out) == 0 {
			continue
		}
		return out, nil
	}
}
