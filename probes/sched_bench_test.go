package probes

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/directorate/directorate/internal/testlog"
)

// The benchmark's real servers live in a child process (this test binary
// again, started with listenersEnv set), so that the CPU time measured is
// the checking director's alone.
const listenersEnv = "DIRECTORATE_BENCH_LISTENERS"

func TestMain(m *testing.M) {
	if spec := os.Getenv(listenersEnv); spec != "" {
		if err := serveListeners(spec, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "listeners:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchTarget is real server i of the benchmark: 127.1.x.y:8080, one
// loopback address each, as real servers have.
func benchTarget(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(i%250 + 1)}), 8080)
}

// serveListeners runs "N kind" listeners (kind tcp or http), says
// "ready", then obeys "close I" lines from in, answering "closed I".
func serveListeners(spec string, in io.Reader, out io.Writer) error {
	nStr, kind, _ := strings.Cut(spec, " ")
	n, err := strconv.Atoi(nStr)
	if err != nil {
		return fmt.Errorf("listener count %q: %w", nStr, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") }),
		// The checker closes every connection after one request.
		ReadHeaderTimeout: 5 * time.Second,
	}
	srv.SetKeepAlivesEnabled(false)
	ls := make([]net.Listener, n)
	// served[i] is closed when listener i's accept loop has returned.
	// Only then is its socket closed in the kernel, which goes on
	// completing handshakes until then, so "closed" waits for it.
	served := make([]chan struct{}, n)
	for i := range ls {
		if ls[i], err = net.Listen("tcp", benchTarget(i).String()); err != nil {
			return fmt.Errorf("listen %d: %w", i, err)
		}
		l, done := ls[i], make(chan struct{})
		served[i] = done
		if kind == "http" {
			go func() { defer close(done); _ = srv.Serve(l) }()
			continue
		}
		go func() {
			defer close(done)
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
	}
	fmt.Fprintln(out, "ready")
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var i int
		if _, err := fmt.Sscanf(sc.Text(), "close %d", &i); err != nil || i < 0 || i >= n {
			return fmt.Errorf("bad command %q", sc.Text())
		}
		_ = ls[i].Close()
		<-served[i]
		fmt.Fprintln(out, "closed", i)
	}
	return sc.Err()
}

// listeners is the child process seen from the benchmark.
type listeners struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
}

func startListeners(b *testing.B, n int, kind CheckKind) *listeners {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %s", listenersEnv, n, kind))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	l := &listeners{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout)}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	if !l.lines.Scan() || l.lines.Text() != "ready" {
		b.Fatalf("listeners did not start: %q %v", l.lines.Text(), l.lines.Err())
	}
	return l
}

// close stops listener i and returns once it is closed.
func (l *listeners) close(b *testing.B, i int) time.Time {
	b.Helper()
	fmt.Fprintf(l.stdin, "close %d\n", i)
	if !l.lines.Scan() || l.lines.Text() != fmt.Sprint("closed ", i) {
		b.Fatalf("close %d: %q %v", i, l.lines.Text(), l.lines.Err())
	}
	return time.Now()
}

