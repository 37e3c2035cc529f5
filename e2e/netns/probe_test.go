package netns

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	e2elab "github.com/directorate/directorate/e2e/lab"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	// probeInterval is how often the client tries the VIP, by TCP and by
	// ARP: the resolution of every failover time the scenarios report.
	probeInterval = 10 * time.Millisecond
	// dialTimeout bounds one TCP probe. A probe whose SYN went to a
	// director that no longer holds the VIP would otherwise wait for the
	// kernel's one-second retransmission.
	dialTimeout = 100 * time.Millisecond
	// dialers run probes concurrently, so one that waits out dialTimeout
	// never delays the next tick: dialers*probeInterval > dialTimeout.
	dialers = 16
)

// answer is a director answering a TCP probe of the VIP.
type answer struct {
	at  time.Time
	who string
}

// arpFrame is an ARP packet from a director that claims the VIP: a reply
// to the sampler's request, or an announcement.
type arpFrame struct {
	at    time.Time
	mac   string
	reply bool // a reply to the sampler; otherwise gratuitous
}

// prober is the client namespace's view of the VIP. TCP probes go through
// the client's kernel, its routing and its neighbour table, as any client's
// traffic does. ARP requests go out on a packet socket under an identity of
// their own, and every ARP frame claiming the VIP is recorded, so the
// scenarios can tell which MACs answered for the VIP at every moment.
type prober struct {
	vip  netip.Addr
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	answers  []answer
	requests []time.Time // ARP requests sent
	frames   []arpFrame
	skipped  int // ticks with every dialer busy
}

// startProber starts probing vip from client's namespace every
// probeInterval until tb ends.
func startProber(tb testing.TB, client *host, vip netip.Addr) *prober {
	tb.Helper()
	p := &prober{vip: vip, stop: make(chan struct{})}
	sock, err := openARPSocket(client)
	if err != nil {
		tb.Fatalf("client: %v", err)
	}
	ticks := make(chan struct{})
	ready := make(chan error, dialers)
	for range dialers {
		p.wg.Go(func() { p.dialer(client.handle, ticks, ready) })
	}
	for range dialers {
		if err := <-ready; err != nil {
			close(p.stop)
			sock.Close()
			p.wg.Wait()
			tb.Fatalf("client: start a TCP prober: %v", err)
		}
	}
	request := arpRequest(proberMAC, proberIP, vip)
	p.wg.Go(func() {
		t := time.NewTicker(probeInterval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			select {
			case ticks <- struct{}{}:
			default:
				p.mu.Lock()
				p.skipped++
				p.mu.Unlock()
			}
			at := time.Now()
			if _, err := sock.Write(request); err != nil {
				select {
				case <-p.stop:
				default:
					tb.Errorf("client: send ARP request: %v", err)
				}
				return
			}
			p.mu.Lock()
			p.requests = append(p.requests, at)
			p.mu.Unlock()
		}
	})
	p.wg.Go(func() { p.readARP(tb, sock) })
	tb.Cleanup(func() {
		close(p.stop)
		sock.Close() // ends readARP
		p.wg.Wait()
		p.mu.Lock()
		defer p.mu.Unlock()
		tb.Logf("client probes: %d TCP answers, %d ARP requests, %d ARP frames for the VIP, %d ticks with every dialer busy",
			len(p.answers), len(p.requests), len(p.frames), p.skipped)
	})
	return p
}

