//go:build linux

package lvs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"
	"golang.org/x/sys/unix"

	"github.com/directorate/directorate/fsm"
)

// The real-kernel test and benchmark run only with DIRECTORATE_IPVS_TEST=1,
// as root, on a kernel with IPVS (the e2e VM: go run ./e2e/cmd/vmrun -e
// DIRECTORATE_IPVS_TEST=1 -- bin/lvs.test -test.run Kernel -test.v).
// Each works in a network namespace of its own, so nothing leaks into the
// host's table.
func requireIPVSTest(tb testing.TB) {
	tb.Helper()
	if os.Getenv("DIRECTORATE_IPVS_TEST") != "1" {
		tb.Skip("set DIRECTORATE_IPVS_TEST=1 (as root, on a kernel with IPVS) to run")
	}
	if os.Geteuid() != 0 {
		tb.Skip("needs root")
	}
}

var netnsSeq atomic.Int32

// testNetns is a fresh network namespace with a dummy link whose
// addresses route the real servers' networks (10.0.0.0/8 and
// 2001:db8:1::/64): the kernel refuses a destination it cannot route.
type testNetns struct {
	name string
	fd   int
}

func newTestNetns(tb testing.TB) *testNetns {
	tb.Helper()
	ns := &testNetns{name: fmt.Sprintf("lvstest-%d-%d", os.Getpid(), netnsSeq.Add(1))}
	mustRun(tb, "ip", "netns", "add", ns.name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "d0", "type", "dummy"},
		{"addr", "add", "10.255.255.254/8", "dev", "d0"},
		{"-6", "addr", "add", "2001:db8:1::fe/64", "dev", "d0", "nodad"},
		{"link", "set", "d0", "up"},
	} {
		mustRun(tb, "ip", append([]string{"-n", ns.name}, args...)...)
	}
	fd, err := unix.Open(filepath.Join("/run/netns", ns.name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("open netns: %v", err)
	}
	ns.fd = fd
	tb.Cleanup(func() { _ = unix.Close(fd) })
	return ns
}

