package probes

import (
	"net/netip"
	"testing"
	"time"

	"github.com/directorate/directorate/internal/testlog"
)

func TestNextSlot(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s := time.Second
	tests := []struct {
		name string
		now  time.Duration // after t0, the current slot
		want time.Duration
	}{
		{"on time", 300 * time.Millisecond, s},
		{"ended just before the next slot", 999 * time.Millisecond, s},
		{"ended after the next slot: run at once, no skip", 1500 * time.Millisecond, s},
		{"missed one whole slot", 2 * s, 2 * s},
		{"missed several", 4500 * time.Millisecond, 4 * s},
	}
	for _, tt := range tests {
		if got := nextSlot(t0, t0.Add(tt.now), s).Sub(t0); got != tt.want {
			t.Errorf("%s: next slot at %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestSetSpreadsNewChecksOverTheInterval(t *testing.T) {
	s, err := NewScheduler(SchedulerOptions{Logger: testlog.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var specs []CheckSpec
	for i := range 4 {
		specs = append(specs, CheckSpec{
			Kind: CheckTCP, Target: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 80),
			Interval: 400 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 1, Fall: 1,
		})
	}
	s.Set(specs)
	first := s.entries[specs[0]].due
	for i, spec := range specs {
		e := s.entries[spec]
		if got, want := e.due.Sub(first), time.Duration(i)*100*time.Millisecond; got != want {
			t.Errorf("check %d first due %s after the first, want %s", i, got, want)
		}
		if e.index < 0 {
			t.Errorf("check %d not queued", i)
		}
	}
	// Checks added later are spread among themselves, and the ones
	// already there keep their slots.
	late := specs[0]
	late.Target = netip.MustParseAddrPort("192.0.2.99:80")
	s.Set(append(specs, late))
	if got := s.entries[specs[0]].due; !got.Equal(first) {
		t.Errorf("kept check moved from %s to %s", first, got)
	}
}

func TestJitterStaysWithinBound(t *testing.T) {
	s, err := NewScheduler(SchedulerOptions{Logger: testlog.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	j := 50 * time.Millisecond
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := s.jitterLocked(j)
		if d < 0 || d >= j {
			t.Fatalf("jitter %s outside [0, %s)", d, j)
		}
		seen[d/time.Millisecond] = true
	}
	if len(seen) < 25 {
		t.Errorf("jitter took only %d distinct milliseconds in 1000 draws", len(seen))
	}
	if d := s.jitterLocked(0); d != 0 {
		t.Errorf("jitter with no bound = %s", d)
	}
}
