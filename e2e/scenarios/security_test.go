//go:build linux

package scenarios

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directorate/directorate/api"

	"github.com/directorate/directorate/e2e/lab"
)

// TestSecurity runs the lab's secure mode against strangers and through a
// gossip key rotation, on one cluster of three directors and a fourth node:
//
//   - an intruder director with a certificate and gossip key from another
//     `clusterd tls init` starts next to the cluster: its gossip is dropped
//     and logged, `member add` of it is refused and logged, a raft
//     connection with its certificate is refused and logged, and it never
//     becomes a member;
//   - clusterctl with no token, a forged token or a read token tries to
//     change the configuration through the leader and a follower, and with
//     another CA cannot even connect: every attempt is refused (401/403 or
//     a failed handshake) and logged;
//   - none of that moves the replicated state: the consistent snapshot,
//     index included, is the same before and after;
//   - the gossip key is rotated (generate, install, use, remove) while the
//     client sends a request every 20 ms through the VIP: no request fails
//     beyond emulation noise, and `member ls`, sampled on every director
//     throughout, never shows a member other than alive, nor does any log
//     show a suspicion or a death;
//   - a follower restarted afterwards, whose gossip_key_file holds the
//     removed key, rejoins on the replicated keyring.
func TestSecurity(t *testing.T) {
	c := newCluster(t, lab.Options{Directors: 4, Started: 3})
	members := c.Dirs[:3]
	intruder := c.Dirs[3]
	leader := c.WaitLeader(formTimeout)
	addWeb(t, c, leader, "dr")
	leader = c.WaitSettled(settleTimeout, webVIP)
	c.WaitTables(tableTimeout, leader, 0)
	readTok := strings.TrimSpace(leader.MustCtl("token", "create", "--role", "read", "--description", "e2e reader"))
	before, term0 := consistentState(t, c)

	strangers(t, c, members, intruder)
	clients(t, c, members, readTok)

	after, term1 := consistentState(t, c)
	idx0, idx1 := before["index"], after["index"]
	delete(before, "index")
	delete(after, "index")
	b0, _ := json.Marshal(before)
	b1, _ := json.Marshal(after)
	if string(b0) != string(b1) {
		t.Fatalf("refused attempts changed the replicated state:\nbefore %s\nafter  %s", b0, b1)
	}
	// A leader elected meanwhile (a VM stall can cause one) commits an
	// entry of its own; without an election the index must not move.
	if term0 == term1 && idx0 != idx1 {
		t.Fatalf("refused attempts moved the index from %v to %v in term %d", idx0, idx1, term0)
	}
	t.Logf("state unchanged by every refused attempt: index %v, term %d -> index %v, term %d", idx0, term0, idx1, term1)
	intruder.Kill()

	rotate(t, c, members)
}

// consistentState reads the replicated state through the leader, with the
// leader's term.
func consistentState(t *testing.T, c *lab.Cluster) (map[string]any, uint64) {
	t.Helper()
	leader := c.WaitLeader(settleTimeout)
	out := leader.MustCtl("snapshot", "save", "-", "--consistent")
	st, ok := leader.Status()
	if !ok {
		t.Fatalf("%s does not answer status", leader.ID)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("parse snapshot: %v: %s", err, out)
	}
	return m, st.Term
}

// logHas reports whether d's log has a line holding every one of subs.
func logHas(d *lab.Director, subs ...string) bool {
	return logCount(d, subs...) > 0
}

// logCount counts d's log lines holding every one of subs.
func logCount(d *lab.Director, subs ...string) int {
	b, _ := os.ReadFile(d.LogPath())
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		ok := true
		for _, s := range subs {
			if !strings.Contains(line, s) {
				ok = false
				break
			}
		}
		if ok {
			n++
		}
	}
	return n
}

func anyLogHas(ds []*lab.Director, subs ...string) bool {
	for _, d := range ds {
		if logHas(d, subs...) {
			return true
		}
	}
	return false
}

// memberIDs lists the raft members d reports.
func memberIDs(t *testing.T, d *lab.Director) []string {
	t.Helper()
	var env struct {
		Data []struct {
			ID     string `json:"id"`
			Gossip string `json:"gossip"`
		} `json:"data"`
	}
	out := d.MustCtl("member", "ls", "-o", "json")
	if err := json.Unmarshal([]byte(out), &env); err != nil {
		t.Fatalf("member ls: %v: %s", err, out)
	}
	var ids []string
	for _, m := range env.Data {
		ids = append(ids, m.ID)
	}
	return ids
}