// cpuTime is the CPU time the listeners' process has used so far, from
// /proc/PID/stat (utime and stime, fields 14 and 15, in clock ticks).
func (l *listeners) cpuTime(b *testing.B) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", l.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the parenthesised command name, which may hold spaces.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parse %s: %v %v", data, err1, err2)
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// cpuTime is this process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err) // cannot fail for RUSAGE_SELF
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkChecks10k checks 10,000 real servers, each a loopback listener
// in a child process, every second, and reports the checking process's
// CPU use, how late attempts start against their schedule, and how long
// a server that stops listening takes to be reported down with fall=1 and
// fall=3. DIRECTORATE_BENCH_TCP_CHECKS, DIRECTORATE_BENCH_HTTP_CHECKS and
// DIRECTORATE_BENCH_SECONDS change the sizes and the measured window. It
// runs once whatever b.N is.
func BenchmarkChecks10k(b *testing.B) {
	for _, kind := range []CheckKind{CheckTCP, CheckHTTP} {
		b.Run(string(kind), func(b *testing.B) { benchChecks(b, kind) })
	}
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func benchChecks(b *testing.B, kind CheckKind) {
	// An HTTP check costs its server far more than a TCP one, and here
	// the servers share the checker's two cores: 10,000 HTTP servers a
	// second do not fit beside it, so HTTP runs at 2,500 unless told.
	def := 10000
	if kind == CheckHTTP {
		def = 2500
	}
	n := envInt(b, "DIRECTORATE_BENCH_"+strings.ToUpper(string(kind))+"_CHECKS", def)
	window := time.Duration(envInt(b, "DIRECTORATE_BENCH_SECONDS", 15)) * time.Second
	const failures = 20 // servers stopped per fall setting
	if n < 4*failures {
		b.Fatalf("need at least %d checks", 4*failures)
	}
	ls := startListeners(b, n, kind)

	_, sink := testlog.New(b)
	var mu sync.Mutex
	up := 0 // checks now up
	health := make(map[netip.AddrPort]Health)
	downs := make(map[netip.AddrPort][]time.Time)
	s, err := NewScheduler(SchedulerOptions{
		// Ten thousand "up" lines would bury the figures.
		Logger: slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OnChange: func(st CheckStatus) {
			mu.Lock()
			defer mu.Unlock()
			if health[st.Spec.Target] == HealthUp {
				up--
			}
			health[st.Spec.Target] = st.Health
			switch st.Health {
			case HealthUp:
				up++
			case HealthDown:
				downs[st.Spec.Target] = append(downs[st.Spec.Target], time.Now())
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	var measuring atomic.Bool
	var lateMu sync.Mutex
	late := make([]time.Duration, 0, n*int(window/time.Second+2))
	s.observe = func(_ CheckSpec, due, started time.Time) {
		if !measuring.Load() {
			return
		}
		lateMu.Lock()
		late = append(late, started.Sub(due))
		lateMu.Unlock()
	}
	specs := make([]CheckSpec, n)
	for i := range specs {
		specs[i] = CheckSpec{
			Kind: kind, Target: benchTarget(i),
			Interval: time.Second, Timeout: 500 * time.Millisecond,
			Rise: 1, Fall: 1 + 2*(i%2), // even servers fall=1, odd fall=3
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	s.Set(specs)
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		u := up
		mu.Unlock()
		if u == n {
			break
		}
		if time.Now().After(deadline) {
			// On a starved host attempts miss their timeout and a few
			// checks flap: measure anyway, and say so.
			b.Logf("only %d of %d checks up after a minute; measuring anyway", u, n)
			break
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}

	b.ResetTimer()
	cpu0, child0, wall0 := cpuTime(), ls.cpuTime(b), time.Now()
	measuring.Store(true)
	// Stop servers spread over the window's first half, at moments
	// unrelated to their check's phase, alternating fall=1 and fall=3.
	closedAt := make(map[netip.AddrPort]time.Time)
	fallOf := make(map[netip.AddrPort]int)
	gap := window / 2 / (2 * failures)
	for k := range 2 * failures {
		time.Sleep(gap) // pacing the failures, not waiting for a result
		i := 7 + k*(n/(2*failures))
		if i%2 != k%2 {
			i++
		}
		closedAt[specs[i].Target] = ls.close(b, i)
		fallOf[specs[i].Target] = specs[i].Fall
	}
	if rest := window - time.Since(wall0); rest > 0 {
		time.Sleep(rest) // the measured window runs its full length
	}
	measuring.Store(false)
	cpu, childCPU, wall := cpuTime()-cpu0, ls.cpuTime(b)-child0, time.Since(wall0)
	b.StopTimer()

	// Stopped servers late in the window may need up to fall intervals
	// more to go down.
	waitDeadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for target := range closedAt {
			if health[target] != HealthDown {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 || time.Now().After(waitDeadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}

	lateMu.Lock()
	lat := slices.Clone(late)
	lateMu.Unlock()
	slices.Sort(lat)
	mu.Lock()
	defer mu.Unlock()
	// A down of a server before it was stopped, or of one never stopped,
	// is a false alarm: on a starved machine attempts can miss their
	// timeout. It is reported, not failed, as it measures the host as
	// much as the code.
	falseDowns := 0
	toDown := map[int][]time.Duration{}
	for target, ds := range downs {
		at, stopped := closedAt[target]
		found := false
		for _, d := range ds {
			if !stopped || d.Before(at) {
				falseDowns++
				continue
			}
			if !found {
				toDown[fallOf[target]] = append(toDown[fallOf[target]], d.Sub(at))
				found = true
			}
		}
	}
	for target, at := range closedAt {
		if health[target] != HealthDown {
			var st CheckStatus
			for _, x := range s.Statuses() {
				if x.Spec.Target == target {
					st = x
				}
			}
			b.Errorf("%s stopped at %s never went down: %+v", target, at.Format(time.StampMilli), st)
		}
	}
	for _, f := range []int{1, 3} {
		slices.Sort(toDown[f])
	}
	b.ReportMetric(float64(cpu)/float64(wall), "cores")
	b.ReportMetric(float64(childCPU)/float64(wall), "listener-cores")
	b.ReportMetric(float64(falseDowns), "false-downs")
	b.ReportMetric(float64(len(lat))/wall.Seconds(), "checks/s")
	b.ReportMetric(ms(percentile(lat, 0.50)), "late-p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "late-p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "late-max-ms")
	b.ReportMetric(ms(percentile(toDown[1], 0.5)), "down-fall1-p50-ms")
	b.ReportMetric(ms(percentile(toDown[1], 1)), "down-fall1-max-ms")
	b.ReportMetric(ms(percentile(toDown[3], 0.5)), "down-fall3-p50-ms")
	b.ReportMetric(ms(percentile(toDown[3], 1)), "down-fall3-max-ms")
}

// BenchmarkTCPConnectFloor is what the kernel alone charges a checker for
// one TCP check over loopback: a blocking connect and an abortive close
// with bare system calls, against the same listeners as
// BenchmarkChecks10k. On loopback the connecting process also pays for
// the listener's half of the handshake, which a real server's kernel
// would do, so this floor is part of that benchmark's "cores" too.
func BenchmarkTCPConnectFloor(b *testing.B) {
	const n = 1000
	startListeners(b, n, CheckTCP)
	linger := &syscall.Linger{Onoff: 1, Linger: 0}
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := range b.N {
		t := benchTarget(i % n)
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := syscall.Connect(fd, &syscall.SockaddrInet4{Addr: t.Addr().As4(), Port: int(t.Port())}); err != nil {
			b.Fatalf("connect %s: %v", t, err)
		}
		if err := syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, linger); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Close(fd); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

// BenchmarkTCPCheck is the CPU one TCPChecker.Check costs, one attempt
// after another against the same listeners as BenchmarkTCPConnectFloor:
// the difference between the two is the checker's own overhead.
func BenchmarkTCPCheck(b *testing.B) {
	const n = 1000
	startListeners(b, n, CheckTCP)
	c := NewTCPChecker()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := range b.N {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Check(cctx, CheckSpec{Kind: CheckTCP, Target: benchTarget(i % n)})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

// countChecker passes every attempt and counts them.
type countChecker struct {
	n    atomic.Int64
	stop int64
	done chan struct{}
}

func (c *countChecker) Check(context.Context, CheckSpec) error {
	if c.n.Add(1) == c.stop {
		close(c.done)
	}
	return nil
}

// BenchmarkSchedulerAttempt is the scheduler's own cost per attempt, with
// a checker that does nothing: 1,000 checks every 10 ms. An op is one
// attempt; cpu-µs/op counts every goroutine, and allocs/op every
// allocation, the scheduler's and the Go runtime's.
func BenchmarkSchedulerAttempt(b *testing.B) {
	c := &countChecker{stop: int64(b.N), done: make(chan struct{})}
	s, err := NewScheduler(SchedulerOptions{
		Logger:   slog.New(slog.DiscardHandler),
		Checkers: map[CheckKind]Checker{CheckTCP: c},
	})
	if err != nil {
		b.Fatal(err)
	}
	specs := make([]CheckSpec, 1000)
	for i := range specs {
		specs[i] = CheckSpec{Kind: CheckTCP, Target: benchTarget(i), Interval: 10 * time.Millisecond,
			Timeout: 10 * time.Millisecond, Rise: 1, Fall: 1}
	}
	s.Set(specs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	go func() { done <- s.Run(ctx) }()
	<-c.done
	cpu := cpuTime() - cpu0
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(cpu)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}
