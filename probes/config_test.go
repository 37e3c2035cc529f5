package probes_test

import (
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/probes"
	"github.com/directorate/directorate/probes/probestest"
)

func TestPingConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  probes.PingConfig
		want []string // substrings of the error; none for a valid config
	}{
		{name: "empty"},
		{name: "valid", cfg: probes.PingConfig{
			Nodes:  []string{"192.0.2.1", "2001:db8::1", "fe80::1%eth0", "127.0.0.1"},
			Groups: map[string][]string{"uplinks": {"198.51.100.1", "198.51.100.2"}, "v6.gw-2": {"2001:db8::2"}},
		}},
		{name: "host name", cfg: probes.PingConfig{Nodes: []string{"192.0.2.1", "192.0.2.2", "router.example"}},
			want: []string{`ping_nodes[2]: "router.example" is not an IP address`}},
		{name: "unspecified", cfg: probes.PingConfig{Nodes: []string{"0.0.0.0", "::"}},
			want: []string{"ping_nodes[0]: 0.0.0.0 is the unspecified address", "ping_nodes[1]: :: is the unspecified address"}},
		{name: "multicast and broadcast", cfg: probes.PingConfig{Nodes: []string{"224.0.0.1", "ff02::1%eth0", "255.255.255.255"}},
			want: []string{"ping_nodes[0]: 224.0.0.1 is a multicast", "ping_nodes[1]: ff02::1%eth0 is a multicast", "ping_nodes[2]: 255.255.255.255 is the broadcast"}},
		{name: "mapped", cfg: probes.PingConfig{Nodes: []string{"::ffff:192.0.2.1"}},
			want: []string{"ping_nodes[0]: ::ffff:192.0.2.1 is an IPv4-mapped IPv6 address; write it as 192.0.2.1"}},
		{name: "link-local without zone", cfg: probes.PingConfig{Nodes: []string{"fe80::1"}},
			want: []string{"ping_nodes[0]: fe80::1 is link-local and needs an interface zone"}},
		{name: "zone on a global address", cfg: probes.PingConfig{Nodes: []string{"2001:db8::1%eth0"}},
			want: []string{"ping_nodes[0]: 2001:db8::1%eth0 has a zone"}},
		{name: "duplicate node", cfg: probes.PingConfig{Nodes: []string{"192.0.2.1", "192.0.2.1"}},
			want: []string{"ping_nodes[1]: 192.0.2.1 is already listed as ping_nodes[0]"}},
		{name: "same address spelled twice", cfg: probes.PingConfig{Nodes: []string{"2001:db8::1", "2001:0db8:0::1"}},
			want: []string{"ping_nodes[1]: 2001:db8::1 is already listed as ping_nodes[0]"}},
		{name: "node also in a group", cfg: probes.PingConfig{Nodes: []string{"192.0.2.1"}, Groups: map[string][]string{"up": {"192.0.2.9", "192.0.2.1"}}},
			want: []string{"ping_groups.up[1]: 192.0.2.1 is already listed as ping_nodes[0]"}},
		{name: "address in two groups", cfg: probes.PingConfig{Groups: map[string][]string{"a": {"192.0.2.1"}, "b": {"192.0.2.1"}}},
			want: []string{"ping_groups.b[0]: 192.0.2.1 is already listed as ping_groups.a[0]"}},
		{name: "empty group", cfg: probes.PingConfig{Groups: map[string][]string{"up": {}}},
			want: []string{"ping_groups.up: group is empty"}},
		{name: "bad group name", cfg: probes.PingConfig{Groups: map[string][]string{"my group": {"192.0.2.1"}}},
			want: []string{`ping_groups."my group": group name must be`}},
		{name: "bad group member", cfg: probes.PingConfig{Groups: map[string][]string{"up": {"192.0.2.1", "gw"}}},
			want: []string{`ping_groups.up[1]: "gw" is not an IP address`}},
		{name: "every problem reported", cfg: probes.PingConfig{Nodes: []string{"x", "192.0.2.1"}, Groups: map[string][]string{"e": nil, "f": {"192.0.2.1"}}},
			want: []string{"ping_nodes[0]:", "ping_groups.e: group is empty", "ping_groups.f[0]: 192.0.2.1 is already listed as ping_nodes[1]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			_, nerr := probes.NewPingMonitor(tc.cfg, probestest.NewPinger(nil), probes.PingOptions{})
			if len(tc.want) == 0 {
				if err != nil || nerr != nil {
					t.Fatalf("valid config refused: %v / %v", err, nerr)
				}
				return
			}
			if err == nil || nerr == nil {
				t.Fatalf("accepted, want errors %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
				if !strings.Contains(nerr.Error(), w) {
					t.Errorf("NewPingMonitor error %q lacks %q", nerr, w)
				}
			}
		})
	}
}

func TestPingOptionsValidate(t *testing.T) {
	cfg := probes.PingConfig{Nodes: []string{"192.0.2.1"}}
	for _, tc := range []struct {
		name   string
		opts   probes.PingOptions
		pinger probes.Pinger
		want   []string
	}{
		{name: "defaults"},
		{name: "short interval caps the default timeout", opts: probes.PingOptions{Interval: 200 * time.Millisecond}},
		{name: "negative interval", opts: probes.PingOptions{Interval: -time.Second}, want: []string{"interval: -1s is below the minimum 10ms"}},
		{name: "interval too short", opts: probes.PingOptions{Interval: time.Millisecond}, want: []string{"interval: 1ms is below the minimum 10ms"}},
		{name: "timeout over interval", opts: probes.PingOptions{Interval: time.Second, Timeout: 2 * time.Second},
			want: []string{"timeout: 2s exceeds the interval 1s"}},
		{name: "negative timeout", opts: probes.PingOptions{Timeout: -1}, want: []string{"timeout: -1ns is negative"}},
		{name: "negative rise and fall", opts: probes.PingOptions{Rise: -1, Fall: -2},
			want: []string{"rise: -1 is negative", "fall: -2 is negative"}},
		{name: "jitter as long as the interval", opts: probes.PingOptions{Interval: time.Second, Jitter: time.Second},
			want: []string{"jitter: 1s must be less than the interval 1s"}},
		{name: "nil pinger", pinger: nil, want: []string{"pinger: nil"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.pinger
			if p == nil && tc.name != "nil pinger" {
				p = probestest.NewPinger(nil)
			}
			_, err := probes.NewPingMonitor(cfg, p, tc.opts)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestDetectionBounds(t *testing.T) {
	down, err := probes.PingOptions{}.UnreachableWithin()
	if err != nil || down != 4100*time.Millisecond {
		t.Fatalf("default UnreachableWithin = %s, %v; want 3×1s + 100ms jitter + 1s timeout = 4.1s", down, err)
	}
	up, err := probes.PingOptions{}.ReachableWithin()
	if err != nil || up != 3100*time.Millisecond {
		t.Fatalf("default ReachableWithin = %s, %v; want 2×1s + 100ms + 1s = 3.1s", up, err)
	}
	fast := probes.PingOptions{Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 2, Fall: 2, Jitter: -1}
	if d, _ := fast.UnreachableWithin(); d != 500*time.Millisecond {
		t.Fatalf("fast UnreachableWithin = %s, want 500ms", d)
	}
	if _, err := (probes.PingOptions{Jitter: 2 * time.Second}).UnreachableWithin(); err == nil {
		t.Fatal("bounds of invalid options computed")
	}
}