// ipvsadm runs ipvsadm in the namespace.
func (ns *testNetns) ipvsadm(tb testing.TB, stdin []byte, args ...string) string {
	tb.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name, "ipvsadm"}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("ipvsadm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func mustRun(tb testing.TB, name string, args ...string) {
	tb.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		tb.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// kernelTestState covers the settings the backend must carry: TCP, UDP,
// SCTP, firewall marks, IPv6, persistence, scheduler flags, one-packet,
// every forwarding method and tunnel type, weights, thresholds, a drained
// and a disabled server, and a real server of the other family.
func kernelTestState() *fsm.State {
	st := newState()
	st.VIPs["v4b"] = &fsm.VIP{Name: "v4b", Prefix: netip.MustParsePrefix("10.0.0.2/24")}

	web := tcpService("web", "v4", 80)
	addServer(web, "10.1.0.1", 8080, 10)
	t := addServer(web, "10.1.0.2", 8080, 20)
	t.UpperThreshold, t.LowerThreshold = 100, 50
	addServer(web, "10.1.0.3", 8080, 5).Admin = fsm.Drained
	addServer(web, "10.1.0.4", 8080, 5).Admin = fsm.Disabled
	st.Services["web"] = web

	dns := tcpService("dns", "v4", 53)
	dns.Protocol, dns.Scheduler, dns.OnePacket = fsm.UDP, "rr", true
	addServer(dns, "10.1.1.1", 53, 1)
	st.Services["dns"] = dns

	sctp := tcpService("sig", "v4b", 3868)
	sctp.Protocol = fsm.SCTP
	addServer(sctp, "10.1.5.1", 3868, 1)
	st.Services["sig"] = sctp

	mark := &fsm.Service{Name: "mark", FWMark: 7, Family: fsm.IPv4, Scheduler: "wrr", Method: fsm.DR, Servers: map[string]*fsm.RealServer{}}
	addServer(mark, "10.1.2.1", 0, 3)
	addServer(mark, "10.1.2.2", 0, 4)
	st.Services["mark"] = mark

	v6 := tcpService("v6web", "v6", 443)
	v6.Persistence = &fsm.Persistence{Timeout: 300, PrefixLen: 64}
	addServer(v6, "2001:db8:1::1", 8443, 1)
	addServer(v6, "2001:db8:1::2", 8443, 2)
	st.Services["v6web"] = v6

	sh := tcpService("sticky", "v4", 443)
	sh.Scheduler = "sh"
	sh.SchedFlags = fsm.SchedFlags{SHFallback: true, SHPort: true}
	sh.Persistence = &fsm.Persistence{Timeout: 600, PrefixLen: 24}
	sh.Method = fsm.TUN
	addServer(sh, "10.1.3.1", 443, 1) // ipip
	gue := addServer(sh, "10.1.3.2", 443, 1)
	gue.Tunnel, gue.TunnelPort, gue.TunnelChecksum = fsm.TunnelGUE, 6080, fsm.ChecksumRemote
	gre := addServer(sh, "10.1.3.3", 443, 1)
	gre.Tunnel, gre.TunnelChecksum = fsm.TunnelGRE, fsm.ChecksumOn
	addServer(sh, "2001:db8:1::3", 443, 1) // IPv6 real server of an IPv4 service
	st.Services["sticky"] = sh

	mh := tcpService("hashed", "v4b", 80)
	mh.Scheduler = "mh"
	mh.SchedFlags = fsm.SchedFlags{MHFallback: true}
	mh.Method = fsm.DR
	addServer(mh, "10.1.4.1", 80, 1)
	st.Services["hashed"] = mh
	return st
}

// saved is a table as `ipvsadm -Sn` prints it, parsed by a reader
// independent of the backend.
type saved map[string]*savedService

type savedService struct {
	sched, flags, persist, netmask string
	onePacket                      bool
	dests                          map[string]string // host:port -> "method weight upper lower tunnel"
}

// parseSave reads `ipvsadm -Sn` output. Unknown options fail the test so
// a format surprise is noticed.
func parseSave(tb testing.TB, out string) saved {
	tb.Helper()
	s := saved{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var key string
		opts := map[string]string{}
		flags := map[string]bool{}
		for i := 1; i < len(f); i++ {
			switch f[i] {
			case "-t", "-u", "--sctp-service":
				key = map[string]string{"-t": "TCP", "-u": "UDP", "--sctp-service": "SCTP"}[f[i]] + " " + f[i+1]
				i++
			case "-f":
				key = "FWM " + f[i+1]
				i++
			case "-6":
				key += " inet6"
			case "-s", "-p", "-M", "-b", "-r", "-w", "-x", "-y", "--tun-type", "--tun-port":
				opts[f[i]] = f[i+1]
				i++
			case "-o", "-m", "-g", "-i", "--tun-nocsum", "--tun-csum", "--tun-remcsum":
				flags[f[i]] = true
			default:
				tb.Fatalf("unknown ipvsadm -S token %q in %q", f[i], sc.Text())
			}
		}
		if strings.HasPrefix(key, "FWM ") && !strings.HasSuffix(key, "inet6") {
			key += " inet"
		}
		switch f[0] {
		case "-A":
			s[key] = &savedService{sched: opts["-s"], flags: opts["-b"], persist: opts["-p"], netmask: opts["-M"], onePacket: flags["-o"], dests: map[string]string{}}
		case "-a":
			svc := s[key]
			if svc == nil {
				tb.Fatalf("destination before its service: %q", sc.Text())
			}
			method := map[bool]string{true: "nat"}[flags["-m"]] + map[bool]string{true: "dr"}[flags["-g"]] + map[bool]string{true: "tun"}[flags["-i"]]
			tun := ""
			if method == "tun" {
				tun = " " + cmpOr(opts["--tun-type"], "ipip") + " " + cmpOr(opts["--tun-port"], "0")
				for _, c := range []string{"--tun-csum", "--tun-remcsum"} {
					if flags[c] {
						tun += " " + c
					}
				}
			}
			svc.dests[opts["-r"]] = fmt.Sprintf("%s %s %s %s%s", method, opts["-w"], cmpOr(opts["-x"], "0"), cmpOr(opts["-y"], "0"), tun)
		default:
			tb.Fatalf("unexpected ipvsadm -S line %q", sc.Text())
		}
	}
	return s
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// expectSaved renders a desired table as parseSave reports it.
func expectSaved(d *Desired) saved {
	s := saved{}
	for k, svc := range d.Services {
		ss := &savedService{sched: svc.Scheduler, onePacket: svc.Flags&ipvs.ServiceOnePacket != 0, dests: map[string]string{}}
		var fl []string
		for _, n := range FlagNames(svc.Service) {
			if n != "persistent" && n != "one-packet" {
				fl = append(fl, n)
			}
		}
		ss.flags = strings.Join(fl, ",")
		if svc.Flags&ipvs.ServicePersistent != 0 {
			ss.persist = strconv.Itoa(int(svc.Timeout))
			if svc.Netmask != fullMask(svc.Family) {
				ss.netmask = svc.Netmask.String()
			}
		}
		for _, dst := range svc.Dests {
			tun := ""
			if dst.FwdMethod == ipvs.Tunnel {
				tun = fmt.Sprintf(" %s %d", strings.ToLower(dst.TunnelType.String()), dst.TunnelPort)
				switch dst.TunnelFlags {
				case ipvs.TunnelEncapChecksum:
					tun += " --tun-csum"
				case ipvs.TunnelEncapRemoteChecksum:
					tun += " --tun-remcsum"
				}
			}
			ss.dests[dst.Key().String()] = fmt.Sprintf("%s %d %d %d%s", MethodName(dst.FwdMethod), dst.Weight, dst.UpperThreshold, dst.LowerThreshold, tun)
		}
		s[k.String()] = ss
	}
	return s
}

// parseThresholds reads `ipvsadm -Ln --thresholds` (ipvsadm -S leaves
// thresholds out) into "service-key host:port" -> "upper lower".
func parseThresholds(tb testing.TB, out string) map[string]string {
	tb.Helper()
	m := map[string]string{}
	var key string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && (f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP"):
			key = f[0] + " " + f[1]
		case len(f) >= 3 && f[0] == "FWM":
			key = "FWM " + f[1] + " inet"
			if f[2] == "IPv6" {
				key += "6"
			}
		case len(f) >= 4 && f[0] == "->" && key != "":
			m[key+" "+f[1]] = f[2] + " " + f[3]
		}
	}
	return m
}

func requireSaved(t *testing.T, ns *testNetns, d *Desired, foreign ...string) {
	t.Helper()
	got := parseSave(t, ns.ipvsadm(t, nil, "-Sn"))
	thresholds := parseThresholds(t, ns.ipvsadm(t, nil, "-Ln", "--thresholds"))
	for k, svc := range got {
		for addr, desc := range svc.dests {
			f := strings.Fields(desc)
			th, ok := thresholds[k+" "+addr]
			if !ok {
				t.Fatalf("ipvsadm -Ln --thresholds lacks %s %s", k, addr)
			}
			svc.dests[addr] = strings.Join(append(append(f[:2:2], strings.Fields(th)...), f[4:]...), " ")
		}
	}
	want := expectSaved(d)
	for _, f := range foreign {
		if got[f] == nil {
			t.Errorf("foreign service %s is gone", f)
		}
		delete(got, f)
	}
	for k, w := range want {
		g := got[k]
		if g == nil {
			t.Errorf("ipvsadm -Sn lacks %s", k)
			continue
		}
		if g.sched != w.sched || g.flags != w.flags || g.persist != w.persist || g.netmask != w.netmask || g.onePacket != w.onePacket {
			t.Errorf("%s: ipvsadm shows %+v, want %+v", k, *g, *w)
		}
		for addr, wd := range w.dests {
			if g.dests[addr] != wd {
				t.Errorf("%s %s: ipvsadm shows %q, want %q", k, addr, g.dests[addr], wd)
			}
		}
		for addr := range g.dests {
			if _, ok := w.dests[addr]; !ok {
				t.Errorf("%s: ipvsadm shows an extra destination %s", k, addr)
			}
		}
	}
	for k := range got {
		if want[k] == nil {
			t.Errorf("ipvsadm -Sn shows an unexpected service %s", k)
		}
	}
}

func TestKernelBackend(t *testing.T) {
	requireIPVSTest(t)
	ns := newTestNetns(t)
	k, err := NewKernel(testLogger(t), KernelOptions{NetNS: ns.fd, Batch: 4})
	if err != nil {
		t.Fatalf("NewKernel: %v", err)
	}
	defer k.Close()
	clock := newFakeClock()
	r := NewReconciler(k, testLogger(t), Options{ResyncInterval: time.Minute, Now: clock.Now})
	ctx := t.Context()

	// A foreign service Directorate must leave alone.
	ns.ipvsadm(t, nil, "-A", "-t", "192.0.2.1:80", "-s", "rr")
	ns.ipvsadm(t, nil, "-a", "-t", "192.0.2.1:80", "-r", "10.9.9.9:80", "-m")
	const foreign = "TCP 192.0.2.1:80"

	st := kernelTestState()
	d := mustDesired(t, st)
	res, err := r.Reconcile(ctx, d)
	if err != nil {
		t.Fatalf("converge: %v", err)
	}
	t.Logf("converged: %+v", res)
	requireInSync(t, d, k)
	requireSaved(t, ns, d, foreign)

	// Idempotent: a fresh read finds nothing to do.
	r.Invalidate()
	if res, err = r.Reconcile(ctx, d); err != nil || res.Ops.Total() != 0 || !res.Resynced {
		t.Fatalf("second reconcile: %+v, %v", res, err)
	}

	// One weight change is one SET_DEST.
	st.Index++
	st.Services["web"].Servers["10.1.0.1:8080"].Weight = 77
	d, err = d.Patch(st, "web")
	if err != nil {
		t.Fatal(err)
	}
	if res, err = r.Reconcile(ctx, d); err != nil || res.Ops != (OpCounts{UpdateDest: 1}) {
		t.Fatalf("weight change: %+v, %v", res, err)
	}
	requireSaved(t, ns, d, foreign)

	// Scheduler and persistence changes are SET_SERVICE in place.
	st.Index++
	st.Services["web"].Scheduler = "sh"
	st.Services["web"].SchedFlags = fsm.SchedFlags{SHPort: true}
	st.Services["v6web"].Persistence.PrefixLen = 48
	d, err = d.Patch(st, "web", "v6web")
	if err != nil {
		t.Fatal(err)
	}
	if res, err = r.Reconcile(ctx, d); err != nil || res.Ops != (OpCounts{UpdateService: 2}) {
		t.Fatalf("service changes: %+v, %v", res, err)
	}
	requireSaved(t, ns, d, foreign)

	// A deleted service goes; its destinations go with it.
	st.Index++
	delete(st.Services, "dns")
	d, err = d.Patch(st, "dns")
	if err != nil {
		t.Fatal(err)
	}
	if res, err = r.Reconcile(ctx, d); err != nil || res.Ops != (OpCounts{DeleteService: 1}) {
		t.Fatalf("delete: %+v, %v", res, err)
	}
	requireSaved(t, ns, d, foreign)

	// Someone flushes the table; the next resync repairs it.
	ns.ipvsadm(t, nil, "-C")
	clock.Advance(time.Minute)
	res, err = r.Reconcile(ctx, d)
	if err != nil || !res.Resynced {
		t.Fatalf("repair: %+v, %v", res, err)
	}
	if s, dd := d.Count(); res.Ops != (OpCounts{AddService: s, AddDest: dd}) {
		t.Fatalf("repair ops %+v, want %d services and %d destinations", res.Ops, s, dd)
	}
	requireSaved(t, ns, d)

	// A destination the kernel will not route to (here the broadcast
	// address of the director's network; in a namespace without
	// addresses, any) is refused with EINVAL. The error says which op
	// and why, and the rest of the batch applies.
	st.Index++
	addServer(st.Services["web"], "10.255.255.255", 8080, 1)
	st.Services["web"].Servers["10.1.0.2:8080"].Weight = 21
	d, err = d.Patch(st, "web")
	if err != nil {
		t.Fatal(err)
	}
	res, err = r.Reconcile(ctx, d)
	if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "add destination 10.255.255.255:8080 to TCP 10.0.0.1:80: invalid argument") {
		t.Fatalf("unroutable destination: %+v, %v", res, err)
	}
	t.Logf("unroutable destination: %v", err)
	if res.Failed != (OpCounts{AddDest: 1}) || res.Ops.Total() != 2 {
		t.Errorf("result %+v", res)
	}
	tab, err := k.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w := tab[webKey].Dest(netip.MustParseAddrPort("10.1.0.2:8080")); w == nil || w.Weight != 21 {
		t.Errorf("the op after the failed one was not applied: %+v", w)
	}
}

