package watchdog_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/directorate/directorate/cluster/watchdog"
)

func TestOSDevicePlainFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	log, tl := newTestLogger(t)
	w, err := watchdog.New(watchdog.OSDevice{}, path, 5*time.Second, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Arm(); err != nil {
		t.Fatalf("Arm on a plain file: %v", err)
	}
	if tl.Count("takes no timeout ioctl") != 1 {
		t.Error("ENOTTY from the timeout ioctl was not logged")
	}
	for range 3 {
		if err := w.Pet(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Disarm(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "...V" {
		t.Fatalf("file holds %q, want three pets and the magic character", got)
	}
}

func TestOSDeviceTimeoutIoctlOnFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := watchdog.OSDevice{}.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.SetTimeout(10 * time.Second)
	if !errors.Is(err, watchdog.ErrTimeoutUnsupported) || !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("SetTimeout on a file = %v, want ErrTimeoutUnsupported wrapping ENOTTY", err)
	}
	if err := h.Pet(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := h.Pet(); err == nil {
		t.Fatal("Pet after Close succeeded")
	}
	if got, _ := os.ReadFile(path); string(got) != "." {
		t.Fatalf("close without magic wrote %q, want only the pet", got)
	}
}

func TestOSDeviceMissingPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent")
	_, err := watchdog.OSDevice{}.Open(path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open = %v, want ErrNotExist naming the path", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("Open created the device path")
	}
}

// supervisor reads a FIFO standing in for the watchdog device, as a test
// harness's supervisor would, until the writer closes it.
type supervisor struct {
	r    *os.File
	done chan struct{}
	got  []byte
	err  error
}

// startSupervisor opens the read side first (non-blocking, so it does not
// wait for a writer) so that the device's non-blocking open finds a reader.
func startSupervisor(t *testing.T, fifo string) *supervisor {
	t.Helper()
	r, err := os.OpenFile(fifo, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return &supervisor{r: r, done: make(chan struct{})}
}

// run reads until EOF. It must start after the writer opened: a FIFO that
// never had a writer reads as EOF at once.
func (s *supervisor) run() {
	go func() {
		defer close(s.done)
		s.got, s.err = io.ReadAll(s.r)
	}()
}

// verdict is what a supervisor concludes once the writer has gone: a magic
// character last means a clean disarm, anything else would mean a reboot.
func (s *supervisor) verdict(t *testing.T) (pets int, disarmed bool) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("supervisor never saw EOF")
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
	return bytes.Count(s.got, []byte(".")), bytes.HasSuffix(s.got, []byte("V"))
}

func mkfifo(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "watchdog.fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOSDeviceFIFOWithSupervisor(t *testing.T) {
	fifo := mkfifo(t)
	sup := startSupervisor(t, fifo)
	log, _ := newTestLogger(t)
	w, err := watchdog.New(watchdog.OSDevice{}, fifo, 3*time.Second, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Arm(); err != nil {
		t.Fatalf("Arm on a FIFO: %v", err)
	}
	sup.run()
	for range 5 {
		if err := w.Pet(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Disarm(); err != nil {
		t.Fatal(err)
	}
	pets, disarmed := sup.verdict(t)
	if pets != 5 || !disarmed {
		t.Fatalf("supervisor saw %q: %d pets, disarmed=%v; want 5 and a magic close", sup.got, pets, disarmed)
	}
}

// TestOSDeviceFIFOAbandoned: a writer that goes away without the magic
// character leaves the supervisor armed, as the kernel would stay armed.
func TestOSDeviceFIFOAbandoned(t *testing.T) {
	fifo := mkfifo(t)
	sup := startSupervisor(t, fifo)
	h, err := watchdog.OSDevice{}.Open(fifo)
	if err != nil {
		t.Fatal(err)
	}
	sup.run()
	if _, err := h.SetTimeout(time.Second); !errors.Is(err, watchdog.ErrTimeoutUnsupported) {
		t.Fatalf("SetTimeout on a FIFO = %v, want ErrTimeoutUnsupported", err)
	}
	if err := h.Pet(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	pets, disarmed := sup.verdict(t)
	if pets != 1 || disarmed {
		t.Fatalf("supervisor saw %q: %d pets, disarmed=%v; want 1 pet and no magic close", sup.got, pets, disarmed)
	}
}

// TestOSDeviceFIFONeverBlocks: neither a missing supervisor nor one that
// stopped reading may hang the control loop.
func TestOSDeviceFIFONeverBlocks(t *testing.T) {
	fifo := mkfifo(t)
	if _, err := (watchdog.OSDevice{}).Open(fifo); !errors.Is(err, unix.ENXIO) {
		t.Fatalf("Open without a reader = %v, want ENXIO", err)
	}

	startSupervisor(t, fifo) // opened, never read
	h, err := watchdog.OSDevice{}.Open(fifo)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// The pipe buffer is 64 KiB by default and at most 1 MiB unprivileged;
	// pets beyond it must fail at once with EAGAIN rather than block.
	for i := range 2 << 20 {
		err = h.Pet()
		if err != nil {
			t.Logf("pet %d failed: %v", i, err)
			break
		}
	}
	if !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("petting a full FIFO: %v, want EAGAIN", err)
	}
}

const realDevice = "/dev/watchdog"

// requireRealDevice skips unless explicitly allowed: opening /dev/watchdog
// arms it, and outside a VM whose softdog has soft_noboot=1 a failed test
// would reboot the machine. e2e/vm's guest is such a VM:
//
//	go test -c -o bin/watchdog.test ./cluster/watchdog
//	bin/vmrun -e DIRECTORATE_WATCHDOG_TEST=1 -- bin/watchdog.test -test.v -test.run RealWatchdog
func requireRealDevice(t *testing.T) {
	t.Helper()
	if os.Getenv("DIRECTORATE_WATCHDOG_TEST") != "1" {
		t.Skip("set DIRECTORATE_WATCHDOG_TEST=1 (only in a VM with softdog soft_noboot=1) to open " + realDevice)
	}
	if _, err := os.Stat(realDevice); err != nil {
		t.Skipf("no watchdog device: %v", err)
	}
}

// deviceState reads the watchdog core's view of /dev/watchdog (the first
// registered watchdog): "active" or "inactive".
func deviceState(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/sys/class/watchdog/watchdog0/state")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// softdogTriggers counts softdog's "Triggered - Reboot ignored" lines in the
// kernel log.
func softdogTriggers(t *testing.T) int {
	t.Helper()
	buf := make([]byte, 1<<20)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(buf[:n], []byte("softdog: Triggered"))
}

func TestRealWatchdogDevice(t *testing.T) {
	requireRealDevice(t)
	const path = realDevice
	log, tl := newTestLogger(t)
	w, err := watchdog.New(watchdog.OSDevice{}, path, 7*time.Second, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := w.Disarm(); err != nil {
			t.Errorf("Disarm: %v", err)
		}
	}()
	if tl.Count("takes no timeout ioctl") != 0 {
		t.Error("a real watchdog device rejected the timeout ioctl")
	}
	if st := w.Status(); st.Timeout != 7*time.Second {
		t.Errorf("device timeout %s, want 7s", st.Timeout)
	}
	for range 3 {
		if err := w.Pet(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRealWatchdogFiresWhenNotPetted: the kernel fires one timeout after an
// armed device stops being petted, closing without the magic character
// leaves it armed, and the magic close disarms it.
func TestRealWatchdogFiresWhenNotPetted(t *testing.T) {
	requireRealDevice(t)
	log, _ := newTestLogger(t)
	w, err := watchdog.New(watchdog.OSDevice{}, realDevice, time.Second, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := softdogTriggers(t)
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	armed := time.Now()
	if st := deviceState(t); st != "active" {
		t.Fatalf("state after Arm = %q, want active", st)
	}
	eventually(t, "softdog to fire", func() bool { return softdogTriggers(t) > before })
	t.Logf("softdog fired %s after arming with a 1s timeout", time.Since(armed).Round(time.Millisecond))
	if err := w.Disarm(); err != nil {
		t.Fatal(err)
	}
	if st := deviceState(t); st != "inactive" {
		t.Fatalf("state after the magic close = %q, want inactive", st)
	}

	h, err := watchdog.OSDevice{}.Open(realDevice)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if st := deviceState(t); st != "active" {
		t.Fatalf("state after closing without the magic character = %q, want active", st)
	}
	// Reopening pets it; the magic close then stops it for good.
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	if err := w.Disarm(); err != nil {
		t.Fatal(err)
	}
	if st := deviceState(t); st != "inactive" {
		t.Fatalf("state after cleanup = %q, want inactive", st)
	}
}
