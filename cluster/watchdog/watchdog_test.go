package watchdog_test

import (
	"errors"
	"github.com/directorate/directorate/internal/testlog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/directorate/directorate/cluster/watchdog"
	"github.com/directorate/directorate/cluster/watchdog/watchdogtest"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

var (
	healthyBounds = watchdog.Bounds{LoopStall: 2 * time.Second, VIPOpStuck: 5 * time.Second}
)

func healthy(clk *watchdogtest.Clock) watchdog.Health {
	return watchdog.Health{LoopBeat: clk.Now(), LeaseOK: true}
}

func newFake(t *testing.T, timeout time.Duration) (*watchdog.Watchdog, *watchdogtest.Device, *watchdogtest.Clock, *testlog.Sink) {
	t.Helper()
	clk := watchdogtest.NewClock(t0)
	dev := watchdogtest.NewDevice(clk)
	log, tl := newTestLogger(t)
	w, err := watchdog.New(dev, "/dev/watchdog", timeout, log, clk)
	if err != nil {
		t.Fatal(err)
	}
	return w, dev, clk, tl
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name            string
		timeout, period time.Duration
		want            string // substring of the error; "" for none
	}{
		{"default against 1s loop", 10 * time.Second, time.Second, ""},
		{"exactly three periods", 3 * time.Second, time.Second, ""},
		{"fast loop", time.Second, 100 * time.Millisecond, ""},
		{"too short for loop", 2 * time.Second, time.Second, "watchdog.timeout: 2s is less than 3× the control-loop period 1s"},
		{"just under factor", 3 * time.Second, 1001 * time.Millisecond, "less than 3×"},
		{"zero", 0, time.Second, "watchdog.timeout: 0s must be positive"},
		{"negative", -time.Second, time.Second, "must be positive"},
		{"fraction", 2500 * time.Millisecond, 100 * time.Millisecond, "not a whole number of seconds"},
		{"huge", 65536 * time.Second, time.Second, "exceeds the maximum"},
		{"max", 65535 * time.Second, time.Second, ""},
		{"zero period", 10 * time.Second, 0, "control-loop period 0s must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := watchdog.Validate(tc.timeout, tc.period)
			checkErr(t, err, tc.want)
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  watchdog.Config
		want string
	}{
		{"disabled", watchdog.Config{}, ""},
		{"default timeout", watchdog.Config{Device: "/dev/watchdog"}, ""},
		{"timeout without device", watchdog.Config{Timeout: 5 * time.Second}, "watchdog.device: required"},
		{"relative device", watchdog.Config{Device: "watchdog"}, `watchdog.device: "watchdog" is not an absolute path`},
		{"short timeout", watchdog.Config{Device: "/dev/watchdog", Timeout: time.Second}, "watchdog.timeout: 1s is less than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkErr(t, tc.cfg.Validate(time.Second), tc.want)
		})
	}
	if got := (watchdog.Config{}).EffectiveTimeout(); got != watchdog.DefaultTimeout {
		t.Errorf("EffectiveTimeout of zero = %s, want %s", got, watchdog.DefaultTimeout)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	clk := watchdogtest.NewClock(t0)
	dev := watchdogtest.NewDevice(clk)
	if _, err := watchdog.New(nil, "/dev/watchdog", 10*time.Second, nil, clk); err == nil {
		t.Error("nil device accepted")
	}
	if _, err := watchdog.New(dev, "", 10*time.Second, nil, clk); err == nil || !strings.Contains(err.Error(), "watchdog.device") {
		t.Errorf("empty path: %v", err)
	}
	if _, err := watchdog.New(dev, "/dev/watchdog", 1500*time.Millisecond, nil, clk); err == nil || !strings.Contains(err.Error(), "watchdog.timeout") {
		t.Errorf("fractional timeout: %v", err)
	}
	if len(dev.Events()) != 0 {
		t.Errorf("rejected constructor touched the device: %v", dev.Events())
	}
}

// TestPetsWhileHealthyThenFires walks the whole life of a hung leader: it
// arms, pets every loop period while healthy, stops petting when its lease
// goes, and the device fires one timeout after the last pet.
func TestPetsWhileHealthyThenFires(t *testing.T) {
	w, dev, clk, tl := newFake(t, 3*time.Second)
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	if got, want := dev.Ops(), []watchdogtest.Op{watchdogtest.OpOpen, watchdogtest.OpSetTimeout}; !slices.Equal(got, want) {
		t.Fatalf("after Arm ops = %v, want %v", got, want)
	}
	if dev.Timeout() != 3*time.Second {
		t.Fatalf("device timeout %s, want 3s", dev.Timeout())
	}

	for range 10 {
		clk.Advance(time.Second)
		petted, err := w.PetIfHealthy(healthy(clk), healthyBounds)
		if err != nil || !petted {
			t.Fatalf("healthy leader: petted=%v err=%v", petted, err)
		}
	}
	if fired, _ := dev.Fired(); fired {
		t.Fatal("device fired while the leader was healthy")
	}
	if n := dev.Count(watchdogtest.OpPet); n != 10 {
		t.Fatalf("pets = %d, want 10", n)
	}
	lastPet := clk.Now()

	// The loop still runs but the lease is gone: no more pets.
	for range 3 {
		clk.Advance(time.Second)
		h := healthy(clk)
		h.LeaseOK = false
		petted, err := w.PetIfHealthy(h, healthyBounds)
		if err != nil || petted {
			t.Fatalf("leader without lease: petted=%v err=%v", petted, err)
		}
	}
	if n := dev.Count(watchdogtest.OpPet); n != 10 {
		t.Fatalf("pets = %d after losing the lease, want still 10", n)
	}
	// Exactly one timeout after the last pet the device has not fired yet;
	// a moment later it has.
	if fired, _ := dev.Fired(); fired {
		t.Fatal("device fired at exactly its timeout")
	}
	clk.Advance(time.Nanosecond)
	fired, at := dev.Fired()
	if !fired {
		t.Fatal("device did not fire one timeout after the last pet")
	}
	if want := lastPet.Add(3 * time.Second); !at.Equal(want) {
		t.Errorf("fired at %s, want %s", at, want)
	}
	if n := tl.Count("not petting, the kernel reboots"); n != 1 {
		t.Errorf("logged the stop of petting %d times, want once", n)
	}
	if tl.Count("raft leader lease not held") == 0 {
		t.Error("the reason for not petting was not logged")
	}
}

func TestPettingResumesWhenHealthy(t *testing.T) {
	w, dev, clk, tl := newFake(t, 5*time.Second)
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	stale := watchdog.Health{LoopBeat: clk.Now().Add(-3 * time.Second), LeaseOK: true}
	if petted, err := w.PetIfHealthy(stale, healthyBounds); err != nil || petted {
		t.Fatalf("stalled loop: petted=%v err=%v", petted, err)
	}
	clk.Advance(time.Second)
	if petted, err := w.PetIfHealthy(healthy(clk), healthyBounds); err != nil || !petted {
		t.Fatalf("recovered loop: petted=%v err=%v", petted, err)
	}
	if n := tl.Count("petting resumed"); n != 1 {
		t.Errorf("logged resumption %d times, want once", n)
	}
	if st := w.Status(); !st.Armed || !st.LastPet.Equal(clk.Now()) || st.Timeout != 5*time.Second {
		t.Errorf("status %+v", st)
	}
	clk.Advance(5 * time.Second)
	if fired, _ := dev.Fired(); fired {
		t.Error("fired although the last pet is exactly one timeout old")
	}
}

func TestDisarmWritesMagicClose(t *testing.T) {
	w, dev, clk, _ := newFake(t, 3*time.Second)
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	if err := w.Pet(); err != nil {
		t.Fatal(err)
	}
	if err := w.Disarm(); err != nil {
		t.Fatal(err)
	}
	want := []watchdogtest.Op{watchdogtest.OpOpen, watchdogtest.OpSetTimeout, watchdogtest.OpPet, watchdogtest.OpMagicClose}
	if got := dev.Ops(); !slices.Equal(got, want) {
		t.Fatalf("ops = %v, want %v", got, want)
	}
	if dev.Armed() || dev.IsOpen() {
		t.Fatal("device still armed or open after the magic close")
	}
	if err := w.Disarm(); err != nil {
		t.Fatalf("second Disarm: %v", err)
	}
	if got := dev.Ops(); !slices.Equal(got, want) {
		t.Fatalf("second Disarm touched the device: %v", got)
	}
	if err := w.Pet(); !errors.Is(err, watchdog.ErrNotArmed) {
		t.Fatalf("Pet after Disarm = %v, want ErrNotArmed", err)
	}
	if _, err := w.PetIfHealthy(healthy(clk), healthyBounds); !errors.Is(err, watchdog.ErrNotArmed) {
		t.Fatalf("PetIfHealthy after Disarm = %v, want ErrNotArmed", err)
	}
	clk.Advance(time.Hour)
	if fired, _ := dev.Fired(); fired {
		t.Fatal("disarmed device fired")
	}
	if st := w.Status(); st.Armed {
		t.Errorf("status after Disarm: %+v", st)
	}

	// Leadership comes back: the device arms again.
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	if !dev.Armed() || dev.Count(watchdogtest.OpOpen) != 2 {
		t.Fatalf("re-Arm: armed=%v opens=%d", dev.Armed(), dev.Count(watchdogtest.OpOpen))
	}
}

// TestCloseWithoutMagicStaysArmed is what happens when clusterd dies while
// leader: the kernel closes the device without the magic character.
func TestCloseWithoutMagicStaysArmed(t *testing.T) {
	clk := watchdogtest.NewClock(t0)
	dev := watchdogtest.NewDevice(clk)
	h, err := dev.Open("/dev/watchdog")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.SetTimeout(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if !dev.Armed() {
		t.Fatal("close without magic disarmed the device")
	}
	if err := h.Pet(); err == nil {
		t.Fatal("pet through a closed handle succeeded")
	}
	clk.Advance(2*time.Second + time.Millisecond)
	if fired, _ := dev.Fired(); !fired {
		t.Fatal("device abandoned while armed did not fire")
	}
}

func TestOnlyOneOpenHandle(t *testing.T) {
	clk := watchdogtest.NewClock(t0)
	dev := watchdogtest.NewDevice(clk)
	if _, err := dev.Open("/dev/watchdog"); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Open("/dev/watchdog"); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("second open = %v, want EBUSY", err)
	}
}

func TestArmToleratesDeviceWithoutTimeoutIoctl(t *testing.T) {
	w, dev, _, tl := newFake(t, 4*time.Second)
	dev.NoTimeoutIoctl()
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	if st := w.Status(); !st.Armed || st.Timeout != 4*time.Second {
		t.Errorf("status %+v", st)
	}
	if tl.Count("takes no timeout ioctl") != 1 {
		t.Error("the missing timeout ioctl was not logged")
	}
	if err := w.Pet(); err != nil {
		t.Fatal(err)
	}
}

func TestArmDisarmsWhenTimeoutRejected(t *testing.T) {
	w, dev, _, _ := newFake(t, 4*time.Second)
	dev.FailSetTimeout(syscall.EINVAL)
	err := w.Arm()
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Arm = %v, want EINVAL", err)
	}
	if dev.Armed() || dev.Count(watchdogtest.OpMagicClose) != 1 {
		t.Fatalf("device left armed after a rejected timeout: ops %v", dev.Ops())
	}
	if w.Status().Armed {
		t.Fatal("Watchdog reports armed after a failed Arm")
	}
	dev.FailSetTimeout(nil)
	if err := w.Arm(); err != nil {
		t.Fatalf("Arm after the device recovered: %v", err)
	}
}

