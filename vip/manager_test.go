package vip_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/directorate/directorate/internal/testlog"
	"github.com/directorate/directorate/internal/testpoll"
	"github.com/directorate/directorate/vip"
	"github.com/directorate/directorate/vip/viptest"
)

func testLogger(t testing.TB) *slog.Logger { return testlog.Logger(t) }

var (
	t0    = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	mac0  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	mac1  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}
	errIO = errors.New("injected failure")
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func perm(s string) vip.Address { return vip.Address{Prefix: pfx(s)} }

// rig is a Manager on fakes: eth0 (192.0.2.1/24, 2001:db8::1/64), eth1
// (198.51.100.1/24, 2001:db8:1::1/64) and tun0 (no Ethernet address,
// 203.0.113.1/24).
type rig struct {
	clock   *viptest.Clock
	journal *viptest.Journal
	nl      *viptest.Netlink
	ann     *viptest.Announcer
	m       *vip.Manager
}

func newRig(t *testing.T, auto bool, opts vip.Options) *rig {
	t.Helper()
	r := &rig{clock: viptest.NewClock(t0, auto), journal: &viptest.Journal{}}
	r.nl = viptest.NewNetlink(r.clock, r.journal)
	r.ann = viptest.NewAnnouncer(r.clock, r.journal)
	r.nl.AddLink(vip.Link{Index: 1, Name: "lo", Addrs: []vip.Address{perm("127.0.0.1/8"), perm("::1/128")}})
	r.nl.AddLink(vip.Link{Index: 2, Name: "eth0", HardwareAddr: mac0, Addrs: []vip.Address{perm("192.0.2.1/24"), perm("2001:db8::1/64")}})
	r.nl.AddLink(vip.Link{Index: 3, Name: "eth1", HardwareAddr: mac1, Addrs: []vip.Address{perm("198.51.100.1/24"), perm("2001:db8:1::1/64")}})
	r.nl.AddLink(vip.Link{Index: 4, Name: "tun0", Addrs: []vip.Address{perm("203.0.113.1/24")}})
	opts.Clock = r.clock
	m, err := vip.NewManager(r.nl, r.ann, testLogger(t), opts)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	r.m = m
	return r
}

// entries returns the journal entries recorded since mark.
func (r *rig) entries(mark int) []string { return r.journal.Entries()[mark:] }

func (r *rig) mark() int { return len(r.journal.Entries()) }

func assertEntries(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("kernel calls:\n got  %q\n want %q", got, want)
	}
}

func assertErrContains(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("error = nil, want one containing %q", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not contain %q", err, s)
		}
	}
}

const (
	replaceWeb = "replace eth0 192.0.2.10/24 valid=3s preferred=3s nodad=false noprefixroute=true"
	arpWeb     = "arp eth0 192.0.2.10"
)