// dialer runs TCP probes from client's namespace, one per tick it takes.
// Its thread stays locked in that namespace until the goroutine ends, when
// the runtime discards it: sockets are created in the namespace of the
// thread that creates them.
func (p *prober) dialer(ns netns.NsHandle, ticks <-chan struct{}, ready chan<- error) {
	runtime.LockOSThread()
	if err := netns.Set(ns); err != nil {
		ready <- fmt.Errorf("enter the client namespace: %w", err)
		return
	}
	ready <- nil
	addr := netip.AddrPortFrom(p.vip, servicePort).String()
	d := net.Dialer{Timeout: dialTimeout}
	for {
		select {
		case <-p.stop:
			return
		case <-ticks:
		}
		start := time.Now()
		conn, err := d.Dial("tcp4", addr)
		if err != nil {
			continue // no director answered in time: part of the outage
		}
		_ = conn.SetDeadline(start.Add(2 * dialTimeout))
		who, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if err != nil {
			continue
		}
		p.mu.Lock()
		p.answers = append(p.answers, answer{at: time.Now(), who: strings.TrimSpace(who)})
		p.mu.Unlock()
	}
}

// readARP records every ARP frame that claims the VIP until sock closes.
func (p *prober) readARP(tb testing.TB, sock *os.File) {
	buf := make([]byte, 1500)
	for {
		n, err := sock.Read(buf)
		if err != nil {
			select {
			case <-p.stop:
			default:
				tb.Errorf("client: read ARP: %v", err)
			}
			return
		}
		at := time.Now()
		pkt, ok := parseARP(buf[:n])
		if !ok || pkt.senderIP != p.vip {
			continue
		}
		f := arpFrame{at: at, mac: pkt.senderMAC.String(), reply: pkt.op == opReply && pkt.targetIP == proberIP}
		p.mu.Lock()
		p.frames = append(p.frames, f)
		p.mu.Unlock()
	}
}

// firstAnswer returns the first answer at or after since that match
// accepts.
func (p *prober) firstAnswer(since time.Time, match func(who string) bool) (answer, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.answers {
		if !a.at.Before(since) && match(a.who) {
			return a, true
		}
	}
	return answer{}, false
}

// waitAnswer waits for an answer at or after since that match accepts.
func (p *prober) waitAnswer(tb testing.TB, since time.Time, timeout time.Duration, what string, match func(who string) bool) answer {
	tb.Helper()
	var a answer
	e2elab.Poll(tb, timeout, probeInterval, what, func() (bool, error) {
		var ok bool
		a, ok = p.firstAnswer(since, match)
		return ok, nil
	})
	return a
}

// answeredBy counts the answers in [from, to) by director.
func (p *prober) answeredBy(from, to time.Time) map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for _, a := range p.answers {
		if !a.at.Before(from) && a.at.Before(to) {
			out[a.who]++
		}
	}
	return out
}

// announcements counts the gratuitous ARP frames mac sent for the VIP
// since since.
func (p *prober) announcements(mac string, since time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, f := range p.frames {
		if !f.reply && f.mac == mac && !f.at.Before(since) {
			n++
		}
	}
	return n
}

// longestGap returns the longest stretch within [from, to) without an
// answer from who, and when it began.
func (p *prober) longestGap(who string, from, to time.Time) (time.Duration, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var (
		gap   time.Duration
		start time.Time
	)
	last := from
	for _, a := range p.answers {
		if a.who != who || a.at.Before(from) || !a.at.Before(to) {
			continue
		}
		if d := a.at.Sub(last); d > gap {
			gap, start = d, last
		}
		last = a.at
	}
	if d := to.Sub(last); d > gap {
		gap, start = d, last
	}
	return gap, start
}

// macSpan is when one MAC claimed the VIP over ARP.
type macSpan struct {
	mac         string
	first, last time.Time
	frames      int
}

// arpSpans returns, per MAC, the first and last ARP frame claiming the VIP
// in [from, to), ordered by first.
func (p *prober) arpSpans(from, to time.Time) []macSpan {
	p.mu.Lock()
	defer p.mu.Unlock()
	byMAC := map[string]*macSpan{}
	for _, f := range p.frames {
		if f.at.Before(from) || !f.at.Before(to) {
			continue
		}
		s, ok := byMAC[f.mac]
		if !ok {
			s = &macSpan{mac: f.mac, first: f.at}
			byMAC[f.mac] = s
		}
		s.last = f.at
		s.frames++
	}
	out := make([]macSpan, 0, len(byMAC))
	for _, s := range byMAC {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b macSpan) int { return a.first.Compare(b.first) })
	return out
}

