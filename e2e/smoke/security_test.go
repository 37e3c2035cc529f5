package smoke

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/directorate/directorate/api"
)

// logHas reports whether d's log has a line containing every substring.
func logHas(d *director, subs ...string) bool { return logCount(d, subs...) > 0 }

// logCount counts the lines of d's log that contain every substring.
func logCount(d *director, subs ...string) int {
	b, _ := os.ReadFile(filepath.Join(d.dir, "clusterd.log"))
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

func anyLogHas(ds []*director, subs ...string) bool {
	return slices.ContainsFunc(ds, func(d *director) bool { return logHas(d, subs...) })
}

// TestStrangersAreRefused: a director with a certificate and gossip key
// from another `clusterd tls init` tries to join, and clients without a
// token or with a read token try to change the configuration. Every
// attempt is refused, logged, and leaves the state unchanged.
func TestStrangersAreRefused(t *testing.T) {
	c := newCluster(t, 3)
	for _, d := range c.directors {
		c.start(d)
	}
	leader := c.waitLeader(30 * time.Second)
	c.mustCtl(leader, "vip", "add", "web-vip", "192.0.2.10/24")
	readTok := strings.TrimSpace(c.mustCtl(leader, "token", "create", "--role", "read", "--description", "smoke reader"))
	before := c.mustCtl(leader, "snapshot", "save", "-", "--consistent")

	// The intruder: its own CA, certificates and gossip key.
	other := filepath.Join(t.TempDir(), "other-pki")
	tlsInit(t, other, []string{"d4"})
	host := "127.0.0.4"
	raftAddr := fmt.Sprintf("%s:%d", host, freePort(t, host))
	var join []string
	for _, d := range c.directors {
		b, _ := os.ReadFile(d.config)
		for _, line := range strings.Split(string(b), "\n") {
			if g, ok := strings.CutPrefix(line, "gossip_addr: "); ok {
				join = append(join, g)
			}
		}
	}
	in := &director{id: "d4", api: fmt.Sprintf("%s:%d", host, freePort(t, host)), dir: filepath.Join(t.TempDir(), "d4")}
	if err := os.MkdirAll(in.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in.config = filepath.Join(in.dir, "clusterd.yaml")
	cfg := fmt.Sprintf("node_id: d4\ndata_dir: %s\nraft_addr: %s\ngossip_addr: %s:%d\napi_addr: %s\nbootstrap_expect: 0\njoin: [%s]\n"+
		"timing: {profile: fast}\nlvs: {backend: dry-run}\nvip: {backend: dry-run}\n%s",
		filepath.Join(in.dir, "data"), raftAddr, host, freePort(t, host), in.api, strings.Join(join, ", "), securityConfig(other, "d4"))
	if err := os.WriteFile(in.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c.start(in)
	t.Cleanup(func() { c.kill(in) })

	// Gossip from a stranger cannot be decrypted: it is dropped and logged.
	waitFor(t, 20*time.Second, "a director to log the intruder's undecryptable gossip", func() bool {
		// memberlist names the TCP peer by its source address, which
		// the kernel picks, so the message alone identifies it.
		return anyLogHas(c.directors, "no installed keys could decrypt the message")
	})
	waitFor(t, 20*time.Second, "the intruder to report that it cannot join", func() bool {
		return logHas(in, "cannot join gossip yet")
	})
	// Adding it to raft by hand is refused before it enters the
	// configuration: its certificate is not the cluster CA's.
	_, errs, code := c.ctl(leader, "member", "add", "d4", raftAddr)
	if code == 0 || !strings.Contains(errs, "certificate") {
		t.Fatalf("member add of a director from another CA: exit %d, %q", code, errs)
	}
	waitFor(t, 5*time.Second, "the refused raft peer in the leader's log", func() bool {
		return logHas(leader, "refused raft peer", raftAddr, "reason=")
	})
	// It talks raft to the leader with its own certificate: the
	// handshake fails and the leader logs who and why.
	cert, err := tls.LoadX509KeyPair(filepath.Join(other, "d4.pem"), filepath.Join(other, "d4-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(c.pki, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	leaderRaft := ""
	if b, err := os.ReadFile(leader.config); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if r, ok := strings.CutPrefix(line, "raft_addr: "); ok {
				leaderRaft = r
			}
		}
	}
	conn, err := tls.Dial("tcp", leaderRaft, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool,
		ServerName: "director.directorate", MinVersion: tls.VersionTLS13})
	if err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		from := conn.LocalAddr().String()
		conn.Close()
		waitFor(t, 5*time.Second, "the refused raft connection in the leader's log", func() bool {
			return logHas(leader, "refused raft connection", "remote="+from, "reason=")
		})
	}
	if err == nil {
		t.Fatal("raft answered a director of another CA")
	}

	// Clients: no token, a wrong token, a read token.
	base := []string{"DIRECTORATE_CA=" + filepath.Join(c.pki, "ca.pem")}
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"no token", base, "missing API token"},
		{"a forged token", append(slices.Clone(base), "DIRECTORATE_TOKEN=abcdefgh.bm90LWEtcmVhbC1zZWNyZXQtYXQtYWxsLW5vLW5vLW5v"), "API token"},
		{"a read token", append(slices.Clone(base), "DIRECTORATE_TOKEN="+readTok), "role read"},
	} {
		for _, d := range []*director{leader, c.directors[(slices.Index(c.directors, leader)+1)%3]} {
			_, errs, code := c.ctlEnv(d, tc.env, "vip", "add", "evil", "198.51.100.1/32")
			if code == 0 || !strings.Contains(errs, tc.want) {
				t.Errorf("%s on %s: exit %d, %q; want a refusal saying %q", tc.name, d.id, code, errs, tc.want)
			}
		}
	}
	waitFor(t, 5*time.Second, "denials in the log", func() bool {
		return anyLogHas(c.directors, "request denied", "status=401") && anyLogHas(c.directors, "request denied", "status=403")
	})

	after := c.mustCtl(leader, "snapshot", "save", "-", "--consistent")
	if after != before {
		t.Fatalf("refused attempts changed the state:\nbefore %s\nafter  %s", before, after)
	}
	out := c.mustCtl(leader, "member", "ls", "-o", "json")
	if strings.Contains(out, `"d4"`) {
		t.Fatalf("the intruder is a member: %s", out)
	}
}