func TestKernelNoIPVSMessage(t *testing.T) {
	if os.Getenv("DIRECTORATE_IPVS_TEST") == "1" {
		t.Skip("this kernel is expected to have IPVS")
	}
	k, err := NewKernel(testLogger(t), KernelOptions{})
	if err == nil {
		_ = k.Close()
		t.Skip("this kernel has IPVS")
	}
	if !errors.Is(err, ErrNoIPVS) {
		t.Skipf("cannot tell: %v", err)
	}
	if want := "IPVS is not available in this kernel: load the ip_vs module (modprobe ip_vs) or set lvs.backend: dry-run"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

// restoreFile renders d as ipvsadm-restore input.
func restoreFile(d *Desired) []byte {
	var b bytes.Buffer
	for _, k := range d.Services.Keys() {
		s := d.Services[k]
		id := fmt.Sprintf("-t %s", netip.AddrPortFrom(k.Addr, k.Port))
		fmt.Fprintf(&b, "-A %s -s %s\n", id, s.Scheduler)
		for _, dst := range s.Dests {
			fmt.Fprintf(&b, "-a %s -r %s -m -w %d\n", id, dst.Key(), dst.Weight)
		}
	}
	return b.Bytes()
}

// BenchmarkKernelConverge measures the kernel backend at the scale of the
// sync target (10,000 services × 10 real servers) next to ipvsadm on the
// same table. Run it with -test.benchtime 1x: a cold converge is tens of
// seconds under emulation.
func BenchmarkKernelConverge(b *testing.B) {
	requireIPVSTest(b)
	ns := newTestNetns(b)
	st := bigState(benchServices, benchServers)
	d := mustDesired(b, st)
	s, dd := d.Count()
	ctx := context.Background()
	log := discardLogger()
	newKernel := func(b *testing.B) *Kernel {
		k, err := NewKernel(log, KernelOptions{NetNS: ns.fd})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = k.Close() })
		return k
	}
	flush := func(b *testing.B) { ns.ipvsadm(b, nil, "-C") }

	b.Run("cold", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			flush(b)
			r := NewReconciler(newKernel(b), log, Options{})
			b.StartTimer()
			res, err := r.Reconcile(ctx, d)
			if err != nil {
				b.Fatal(err)
			}
			if res.Ops != (OpCounts{AddService: s, AddDest: dd}) {
				b.Fatalf("cold converge: %+v", res.Ops)
			}
		}
		b.ReportMetric(float64(s+dd), "kernel-ops/op")
	})

	// The table is now converged; the rest measure against it.
	k := newKernel(b)
	b.Run("list", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			t, err := k.List(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if ls, ld := t.Count(); ls != s || ld != dd {
				b.Fatalf("listed %d services, %d destinations", ls, ld)
			}
		}
	})
	for _, tc := range []struct {
		name   string
		resync bool
		other  bool
	}{{"no-op-same-table", false, false}, {"no-op-full-diff", false, true}, {"no-op-resync", true, false}} {
		b.Run(tc.name, func(b *testing.B) {
			opts := Options{}
			if tc.resync {
				opts.ResyncInterval = -1
			}
			r := NewReconciler(k, log, opts)
			if _, err := r.Reconcile(ctx, d); err != nil {
				b.Fatal(err)
			}
			next := d
			if tc.other {
				next = mustDesired(b, st)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := r.Reconcile(ctx, next)
				if err != nil || res.Ops.Total() != 0 {
					b.Fatalf("no-op: %+v, %v", res, err)
				}
			}
		})
	}
	b.Run("one-change", func(b *testing.B) {
		r := NewReconciler(k, log, Options{ResyncInterval: time.Hour})
		cur := d
		if _, err := r.Reconcile(ctx, cur); err != nil {
			b.Fatal(err)
		}
		rs := st.Services["svc5000"].Servers["10.1.195.85:8080"]
		base := rs.Weight
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rs.Weight = base + 1 + i%2
			next, err := cur.Patch(st, "svc5000")
			if err != nil {
				b.Fatal(err)
			}
			cur = next
			res, err := r.Reconcile(ctx, cur)
			if err != nil || res.Ops != (OpCounts{UpdateDest: 1}) {
				b.Fatalf("one change: %+v, %v", res, err)
			}
		}
	})

	restore := restoreFile(d)
	b.Run("ipvsadm-restore", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			flush(b)
			b.StartTimer()
			ns.ipvsadm(b, restore, "-R")
		}
	})
	b.Run("ipvsadm-save", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if out := ns.ipvsadm(b, nil, "-Sn"); strings.Count(out, "\n") != s+dd {
				b.Fatalf("ipvsadm -Sn printed %d lines", strings.Count(out, "\n"))
			}
		}
	})
	b.Run("ipvsadm-clear", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			if i > 0 {
				ns.ipvsadm(b, restore, "-R")
			}
			b.StartTimer()
			flush(b)
		}
	})
}