func TestArmOpenFailure(t *testing.T) {
	w, dev, _, _ := newFake(t, 4*time.Second)
	dev.FailOpen(syscall.ENOENT)
	if err := w.Arm(); !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "/dev/watchdog") {
		t.Fatalf("Arm = %v, want ENOENT naming the device", err)
	}
	if w.Status().Armed {
		t.Fatal("armed after a failed open")
	}
}

func TestPetFailureKeepsLastPet(t *testing.T) {
	w, dev, clk, _ := newFake(t, 4*time.Second)
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	armedAt := clk.Now()
	clk.Advance(time.Second)
	dev.FailPet(syscall.EIO)
	if err := w.Pet(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Pet = %v, want EIO", err)
	}
	if petted, err := w.PetIfHealthy(healthy(clk), healthyBounds); petted || !errors.Is(err, syscall.EIO) {
		t.Fatalf("PetIfHealthy = %v, %v; want false, EIO", petted, err)
	}
	if got := w.Status().LastPet; !got.Equal(armedAt) {
		t.Errorf("LastPet moved to %s on a failed pet", got)
	}
}

func TestDisarmFailureStaysArmed(t *testing.T) {
	w, dev, _, _ := newFake(t, 4*time.Second)
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	dev.FailMagicClose(syscall.EIO)
	if err := w.Disarm(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Disarm = %v, want EIO", err)
	}
	if !w.Status().Armed || !dev.Armed() {
		t.Fatal("a failed Disarm left the Watchdog believing it is disarmed")
	}
	if err := w.Pet(); err != nil {
		t.Fatalf("Pet after a failed Disarm: %v", err)
	}
	dev.FailMagicClose(nil)
	if err := w.Disarm(); err != nil {
		t.Fatal(err)
	}
	if dev.Armed() {
		t.Fatal("retried Disarm left the device armed")
	}
}

// TestConcurrentUse hammers every method from several goroutines; the race
// detector checks the locking and the fake's EBUSY checks that Arm never
// opens a second handle.
func TestConcurrentUse(t *testing.T) {
	w, dev, clk, _ := newFake(t, 10*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				var err error
				switch (g + i) % 4 {
				case 0:
					err = w.Arm()
				case 1:
					err = w.Pet()
				case 2:
					_, err = w.PetIfHealthy(healthy(clk), healthyBounds)
				case 3:
					err = w.Disarm()
				}
				if err != nil && !errors.Is(err, watchdog.ErrNotArmed) {
					errs <- err
				}
				_ = w.Status()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := w.Disarm(); err != nil {
		t.Fatal(err)
	}
	if dev.Armed() || dev.IsOpen() {
		t.Fatal("device armed after the final Disarm")
	}
	if opens, closes := dev.Count(watchdogtest.OpOpen), dev.Count(watchdogtest.OpMagicClose); opens != closes || opens == 0 {
		t.Fatalf("opens %d, magic closes %d", opens, closes)
	}
}