// keyringLs is `clusterctl keyring ls -o json`: the API's envelope.
type keyringLs struct {
	Data api.KeyringStatus `json:"data"`
}

// TestGossipKeyRotationUnderLoad rotates the gossip key while clusterctl
// keeps changing the configuration: every change commits (a client
// retries across a leader election, which the fast profile on a loaded
// machine can cause with or without a rotation), no director is declared
// dead, and a director restarted afterwards gossips with the new key
// although its gossip_key_file still holds the removed one.
func TestGossipKeyRotationUnderLoad(t *testing.T) {
	c := newCluster(t, 3)
	for _, d := range c.directors {
		c.start(d)
	}
	leader := c.waitLeader(30 * time.Second)
	c.mustCtl(leader, "vip", "add", "web-vip", "192.0.2.10/24")
	c.mustCtl(leader, "service", "add", "web", "--vip", "web-vip", "--proto", "tcp", "--port", "80", "--method", "nat")
	c.mustCtl(leader, "server", "add", "web", "10.1.0.1:8080")

	ls := func() keyringLs {
		var k keyringLs
		out := c.mustCtl(leader, "keyring", "ls", "-o", "json")
		if err := json.Unmarshal([]byte(out), &k); err != nil {
			t.Fatalf("keyring ls: %v: %s", err, out)
		}
		return k
	}
	old := ls().Data.Primary

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes, retries, failures atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			d := c.directors[i%3]
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, errs, code := c.ctl(d, "server", "set", "web", "10.1.0.1:8080", "--weight", fmt.Sprint(1+i%100))
				if code == 0 {
					break
				}
				if time.Now().After(deadline) {
					failures.Add(1)
					t.Logf("write %d through %s failed for 10s: %s", i, d.id, errs)
					break
				}
				retries.Add(1)
			}
			writes.Add(1)
		}
	}()

	keyFile := filepath.Join(t.TempDir(), "new.key")
	if err := os.WriteFile(keyFile, []byte(c.mustCtl(leader, "keyring", "generate")), 0o600); err != nil {
		t.Fatal(err)
	}
	c.mustCtl(leader, "keyring", "install", "--key-file", keyFile)
	var next string
	waitFor(t, 20*time.Second, "every director to announce the new key", func() bool {
		k := ls()
		for _, key := range k.Data.Keys {
			if key.Fingerprint != old {
				next = key.Fingerprint
				return len(key.MissingOn) == 0
			}
		}
		return false
	})
	c.mustCtl(leader, "keyring", "use", next)
	// Removing the primary is refused.
	if _, errs, code := c.ctl(leader, "keyring", "remove", next); code == 0 || !strings.Contains(errs, "primary") {
		t.Fatalf("removing the primary key: exit %d, %q", code, errs)
	}
	waitFor(t, 20*time.Second, "every director to send with the new key", func() bool {
		out := c.mustCtl(leader, "member", "ls", "-o", "json")
		return strings.Count(out, `"alive"`) == 3
	})
	c.mustCtl(leader, "keyring", "remove", old)
	waitFor(t, 20*time.Second, "the old key gone everywhere", func() bool {
		k := ls()
		return k.Data.Replicated && k.Data.Primary == next && len(k.Data.Keys) == 1 && len(k.Data.Keys[0].MissingOn) == 0
	})
	// Keep the load on for a while after the rotation: a director that
	// could not decrypt would be suspected and declared dead by now.
	n := writes.Load()
	waitFor(t, 30*time.Second, "more writes after the rotation", func() bool { return writes.Load() > n+20 })
	close(stop)
	wg.Wait()
	t.Logf("%d configuration changes during the rotation, %d attempts retried, %d failed", writes.Load(), retries.Load(), failures.Load())
	if failures.Load() > 0 {
		t.Fatalf("%d changes failed during the rotation", failures.Load())
	}
	for _, d := range c.directors {
		if logHas(d, "gossip member declared dead") {
			t.Fatalf("%s declared a member dead during the rotation", d.id)
		}
	}

	// A restarted follower uses the persisted keyring, not its
	// gossip_key_file (which holds the removed key), and rejoins.
	var follower *director
	for _, d := range c.directors {
		if d != leader {
			follower = d
			break
		}
	}
	c.stop(follower)
	c.start(follower)
	waitFor(t, 30*time.Second, follower.id+" back in gossip and raft", func() bool {
		out, _, code := c.ctl(leader, "member", "ls", "-o", "json")
		return code == 0 && strings.Count(out, `"alive"`) == 3
	})
	k := ls()
	if len(k.Data.Keys[0].MissingOn) != 0 {
		t.Fatalf("after a restart: %+v", k)
	}
}