// strangers starts intruder with a PKI of its own and checks that the
// cluster refuses and logs it at every layer.
func strangers(t *testing.T, c *lab.Cluster, members []*lab.Director, intruder *lab.Director) {
	t.Helper()
	other := filepath.Join(c.Opts.Dir, "other-pki")
	if err := lab.TLSInit(c.Opts.Bin, other, []string{intruder.ID}, map[string]netip.Addr{intruder.ID: intruder.IP()}); err != nil {
		t.Fatal(err)
	}
	var join []string
	for _, d := range members {
		join = append(join, netip.AddrPortFrom(d.IP(), lab.GossipPort).String())
	}
	intruder.Rewrite(lab.DirectorOptions{PKI: other, Heartbeat: emulatedHeartbeat, Election: emulatedHeartbeat, Lease: emulatedLease}, join)
	intruder.Start()
	// It runs but is no part of the cluster: agreement is checked without
	// it.
	c.SetAway(intruder, true)

	lab.Poll(t, 60*time.Second, 250*time.Millisecond, "a director to log the intruder's undecryptable gossip", func() (bool, error) {
		return anyLogHas(members, "no installed keys could decrypt the message"), nil
	})
	lab.Poll(t, 60*time.Second, 250*time.Millisecond, "the intruder to log that it cannot join gossip", func() (bool, error) {
		return logHas(intruder, "cannot join gossip yet"), nil
	})
	t.Logf("gossip: the intruder's messages are dropped and logged on both sides")

	// Adding it to raft by hand is refused before it enters the
	// configuration: the leader dials it and its certificate does not
	// verify against the cluster CA.
	leader := c.WaitLeader(settleTimeout)
	intruderRaft := netip.AddrPortFrom(intruder.IP(), lab.RaftPort).String()
	out, err := leader.Ctl("member", "add", intruder.ID, intruderRaft)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("member add of a director from another CA: %v, %q; want a refusal naming the certificate", err, out)
	}
	lab.Poll(t, 10*time.Second, 250*time.Millisecond, "the refused raft peer in a director's log", func() (bool, error) {
		return anyLogHas(members, "refused raft peer", intruderRaft, "reason="), nil
	})
	t.Logf("raft: member add of the intruder refused: %v", firstLine(err.Error()))

	// The intruder talks raft to the leader with its own certificate: the
	// handshake fails (TLS 1.3 reports a refused client certificate at the
	// first read) and the leader logs who and why.
	cert, err := tls.LoadX509KeyPair(filepath.Join(other, intruder.ID+".pem"), filepath.Join(other, intruder.ID+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(c.Opts.Director.PKI, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	leaderRaft := netip.AddrPortFrom(leader.IP(), lab.RaftPort).String()
	err = intruder.Do(func() error {
		d := &net.Dialer{Timeout: 10 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", leaderRaft, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool,
			ServerName: "director.directorate", MinVersion: tls.VersionTLS13})
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		return err
	})
	if err == nil {
		t.Fatalf("raft on %s answered a director of another CA", leader.ID)
	}
	lab.Poll(t, 10*time.Second, 250*time.Millisecond, "the refused raft connection in the leader's log", func() (bool, error) {
		return logHas(leader, "refused raft connection", "remote="+intruder.IP().String()+":", "reason="), nil
	})
	t.Logf("raft: a connection from %s with the intruder's certificate refused: %v", intruder.ID, err)

	for _, d := range members {
		for _, id := range memberIDs(t, d) {
			if id == intruder.ID {
				t.Fatalf("%s lists the intruder as a member", d.ID)
			}
		}
	}
	if logHas(intruder, "became leader") || logHas(intruder, "entering leader state") {
		t.Fatalf("the intruder became a leader of its own")
	}
}

// clients tries configuration changes with too little authority through
// the leader and a follower.
func clients(t *testing.T, c *lab.Cluster, members []*lab.Director, readTok string) {
	t.Helper()
	leader := c.WaitLeader(settleTimeout)
	var follower *lab.Director
	for _, d := range members {
		if d != leader {
			follower = d
			break
		}
	}
	op := leader.OperatorCredentials()
	otherCA := filepath.Join(c.Opts.Dir, "other-pki", "ca.pem")
	denials401 := func() int { return countLogs(members, "request denied", "status=401") }
	denials403 := func() int { return countLogs(members, "request denied", "status=403") }
	handshakes := func() int { return countLogs(members, "TLS handshake error") }
	n401, n403, nTLS := denials401(), denials403(), handshakes()
	for _, tc := range []struct {
		name  string
		creds lab.Credentials
		want  string
	}{
		{"no token", lab.Credentials{CA: op.CA}, "missing API token"},
		{"a forged token", lab.Credentials{CA: op.CA, Token: "abcdefabcdef.bm90LWEtcmVhbC1zZWNyZXQtYXQtYWxsLW5vLW5vLW5vLW5v"}, "API token"},
		{"a read token", lab.Credentials{CA: op.CA, Token: readTok}, "role read"},
		{"the operator token, trusting another CA", lab.Credentials{CA: otherCA, TokenFile: op.TokenFile}, "certificate"},
	} {
		for _, d := range []*lab.Director{leader, follower} {
			out, err := d.CtlAs(tc.creds, "vip", "add", "evil", "198.51.100.1/32")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s through %s: %v, %q; want a refusal saying %q", tc.name, d.ID, err, out, tc.want)
				continue
			}
			t.Logf("%s through %s: refused: %s", tc.name, d.ID, lastLine(err.Error()))
		}
	}
	// A read token still reads: the refusals are about authority, not a
	// broken client.
	if _, err := follower.CtlAs(lab.Credentials{CA: op.CA, Token: readTok}, "vip", "ls"); err != nil {
		t.Fatalf("a read token cannot read: %v", err)
	}
	lab.Poll(t, 10*time.Second, 250*time.Millisecond, "every refusal in the directors' logs", func() (bool, error) {
		// no token and the forged one through two directors: 4 × 401;
		// the read token through two: 2 × 403; another CA: 2 handshakes.
		return denials401()-n401 >= 4 && denials403()-n403 >= 2 && handshakes()-nTLS >= 2, nil
	})
}