func TestClaimAddsWithLifetimeThenAnnouncesInBurst(t *testing.T) {
	r := newRig(t, true, vip.Options{})
	if err := r.m.Claim(context.Background(), []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/24")}}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	assertEntries(t, r.journal.Entries(), replaceWeb, arpWeb, arpWeb, arpWeb)
	if got, want := r.clock.Sleeps(), []time.Duration{100 * time.Millisecond, 100 * time.Millisecond}; !slices.Equal(got, want) {
		t.Fatalf("burst waits = %v, want %v", got, want)
	}
	sent := r.ann.Sent()
	for i, a := range sent {
		if want := t0.Add(time.Duration(i) * 100 * time.Millisecond); !a.At.Equal(want) || a.Ifindex != 2 || a.HardwareAddr.String() != mac0.String() {
			t.Fatalf("announcement %d = %+v, want at %v on ifindex 2 from %s", i, a, want, mac0)
		}
	}
	held := r.m.Held()
	if len(held) != 1 || held[0].Interface != "eth0" || held[0].VIP.Name != "web" || !held[0].Expires.Equal(held[0].Renewed.Add(3*time.Second)) {
		t.Fatalf("Held = %+v", held)
	}
	if !r.nl.Has("eth0", pfx("192.0.2.10/24")) {
		t.Fatal("VIP not on eth0")
	}
}

func TestClaimIPv6WithoutDADAndNA(t *testing.T) {
	r := newRig(t, true, vip.Options{BurstCount: 2, Lifetime: 2 * time.Second})
	if err := r.m.Claim(context.Background(), []vip.VIP{{Name: "v6", Prefix: pfx("2001:db8::10/64")}}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	assertEntries(t, r.journal.Entries(),
		"replace eth0 2001:db8::10/64 valid=2s preferred=2s nodad=true noprefixroute=true",
		"na eth0 2001:db8::10", "na eth0 2001:db8::10")
}

func TestClaimPrefixRouteOption(t *testing.T) {
	r := newRig(t, true, vip.Options{BurstCount: 1, PrefixRoute: true})
	if err := r.m.Claim(context.Background(), []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/24")}}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	assertEntries(t, r.journal.Entries(), "replace eth0 192.0.2.10/24 valid=3s preferred=3s nodad=false noprefixroute=false", arpWeb)
}

func TestClaimSeveralInterfacesAnnouncesEachRound(t *testing.T) {
	r := newRig(t, true, vip.Options{BurstCount: 2})
	err := r.m.Claim(context.Background(), []vip.VIP{
		{Name: "web", Prefix: pfx("192.0.2.10/24")},
		{Name: "pub", Prefix: pfx("203.0.113.50/32"), Interface: "eth1"},
		{Name: "inner", Prefix: pfx("203.0.113.9/24")}, // tun0: no Ethernet, not announced
	})
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	assertEntries(t, r.journal.Entries(),
		replaceWeb,
		"replace eth1 203.0.113.50/32 valid=3s preferred=3s nodad=false noprefixroute=true",
		"replace tun0 203.0.113.9/24 valid=3s preferred=3s nodad=false noprefixroute=true",
		arpWeb, "arp eth1 203.0.113.50",
		arpWeb, "arp eth1 203.0.113.50")
}

func TestInterfaceResolution(t *testing.T) {
	links := func(r *rig) {
		// eth2 and eth3 both hold 10.9.0.0/16: ambiguous. eth4 has the
		// narrower 10.1.0.0/16 inside eth2's 10.0.0.0/8. eth5 holds a
		// stale copy of 10.7.0.5 in a /24; only eth2's /8 really contains it.
		r.nl.AddLink(vip.Link{Index: 12, Name: "eth2", HardwareAddr: mac0, Addrs: []vip.Address{perm("10.0.0.1/8"), perm("10.9.0.1/16")}})
		r.nl.AddLink(vip.Link{Index: 13, Name: "eth3", HardwareAddr: mac0, Addrs: []vip.Address{perm("10.9.0.2/16")}})
		r.nl.AddLink(vip.Link{Index: 14, Name: "eth4", HardwareAddr: mac0, Addrs: []vip.Address{perm("10.1.0.1/16")}})
		r.nl.AddLink(vip.Link{Index: 15, Name: "eth5", HardwareAddr: mac0, Addrs: []vip.Address{perm("10.7.0.5/24")}})
	}
	cases := []struct {
		name    string
		v       vip.VIP
		wantIf  string
		wantErr []string
	}{
		{"by name", vip.VIP{Name: "a", Prefix: pfx("192.0.2.10/24"), Interface: "eth1"}, "eth1", nil},
		{"by name, no such link", vip.VIP{Name: "a", Prefix: pfx("192.0.2.10/24"), Interface: "eth9"}, "", []string{`vip "a"`, `interface "eth9": no such link`}},
		{"by subnet", vip.VIP{Name: "a", Prefix: pfx("198.51.100.7/32")}, "eth1", nil},
		{"by subnet, IPv6", vip.VIP{Name: "a", Prefix: pfx("2001:db8:1::7/128")}, "eth1", nil},
		{"longest prefix wins", vip.VIP{Name: "a", Prefix: pfx("10.1.2.3/32")}, "eth4", nil},
		{"own stale address does not count", vip.VIP{Name: "a", Prefix: pfx("10.7.0.5/24")}, "eth2", nil},
		{"no subnet", vip.VIP{Name: "a", Prefix: pfx("100.64.0.1/32")}, "", []string{`vip "a"`, "no link has an address whose subnet contains 100.64.0.1"}},
		{"ambiguous", vip.VIP{Name: "a", Prefix: pfx("10.9.1.1/32")}, "", []string{`vip "a"`, "several links (eth2, eth3)", "set interface"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, true, vip.Options{BurstCount: 1})
			links(r)
			err := r.m.Claim(context.Background(), []vip.VIP{tc.v})
			if tc.wantErr != nil {
				assertErrContains(t, err, tc.wantErr...)
				for _, c := range r.nl.Calls() {
					if c.Op != "links" {
						t.Fatalf("unresolvable VIP caused kernel call %+v", c)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Claim: %v", err)
			}
			if !r.nl.Has(tc.wantIf, tc.v.Prefix) {
				t.Fatalf("VIP not on %s; held %+v", tc.wantIf, r.m.Held())
			}
		})
	}
}

func TestRenewRestartsLifetimeAndRepeatsAnnouncements(t *testing.T) {
	r := newRig(t, false, vip.Options{BurstCount: 1, RepeatInterval: 2 * time.Second})
	ctx := context.Background()
	if err := r.m.Claim(ctx, []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/24")}}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	remaining := func() time.Duration {
		for _, a := range r.nl.Addrs("eth0") {
			if a.Prefix == pfx("192.0.2.10/24") {
				return a.ValidLft
			}
		}
		return 0
	}

	r.clock.Advance(time.Second)
	if got := remaining(); got != 2*time.Second {
		t.Fatalf("remaining lifetime before renew = %s, want 2s", got)
	}
	mark := r.mark()
	if err := r.m.Renew(ctx); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	assertEntries(t, r.entries(mark), replaceWeb) // announced 1 s ago: no repeat yet
	if got := remaining(); got != 3*time.Second {
		t.Fatalf("remaining lifetime after renew = %s, want 3s", got)
	}

	r.clock.Advance(time.Second)
	mark = r.mark()
	if err := r.m.Renew(ctx); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	assertEntries(t, r.entries(mark), replaceWeb, arpWeb) // 2 s since the claim's announcement
	if h := r.m.Held(); !h[0].Renewed.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("Renewed = %v", h[0].Renewed)
	}

	// Without renewals the (fake) kernel drops the VIP at its lifetime.
	r.clock.Advance(3 * time.Second)
	if r.nl.Has("eth0", pfx("192.0.2.10/24")) {
		t.Fatal("VIP outlived its lifetime")
	}
	// A late Renew adds it back: that is the leader's job while it leads.
	if err := r.m.Renew(ctx); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if !r.nl.Has("eth0", pfx("192.0.2.10/24")) {
		t.Fatal("Renew did not re-add an expired VIP")
	}
}

func TestRenewDisabledRepeatAndCancelledContext(t *testing.T) {
	r := newRig(t, false, vip.Options{BurstCount: 1, RepeatInterval: -1})
	if err := r.m.Claim(context.Background(), []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/24")}}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	r.clock.Advance(time.Hour)
	mark := r.mark()
	if err := r.m.Renew(context.Background()); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	assertEntries(t, r.entries(mark), replaceWeb)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	mark = r.mark()
	if err := r.m.Renew(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Renew with cancelled ctx = %v, want context.Canceled", err)
	}
	assertEntries(t, r.entries(mark))
}

func TestFailedAnnouncementIsJoinedAndRetriedOnRenew(t *testing.T) {
	r := newRig(t, true, vip.Options{BurstCount: 2})
	web := netip.MustParseAddr("192.0.2.10")
	r.ann.Fail(web, errIO)
	err := r.m.Claim(context.Background(), []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/24")}, {Name: "v6", Prefix: pfx("2001:db8::10/64")}})
	if !errors.Is(err, errIO) {
		t.Fatalf("Claim error = %v, want the injected failure", err)
	}
	assertErrContains(t, err, `announce vip "web"`)
	if len(r.m.Held()) != 2 {
		t.Fatalf("Held = %+v, want both VIPs held despite the failed announcement", r.m.Held())
	}
	r.ann.Fail(web, nil)
	mark := r.mark()
	if err := r.m.Renew(context.Background()); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	assertEntries(t, r.entries(mark), replaceWeb, arpWeb,
		"replace eth0 2001:db8::10/64 valid=3s preferred=3s nodad=true noprefixroute=true")
}

func TestClaimFailuresContinueAndJoin(t *testing.T) {
	r := newRig(t, true, vip.Options{BurstCount: 1})
	r.nl.Fail("replace", netip.MustParseAddr("192.0.2.10"), errIO)
	err := r.m.Claim(context.Background(), []vip.VIP{
		{Name: "web", Prefix: pfx("192.0.2.10/24")},
		{Name: "gone", Prefix: pfx("192.0.2.11/24"), Interface: "eth7"},
		{Name: "api", Prefix: pfx("192.0.2.12/24")},
	})
	if !errors.Is(err, errIO) {
		t.Fatalf("Claim error = %v, want the injected failure", err)
	}
	assertErrContains(t, err, `claim vip "web" (192.0.2.10/24) on eth0`, `vip "gone": interface "eth7"`)
	assertEntries(t, r.journal.Entries(), "replace eth0 192.0.2.12/24 valid=3s preferred=3s nodad=false noprefixroute=true", "arp eth0 192.0.2.12")
	if h := r.m.Held(); len(h) != 1 || h[0].VIP.Name != "api" {
		t.Fatalf("Held = %+v, want only api", h)
	}
}

func TestClaimListFailure(t *testing.T) {
	r := newRig(t, true, vip.Options{})
	r.nl.FailLinks(errIO)
	err := r.m.Claim(context.Background(), []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/24")}})
	if !errors.Is(err, errIO) {
		t.Fatalf("Claim error = %v, want the injected failure", err)
	}
	if len(r.m.Held()) != 0 {
		t.Fatal("a VIP is held after a failed listing")
	}
}

func TestClaimMovesVIPAndRejectsAddressHeldByAnother(t *testing.T) {
	r := newRig(t, true, vip.Options{BurstCount: 1})
	ctx := context.Background()
	if err := r.m.Claim(ctx, []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/24")}}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	mark := r.mark()
	if err := r.m.Claim(ctx, []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/32"), Interface: "eth1"}}); err != nil {
		t.Fatalf("Claim moved VIP: %v", err)
	}
	assertEntries(t, r.entries(mark), "del eth0 192.0.2.10/24",
		"replace eth1 192.0.2.10/32 valid=3s preferred=3s nodad=false noprefixroute=true", "arp eth1 192.0.2.10")

	err := r.m.Claim(ctx, []vip.VIP{{Name: "web2", Prefix: pfx("192.0.2.10/24")}})
	assertErrContains(t, err, `claim vip "web2"`, `already held as vip "web"`)

	// A move whose old address will not go still claims and announces the
	// new one, and reports the leftover.
	r.nl.Fail("del", netip.MustParseAddr("192.0.2.10"), errIO)
	mark = r.mark()
	err = r.m.Claim(ctx, []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/24"), Interface: "eth0"}})
	if !errors.Is(err, errIO) {
		t.Fatalf("Claim = %v, want the failed delete reported", err)
	}
	assertErrContains(t, err, `release vip "web" (192.0.2.10/32) from eth1`)
	assertEntries(t, r.entries(mark), replaceWeb, arpWeb)
	if h := r.m.Held(); len(h) != 1 || h[0].Interface != "eth0" {
		t.Fatalf("Held = %+v, want web on eth0", h)
	}
}

func TestReleaseDeletesNewestFirstAndForgetsAll(t *testing.T) {
	r := newRig(t, true, vip.Options{BurstCount: 1})
	ctx := context.Background()
	if err := r.m.Claim(ctx, []vip.VIP{{Name: "a", Prefix: pfx("192.0.2.10/24")}, {Name: "b", Prefix: pfx("2001:db8::10/64")}}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	if err := r.m.Claim(ctx, []vip.VIP{{Name: "c", Prefix: pfx("198.51.100.10/24")}}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	mark := r.mark()
	if err := r.m.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	assertEntries(t, r.entries(mark), "del eth1 198.51.100.10/24", "del eth0 2001:db8::10/64", "del eth0 192.0.2.10/24")
	if len(r.m.Held()) != 0 {
		t.Fatalf("Held after Release = %+v", r.m.Held())
	}
	mark = r.mark()
	if err := r.m.Renew(ctx); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	assertEntries(t, r.entries(mark)) // nothing left to renew
}

func TestReleaseContinuesPastFailuresAndIgnoresCancellation(t *testing.T) {
	r := newRig(t, false, vip.Options{BurstCount: 1})
	if err := r.m.Claim(context.Background(), []vip.VIP{
		{Name: "a", Prefix: pfx("192.0.2.10/24")},
		{Name: "b", Prefix: pfx("192.0.2.11/24")},
		{Name: "c", Prefix: pfx("192.0.2.12/24")},
		{Name: "expired", Prefix: pfx("198.51.100.10/24")},
	}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	// "expired" lapses in the kernel; the others are renewed in time.
	r.clock.Advance(2 * time.Second)
	r.nl.Fail("replace", netip.MustParseAddr("198.51.100.10"), errIO)
	if err := r.m.Renew(context.Background()); !errors.Is(err, errIO) {
		t.Fatalf("Renew = %v, want the injected failure", err)
	}
	r.clock.Advance(2 * time.Second)
	r.nl.Fail("del", netip.MustParseAddr("192.0.2.11"), errIO)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	mark := r.mark()
	err := r.m.Release(ctx)
	if !errors.Is(err, errIO) {
		t.Fatalf("Release error = %v, want the injected failure", err)
	}
	assertErrContains(t, err, `release vip "b" (192.0.2.11/24) from eth0`)
	if strings.Contains(err.Error(), "expired") {
		t.Fatalf("an already expired VIP was reported as a failure: %v", err)
	}
	assertEntries(t, r.entries(mark), "del eth0 192.0.2.12/24", "del eth0 192.0.2.10/24")
	if len(r.m.Held()) != 0 {
		t.Fatalf("Held after Release = %+v", r.m.Held())
	}
}

func TestReleaseStopsBurst(t *testing.T) {
	r := newRig(t, false, vip.Options{BurstCount: 5})
	done := make(chan error, 1)
	go func() {
		done <- r.m.Claim(context.Background(), []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/24")}})
	}()
	waitFor(t, "burst to wait", func() bool { return r.clock.Waiters() == 1 })
	if err := r.m.Release(context.Background()); err != nil {
		t.Fatalf("Release: %v", err)
	}
	r.clock.Advance(time.Second)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Claim did not return after Release")
	}
	assertEntries(t, r.journal.Entries(), replaceWeb, arpWeb, "del eth0 192.0.2.10/24")
}

func TestClaimCancelledDuringBurstKeepsVIPHeld(t *testing.T) {
	r := newRig(t, false, vip.Options{BurstCount: 3})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.m.Claim(ctx, []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/24")}}) }()
	waitFor(t, "burst to wait", func() bool { return r.clock.Waiters() == 1 })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Claim = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Claim did not return after cancellation")
	}
	if h := r.m.Held(); len(h) != 1 {
		t.Fatalf("Held = %+v, want web still held until Release", h)
	}

	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	err := r.m.Claim(cancelled, []vip.VIP{{Name: "api", Prefix: pfx("192.0.2.11/24")}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Claim with cancelled ctx = %v", err)
	}
	assertEntries(t, r.journal.Entries(), replaceWeb, arpWeb)
}

func TestSyncReleasesRemovedAndChangedThenClaimsNew(t *testing.T) {
	r := newRig(t, true, vip.Options{BurstCount: 1})
	ctx := context.Background()
	a := vip.VIP{Name: "a", Prefix: pfx("192.0.2.10/24")}
	b := vip.VIP{Name: "b", Prefix: pfx("192.0.2.11/24")}
	c := vip.VIP{Name: "c", Prefix: pfx("192.0.2.12/24")}
	if err := r.m.Sync(ctx, []vip.VIP{a, b, c}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	b2 := vip.VIP{Name: "b", Prefix: pfx("198.51.100.11/24")}
	d := vip.VIP{Name: "d", Prefix: pfx("2001:db8::d/64")}
	mark := r.mark()
	if err := r.m.Sync(ctx, []vip.VIP{b2, c, d}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	assertEntries(t, r.entries(mark),
		"del eth0 192.0.2.11/24", "del eth0 192.0.2.10/24",
		"replace eth1 198.51.100.11/24 valid=3s preferred=3s nodad=false noprefixroute=true",
		"replace eth0 2001:db8::d/64 valid=3s preferred=3s nodad=true noprefixroute=true",
		"arp eth1 198.51.100.11", "na eth0 2001:db8::d")

	calls := len(r.nl.Calls())
	if err := r.m.Sync(ctx, []vip.VIP{b2, c, d}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if extra := r.nl.Calls()[calls:]; len(extra) != 0 {
		t.Fatalf("an unchanged Sync made kernel calls: %+v", extra)
	}
	var names []string
	for _, h := range r.m.Held() {
		names = append(names, h.VIP.Name)
	}
	if want := []string{"c", "b", "d"}; !slices.Equal(names, want) {
		t.Fatalf("held %v, want %v", names, want)
	}
}

func TestCleanupStaleRemovesVIPsNotHeld(t *testing.T) {
	r := newRig(t, true, vip.Options{BurstCount: 1})
	r.nl.AddLink(vip.Link{Index: 9, Name: "eth9", HardwareAddr: mac1, Addrs: []vip.Address{
		perm("192.0.2.10/24"), // a stale copy, permanent (an operator's, or an old version's)
		{Prefix: pfx("2001:db8::10/64"), ValidLft: 2 * time.Second, PreferredLft: 2 * time.Second},
		perm("192.0.2.99/24"), // not a VIP: must survive
	}})
	r.nl.AddLink(vip.Link{Index: 10, Name: "dummy0", HardwareAddr: mac1, Addrs: []vip.Address{perm("198.51.100.10/32")}})
	vips := []vip.VIP{
		{Name: "web", Prefix: pfx("192.0.2.10/24")},
		{Name: "v6", Prefix: pfx("2001:db8::10/64")},
		{Name: "pub", Prefix: pfx("198.51.100.10/24")}, // stale with another prefix length
		{Name: "held", Prefix: pfx("192.0.2.20/24"), Interface: "eth0"},
	}
	ctx := context.Background()
	if err := r.m.Claim(ctx, vips[3:]); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	r.nl.Fail("del", netip.MustParseAddr("2001:db8::10"), errIO)
	mark := r.mark()
	err := r.m.CleanupStale(ctx, vips)
	if !errors.Is(err, errIO) {
		t.Fatalf("CleanupStale = %v, want the injected failure", err)
	}
	assertErrContains(t, err, `remove stale vip "v6" (2001:db8::10/64) from eth9`)
	assertEntries(t, r.entries(mark), "del eth9 192.0.2.10/24", "del dummy0 198.51.100.10/32")
	if !r.nl.Has("eth9", pfx("192.0.2.99/24")) || !r.nl.Has("eth0", pfx("192.0.2.20/24")) {
		t.Fatal("CleanupStale removed an address that is not a stale VIP")
	}

	r.nl.Fail("del", netip.MustParseAddr("2001:db8::10"), nil)
	if err := r.m.CleanupStale(ctx, vips); err != nil {
		t.Fatalf("CleanupStale: %v", err)
	}
	if r.nl.Has("eth9", pfx("2001:db8::10/64")) {
		t.Fatal("stale IPv6 VIP survived")
	}
	if err := r.m.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	// Not leader any more: the VIP it held is fair game too.
	r.nl.AddLink(vip.Link{Index: 11, Name: "eth11", HardwareAddr: mac1, Addrs: []vip.Address{perm("192.0.2.20/24")}})
	if err := r.m.CleanupStale(ctx, vips); err != nil {
		t.Fatalf("CleanupStale: %v", err)
	}
	if r.nl.Has("eth11", pfx("192.0.2.20/24")) {
		t.Fatal("stale VIP survived after Release")
	}
}

func TestBadVIPsAreRejectedBeforeAnyKernelCall(t *testing.T) {
	cases := []struct {
		name string
		vips []vip.VIP
		want string
	}{
		{"empty name", []vip.VIP{{Prefix: pfx("192.0.2.10/24")}}, "vip #0: name: must not be empty"},
		{"duplicate name", []vip.VIP{{Name: "a", Prefix: pfx("192.0.2.10/24")}, {Name: "a", Prefix: pfx("192.0.2.11/24")}}, `vip "a": name: given twice`},
		{"no prefix", []vip.VIP{{Name: "a"}}, `vip "a": prefix: must be a valid`},
		{"multicast", []vip.VIP{{Name: "a", Prefix: pfx("224.0.0.1/32")}}, `vip "a": prefix: 224.0.0.1 is not a unicast`},
		{"unspecified", []vip.VIP{{Name: "a", Prefix: pfx("::/0")}}, `vip "a": prefix: :: is not a unicast`},
		{"loopback", []vip.VIP{{Name: "a", Prefix: pfx("127.0.0.2/8")}}, `vip "a": prefix: 127.0.0.2 is not a unicast`},
		{"mapped", []vip.VIP{{Name: "a", Prefix: pfx("::ffff:192.0.2.1/128")}}, `vip "a": prefix: ::ffff:192.0.2.1 is an IPv4-mapped`},
		{"same address twice", []vip.VIP{{Name: "a", Prefix: pfx("192.0.2.10/24")}, {Name: "b", Prefix: pfx("192.0.2.10/32")}}, `vip "b": prefix: address 192.0.2.10 is also vip "a"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, true, vip.Options{})
			ctx := context.Background()
			for op, f := range map[string]func() error{
				"Claim":        func() error { return r.m.Claim(ctx, tc.vips) },
				"Sync":         func() error { return r.m.Sync(ctx, tc.vips) },
				"CleanupStale": func() error { return r.m.CleanupStale(ctx, tc.vips) },
			} {
				assertErrContains(t, f(), tc.want)
				if calls := r.nl.Calls(); len(calls) != 0 {
					t.Fatalf("%s with bad input made kernel calls: %+v", op, calls)
				}
			}
		})
	}
}

func TestOptionsValidation(t *testing.T) {
	nl := viptest.NewNetlink(viptest.NewClock(t0, true), nil)
	ann := viptest.NewAnnouncer(viptest.NewClock(t0, true), nil)
	cases := []struct {
		opts vip.Options
		want string
	}{
		{vip.Options{Lifetime: 500 * time.Millisecond}, "lifetime: 500ms is below"},
		{vip.Options{Lifetime: 1500 * time.Millisecond}, "lifetime: 1.5s is not a whole number of seconds"},
		{vip.Options{Lifetime: 2 * time.Hour}, "lifetime: 2h0m0s exceeds 1h"},
		{vip.Options{Lifetime: 2 * time.Second, RenewInterval: 1500 * time.Millisecond}, "renew_interval: 1.5s must be positive and at most half"},
		{vip.Options{RenewInterval: -time.Second}, "renew_interval"},
		{vip.Options{BurstCount: -1}, "burst_count: -1"},
		{vip.Options{BurstInterval: -time.Second}, "burst_interval: -1s"},
	}
	for _, tc := range cases {
		_, err := vip.NewManager(nl, ann, nil, tc.opts)
		assertErrContains(t, err, "vip options", tc.want)
	}
	if _, err := vip.NewManager(nil, ann, nil, vip.Options{}); err == nil {
		t.Fatal("NewManager accepted a nil Netlink")
	}
	if _, err := vip.NewManager(nl, nil, nil, vip.Options{}); err == nil {
		t.Fatal("NewManager accepted a nil Announcer")
	}
	m, err := vip.NewManager(nl, ann, nil, vip.Options{})
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	o := m.Options()
	if o.Lifetime != 3*time.Second || o.RenewInterval != time.Second || o.BurstCount != 3 ||
		o.BurstInterval != 100*time.Millisecond || o.RepeatInterval != 5*time.Second || o.PrefixRoute || o.Clock == nil {
		t.Fatalf("defaults = %+v", o)
	}
}

func TestFence(t *testing.T) {
	if got := vip.FenceWait(3 * time.Second); got != 4250*time.Millisecond {
		t.Fatalf("FenceWait(3s) = %s", got)
	}
	if got := vip.FenceWait(1500 * time.Millisecond); got != 3250*time.Millisecond {
		t.Fatalf("FenceWait(1.5s) = %s, want the kernel's whole 2s plus slack", got)
	}
	r := newRig(t, true, vip.Options{Lifetime: 2 * time.Second})
	if got := r.m.FenceWait(vip.FenceLease); got != 3250*time.Millisecond {
		t.Fatalf("FenceWait(lease) = %s", got)
	}
	if got := r.m.FenceWait(vip.FenceNone); got != 0 {
		t.Fatalf("FenceWait(none) = %s", got)
	}
	for _, s := range []string{"lease", "none"} {
		if f, err := vip.ParseFence(s); err != nil || string(f) != s {
			t.Fatalf("ParseFence(%q) = %q, %v", s, f, err)
		}
	}
	_, err := vip.ParseFence("strict")
	assertErrContains(t, err, `fence: "strict" is neither "lease" nor "none"`)
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testpoll.Until(t, 10*time.Second, time.Millisecond, what, cond)
}

// TestConcurrentUse runs every operation at once under the race detector and
// checks the invariant that matters: after the last Release nothing is held
// and no VIP is left on a link.
func TestConcurrentUse(t *testing.T) {
	r := newRig(t, true, vip.Options{BurstCount: 2})
	sets := [][]vip.VIP{
		{{Name: "a", Prefix: pfx("192.0.2.10/24")}, {Name: "b", Prefix: pfx("2001:db8::b/64")}},
		{{Name: "b", Prefix: pfx("2001:db8::b/64")}, {Name: "c", Prefix: pfx("198.51.100.10/24")}},
	}
	all := []vip.VIP{sets[0][0], sets[0][1], sets[1][1]}
	ctx := context.Background()
	done := make(chan struct{})
	errc := make(chan error, 4)
	worker := func(f func(i int)) {
		go func() {
			for i := 0; i < 200; i++ {
				f(i)
			}
			errc <- nil
		}()
	}
	worker(func(i int) { _ = r.m.Sync(ctx, sets[i%2]) })
	worker(func(int) { _ = r.m.Renew(ctx) })
	worker(func(int) { _ = r.m.Release(ctx) })
	worker(func(int) { _ = r.m.Held() })
	go func() {
		for range 4 {
			<-errc
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("concurrent operations did not finish")
	}
	if err := r.m.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if h := r.m.Held(); len(h) != 0 {
		t.Fatalf("Held after Release = %+v", h)
	}
	for _, ifname := range []string{"eth0", "eth1"} {
		for _, v := range all {
			if r.nl.Has(ifname, v.Prefix) {
				t.Fatalf("%s left on %s after Release", v.Name, ifname)
			}
		}
	}
}

// TestBurstStopsWithoutLease models a leader stopped mid-burst and deposed
// meanwhile: when it wakes, the lease check fails and no further
// announcement steers neighbours back to it.
func TestBurstStopsWithoutLease(t *testing.T) {
	var leased atomic.Bool
	leased.Store(true)
	r := newRig(t, false, vip.Options{BurstCount: 3, ConfirmLease: func(context.Context) error {
		if leased.Load() {
			return nil
		}
		return errors.New("deposed")
	}})
	done := make(chan error, 1)
	go func() {
		done <- r.m.Claim(context.Background(), []vip.VIP{{Name: "web", Prefix: pfx("192.0.2.10/24")}})
	}()
	waitFor(t, "burst to wait", func() bool { return r.clock.Waiters() == 1 })
	r.clock.Advance(time.Second) // round 2 is confirmed and sent
	waitFor(t, "burst to wait again", func() bool { return r.clock.Waiters() == 1 })
	leased.Store(false)
	r.clock.Advance(time.Second)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "lease not confirmed") {
			t.Fatalf("Claim: %v, want the burst stopped for want of a lease", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Claim did not return")
	}
	assertEntries(t, r.journal.Entries(), replaceWeb, arpWeb, arpWeb)
}
