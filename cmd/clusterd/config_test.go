package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodConfig = `node_id: d1
data_dir: /var/lib/directorate
raft_addr: 10.0.0.1:7901
gossip_addr: 10.0.0.1:7946
api_addr: 10.0.0.1:7950
bootstrap_expect: 3
join: [10.0.0.2:7946, 10.0.0.3:7946]
lvs:
  backend: dry-run
insecure: true
`

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := parseConfig([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LVS.ResyncInterval == 0 || cfg.APITimeout == 0 || cfg.Log.Level != "info" || cfg.Log.Format != "text" {
		t.Fatalf("defaults not filled: %+v", cfg)
	}
	if g := cfg.LVS.removeGrace(); g != 30*time.Second {
		t.Fatalf("remove grace %s by default, want 30s", g)
	}
	for yaml, want := range map[string]time.Duration{"0s": -1, "5s": 5 * time.Second} {
		c, err := parseConfig([]byte(override(goodConfig, "lvs:\n  backend: dry-run\n  remove_grace: "+yaml+"\n")))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.LVS.removeGrace(); got != want {
			t.Errorf("remove_grace: %s gives the reconciler %s, want %s", yaml, got, want)
		}
	}
	cc := cfg.clusterConfig("v1")
	if cc.RaftBind != cfg.RaftAddr || cc.GossipBind != cfg.GossipAddr || cc.APIAddress != cfg.APIAddr || cc.Version != "v1" {
		t.Fatalf("cluster config: %+v", cc)
	}
	if _, err := cc.Validate(); err != nil {
		t.Fatalf("a valid clusterd config maps to an invalid cluster config: %v", err)
	}
}

// TestParseConfigErrorsNameTheField checks that every refusal names the
// setting to fix.
func TestParseConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name, edit, want string
	}{
		{"unknown key", "colour: red\n", "colour"},
		{"bad node id", "node_id: -x\n", "node_id"},
		{"hostname raft address", "raft_addr: dir1:7901\n", "raft_addr"},
		{"port 0", "api_addr: 10.0.0.1:0\n", "api_addr"},
		{"even bootstrap_expect", "bootstrap_expect: 2\n", "bootstrap_expect"},
		{"backend", "lvs:\n  backend: ipvsadm\n", "lvs.backend"},
		{"negative remove grace", "lvs:\n  remove_grace: -1s\n", "lvs.remove_grace"},
		{"remove grace of a day", "lvs:\n  remove_grace: 24h\n", "lvs.remove_grace"},
		{"lease above heartbeat", "timing:\n  heartbeat_timeout: 100ms\n  leader_lease_timeout: 200ms\n", "timing.leader_lease_timeout"},
		{"unknown profile", "timing:\n  profile: turbo\n", "timing.profile"},
		{"log level", "log:\n  level: loud\n", "log.level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(override(goodConfig, tc.edit)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// override replaces the top-level keys edit sets in base, so each case
// changes one setting of a valid file.
func override(base, edit string) string {
	keys := map[string]bool{}
	for _, l := range strings.Split(edit, "\n") {
		if k, _, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
			keys[k] = true
		}
	}
	var out []string
	skipping := false
	for _, l := range strings.Split(base, "\n") {
		if !strings.HasPrefix(l, " ") {
			k, _, _ := strings.Cut(l, ":")
			skipping = keys[k]
		}
		if !skipping {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n") + "\n" + edit
}

func TestCheckConfigAndPrintTiming(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte(goodConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(override(goodConfig, "api_addr: nowhere\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"-check-config", good}, &out, &errb); code != 0 || !strings.Contains(out.String(), "OK") {
		t.Fatalf("check good config: exit %d, %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"-check-config", bad}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "api_addr") {
		t.Fatalf("check bad config: exit %d, stderr %q", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"-print-timing"}, &out, &errb); code != 0 {
		t.Fatalf("print timing: exit %d, %q", code, errb.String())
	}
	for _, want := range []string{"profile", "default", "fast", "leader_lease_timeout", "partitioned leader steps down"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-print-timing output lacks %q:\n%s", want, out.String())
		}
	}
}