// BenchmarkKernelList compares ways to read a 2,000 × 10 table: receive
// buffer sizes (which also size the kernel's dump allocations; -1 peeks
// at each reply's size), parallel dump sockets, and cloudflare/ipvs's
// client, which peeks and dumps one service at a time.
func BenchmarkKernelList(b *testing.B) {
	requireIPVSTest(b)
	ns := newTestNetns(b)
	d := mustDesired(b, bigState(2000, benchServers))
	s, dd := d.Count()
	ns.ipvsadm(b, restoreFile(d), "-R")
	ctx := context.Background()
	for _, buf := range []int{-1, 8 << 10, 64 << 10} {
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("buf=%d/workers=%d", buf, workers), func(b *testing.B) {
				k, err := NewKernel(discardLogger(), KernelOptions{NetNS: ns.fd, ListWorkers: workers, recvBuffer: buf})
				if err != nil {
					b.Fatal(err)
				}
				defer k.Close()
				for i := 0; i < b.N; i++ {
					t, err := k.List(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if ls, ld := t.Count(); ls != s || ld != dd {
						b.Fatalf("listed %d, %d", ls, ld)
					}
				}
			})
		}
	}
	b.Run("cloudflare-ipvs", func(b *testing.B) {
		c := cloudflareClient(b, ns)
		for i := 0; i < b.N; i++ {
			svcs, err := c.Services()
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, svc := range svcs {
				dests, err := c.Destinations(svc.Service)
				if err != nil {
					b.Fatal(err)
				}
				n += len(dests)
			}
			if len(svcs) != s || n != dd {
				b.Fatalf("listed %d, %d", len(svcs), n)
			}
		}
	})
}