// twoMACSamples returns the ARP samples in [from, to) that more than one
// MAC answered: a sample is one request and the replies that arrived before
// the next.
func (p *prober) twoMACSamples(from, to time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for i, sent := range p.requests {
		if sent.Before(from) || !sent.Before(to) {
			continue
		}
		end := to
		if i+1 < len(p.requests) {
			end = p.requests[i+1]
		}
		macs := map[string]bool{}
		for _, f := range p.frames {
			if f.reply && !f.at.Before(sent) && f.at.Before(end) {
				macs[f.mac] = true
			}
		}
		if len(macs) > 1 {
			out = append(out, fmt.Sprintf("%s: %v", sent.Format("15:04:05.000"), macs))
		}
	}
	return out
}

// The ARP sampler's wire format (RFC 826 over Ethernet).
const (
	etherTypeARP = 0x0806
	opRequest    = 1
	opReply      = 2
	// arpFrameLen is an Ethernet header and an IPv4-over-Ethernet ARP body.
	arpFrameLen = 14 + 28
	// minFrameLen is the Ethernet minimum without the checksum: shorter
	// frames are padded.
	minFrameLen = 60
)

// arpRequest builds a broadcast who-has for target from mac and ip.
func arpRequest(mac net.HardwareAddr, ip, target netip.Addr) []byte {
	f := make([]byte, minFrameLen)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], etherTypeARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], 1)      // hardware: Ethernet
	binary.BigEndian.PutUint16(a[2:4], 0x0800) // protocol: IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], opRequest)
	copy(a[8:14], mac)
	sip, tip := ip.As4(), target.As4()
	copy(a[14:18], sip[:])
	copy(a[24:28], tip[:]) // the target MAC stays zero: that is the question
	return f
}

// arpPacket is a parsed IPv4-over-Ethernet ARP packet.
type arpPacket struct {
	op                 uint16
	senderMAC          net.HardwareAddr
	senderIP, targetIP netip.Addr
}

// parseARP parses an Ethernet frame carrying IPv4-over-Ethernet ARP; ok is
// false for anything else.
func parseARP(frame []byte) (arpPacket, bool) {
	if len(frame) < arpFrameLen || binary.BigEndian.Uint16(frame[12:14]) != etherTypeARP {
		return arpPacket{}, false
	}
	a := frame[14:]
	if binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != 0x0800 || a[4] != 6 || a[5] != 4 {
		return arpPacket{}, false
	}
	return arpPacket{
		op:        binary.BigEndian.Uint16(a[6:8]),
		senderMAC: net.HardwareAddr(slices.Clone(a[8:14])),
		senderIP:  netip.AddrFrom4([4]byte(a[14:18])),
		targetIP:  netip.AddrFrom4([4]byte(a[24:28])),
	}, true
}

// openARPSocket opens a packet socket for ARP on h's eth0, inside h's
// namespace. It is non-blocking, so the returned file supports deadlines
// and Close interrupts a Read.
func openARPSocket(h *host) (*os.File, error) {
	proto := htons(etherTypeARP)
	var fd int
	err := inNetns(h.handle, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("open an ARP packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: h.eth0}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind the ARP packet socket to eth0: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), h.name+"-arp"), nil
}

// htons converts to network byte order, as AF_PACKET wants its protocol.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// longestSilence is the longest time between two consecutive answers from
// any director within [from, to), and when it began.
func (p *prober) longestSilence(from, to time.Time) (time.Duration, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var (
		gap   time.Duration
		start time.Time
	)
	last := from
	for _, a := range p.answers {
		if a.at.Before(from) || !a.at.Before(to) {
			continue
		}
		if d := a.at.Sub(last); d > gap {
			gap, start = d, last
		}
		last = a.at
	}
	return gap, start
}