func countLogs(ds []*lab.Director, subs ...string) int {
	n := 0
	for _, d := range ds {
		n += logCount(d, subs...)
	}
	return n
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// moreAnswers waits until cl has n more answers than now.
func moreAnswers(t *testing.T, cl *lab.Client, n int) {
	t.Helper()
	answered := func() int {
		k := 0
		for _, s := range cl.Samples() {
			if s.OK() {
				k++
			}
		}
		return k
	}
	k0 := answered()
	lab.Poll(t, time.Duration(n)*time.Second, 100*time.Millisecond, fmt.Sprintf("%d more answers", n), func() (bool, error) {
		return answered() >= k0+n, nil
	})
}

// keyringLs is `clusterctl keyring ls -o json`: the API's envelope.
type keyringLs struct {
	Data api.KeyringStatus `json:"data"`
}

// memberWatch samples `member ls` on every director until stopped and
// keeps every sight of a member that is not alive.
type memberWatch struct {
	stop    chan struct{}
	done    sync.WaitGroup
	mu      sync.Mutex
	samples int
	errs    int
	flaps   []string
}

func watchMembers(ds []*lab.Director, every time.Duration) *memberWatch {
	w := &memberWatch{stop: make(chan struct{})}
	for _, d := range ds {
		w.done.Add(1)
		go func() {
			defer w.done.Done()
			for {
				out, err := d.Ctl("member", "ls", "-o", "json")
				var env struct {
					Data []struct {
						ID     string `json:"id"`
						Gossip string `json:"gossip"`
					} `json:"data"`
				}
				w.mu.Lock()
				if err != nil || json.Unmarshal([]byte(out), &env) != nil {
					// A director busy in an election does not answer;
					// that is not a membership flap.
					w.errs++
				} else {
					w.samples++
					for _, m := range env.Data {
						if m.Gossip != "alive" {
							w.flaps = append(w.flaps, fmt.Sprintf("%s %s sees %s %q", time.Now().Format("15:04:05.000"), d.ID, m.ID, m.Gossip))
						}
					}
				}
				w.mu.Unlock()
				select {
				case <-w.stop:
					return
				case <-time.After(every):
				}
			}
		}()
	}
	return w
}

func (w *memberWatch) Stop() {
	close(w.stop)
	w.done.Wait()
}

// rotate rotates the gossip key under client traffic and restarts a
// follower afterwards.
func rotate(t *testing.T, c *lab.Cluster, members []*lab.Director) {
	t.Helper()
	leader := c.WaitSettled(settleTimeout, webVIP)
	ls := func() keyringLs {
		t.Helper()
		var k keyringLs
		out := c.WaitLeader(settleTimeout).MustCtl("keyring", "ls", "-o", "json")
		if err := json.Unmarshal([]byte(out), &k); err != nil {
			t.Fatalf("keyring ls: %v: %s", err, out)
		}
		return k
	}
	old := ls().Data.Primary
	suspicions := func() int {
		return countLogs(members, "memberlist: Suspect") + countLogs(members, "gossip member declared dead")
	}
	suspected0 := suspicions()

	cl := startClient(t, c, webAddr)
	t0 := time.Now()
	cl.WaitAnswer(t, t0, 10*time.Second, "the client's first answer", func(string) bool { return true })
	w := watchMembers(members, 300*time.Millisecond)

	keyFile := filepath.Join(c.Opts.Dir, "new-gossip.key")
	if err := os.WriteFile(keyFile, []byte(leader.MustCtl("keyring", "generate")), 0o600); err != nil {
		t.Fatal(err)
	}
	leader.MustCtl("keyring", "install", "--key-file", keyFile)
	var next string
	lab.Poll(t, 30*time.Second, 250*time.Millisecond, "every director to announce the new key", func() (bool, error) {
		for _, key := range ls().Data.Keys {
			if key.Fingerprint != old {
				next = key.Fingerprint
				return len(key.MissingOn) == 0, nil
			}
		}
		return false, nil
	})
	c.WaitLeader(settleTimeout).MustCtl("keyring", "use", next)
	lab.Poll(t, 30*time.Second, 250*time.Millisecond, "the new key primary everywhere", func() (bool, error) {
		return ls().Data.Primary == next, nil
	})
	// Some gossip rounds with the new primary and the old key still
	// accepted, before the old one goes: a hundred more answers, about
	// two seconds.
	moreAnswers(t, cl, 100)
	c.WaitLeader(settleTimeout).MustCtl("keyring", "remove", old)
	lab.Poll(t, 30*time.Second, 250*time.Millisecond, "the old key gone everywhere", func() (bool, error) {
		k := ls()
		return k.Data.Replicated && k.Data.Primary == next && len(k.Data.Keys) == 1 && len(k.Data.Keys[0].MissingOn) == 0, nil
	})
	rotated := time.Since(t0)
	// Keep sampling a while after the rotation: a director that could not
	// decrypt would be suspected, and then declared dead, in the time the
	// client takes for 400 more answers (about eight seconds).
	moreAnswers(t, cl, 400)
	w.Stop()
	cl.Stop()

	ss := cl.Since(t0)
	var failed []string
	for _, s := range ss {
		if !s.OK() {
			failed = append(failed, fmt.Sprintf("%s: %s", s.At.Format("15:04:05.000"), s.Err))
		}
	}
	t.Logf("rotation took %s; %d requests, %d failed; member ls sampled %d times (%d unanswered)",
		rotated.Round(time.Millisecond), len(ss), len(failed), w.samples, w.errs)
	// Noise: under emulation a leader now and then steps down for a VM
	// stall (with or without a rotation), and the client loses a few
	// requests while the VIP moves. More than 1% is not noise.
	if len(ss) == 0 || len(failed)*100 > len(ss) {
		t.Fatalf("%d of %d requests failed during the rotation:\n%s", len(failed), len(ss), strings.Join(failed, "\n"))
	}
	if len(w.flaps) > 0 {
		t.Fatalf("membership flapped during the rotation:\n%s", strings.Join(w.flaps, "\n"))
	}
	if w.samples == 0 {
		t.Fatalf("member ls never answered during the rotation")
	}
	if n := suspicions() - suspected0; n > 0 {
		t.Fatalf("%d suspicions or deaths logged during the rotation", n)
	}

	// A follower restarted now has only the removed key in its
	// gossip_key_file: it must come back on the persisted keyring.
	leader = c.WaitLeader(settleTimeout)
	var follower *lab.Director
	for _, d := range members {
		if d != leader {
			follower = d
			break
		}
	}
	follower.Kill()
	follower.Start()
	lab.Poll(t, formTimeout, 500*time.Millisecond, follower.ID+" back as a voter, alive in gossip", func() (bool, error) {
		l, st, ok := c.AgreedLeader()
		if !ok || st.Voters != 3 {
			return false, nil
		}
		out, err := l.Ctl("member", "ls", "-o", "json")
		return err == nil && strings.Count(out, `"alive"`) == 3, nil
	})
	k := ls()
	if len(k.Data.Keys) != 1 || k.Data.Keys[0].Fingerprint != next || len(k.Data.Keys[0].MissingOn) != 0 {
		t.Fatalf("after %s's restart the keyring is %+v; want only %s, on every director", follower.ID, k.Data, next)
	}
	t.Logf("%s restarted and rejoined with the rotated key", follower.ID)
}