// cloudflareClient opens a cloudflare/ipvs client in ns: its socket is
// created on a thread moved into the namespace and stays there.
func cloudflareClient(b *testing.B, ns *testNetns) ipvs.Client {
	type result struct {
		c   ipvs.Client
		err error
	}
	ch := make(chan result)
	go func() {
		// The thread is left in the namespace and never unlocked, so
		// the runtime discards it when this goroutine ends.
		runtime.LockOSThread()
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		c, err := ipvs.New()
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		b.Fatal(r.err)
	}
	return r.c
}

// BenchmarkKernelApplyBatch converges a 2,000 × 10 table from empty with
// different batch sizes (requests written before acknowledgements are
// read).
func BenchmarkKernelApplyBatch(b *testing.B) {
	requireIPVSTest(b)
	ns := newTestNetns(b)
	d := mustDesired(b, bigState(2000, benchServers))
	s, dd := d.Count()
	ctx := context.Background()
	for _, batch := range []int{1, 16, 256, 1024} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			k, err := NewKernel(discardLogger(), KernelOptions{NetNS: ns.fd, Batch: batch})
			if err != nil {
				b.Fatal(err)
			}
			defer k.Close()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ns.ipvsadm(b, nil, "-C")
				r := NewReconciler(k, discardLogger(), Options{})
				b.StartTimer()
				res, err := r.Reconcile(ctx, d)
				if err != nil || res.Ops != (OpCounts{AddService: s, AddDest: dd}) {
					b.Fatalf("converge: %+v, %v", res, err)
				}
			}
		})
	}
}
