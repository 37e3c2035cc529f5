package smoke

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCertificateRotationBySIGHUP rotates the cluster CA and every
// certificate on three running directors with SIGHUP alone, as
// docs/security.md describes: no restart, so no failover. Afterwards the
// API serves the new certificates, writes are forwarded between
// directors, a new election (raft connections made after the rotation)
// succeeds, and a director restarted on the new files rejoins.
func TestCertificateRotationBySIGHUP(t *testing.T) {
	c := newCluster(t, 3)
	for _, d := range c.directors {
		c.start(d)
	}
	leader := c.waitLeader(30 * time.Second)
	c.mustCtl(leader, "vip", "add", "web-vip", "192.0.2.10/24")
	term := func() uint64 {
		st, ok := c.status(leader)
		if !ok {
			t.Fatalf("no status from %s", leader.id)
		}
		return st.Term
	}
	term0 := term()

	var ids []string
	for _, d := range c.directors {
		ids = append(ids, d.id)
	}
	next := filepath.Join(t.TempDir(), "pki")
	tlsInit(t, next, ids)
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	oldCA, newCA := read(filepath.Join(c.pki, "ca.pem")), read(filepath.Join(next, "ca.pem"))
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(c.pki, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	reloads, writes := 0, 0
	hup := func(step string) {
		t.Helper()
		reloads++
		for _, d := range c.directors {
			if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatalf("signal %s: %v", d.id, err)
			}
			waitFor(t, 10*time.Second, d.id+" to reload for "+step, func() bool {
				return logCount(d, "reloaded the TLS certificate and CA") == reloads
			})
		}
		// Every director answers, and a write through a follower is
		// forwarded to the leader.
		for _, d := range c.directors {
			if _, ok := c.status(d); !ok {
				t.Fatalf("%s does not answer after %s", d.id, step)
			}
		}
		writes++
		c.mustCtl(follower(c, leader), "service", "add", fmt.Sprintf("s%d", writes), "--vip", "web-vip", "--port", fmt.Sprint(8000+writes))
	}

	// 1. Trust both CAs.
	write("ca.pem", append(append([]byte{}, oldCA...), newCA...))
	hup("both CAs trusted")
	// 2. Certificates of the new CA, for the directors and clusterctl.
	for _, id := range append(ids, "clusterctl") {
		write(id+".pem", read(filepath.Join(next, id+".pem")))
		write(id+"-key.pem", read(filepath.Join(next, id+"-key.pem")))
	}
	hup("new certificates")
	// 3. Drop the old CA.
	write("ca.pem", newCA)
	hup("the old CA dropped")
	if got := term(); got != term0 {
		t.Fatalf("the term moved from %d to %d during the rotation: there was an election", term0, got)
	}

	// The API now presents a certificate only the new CA verifies.
	oldOnly := filepath.Join(t.TempDir(), "old-ca.pem")
	if err := os.WriteFile(oldOnly, oldCA, 0o644); err != nil {
		t.Fatal(err)
	}
	env := append([]string{}, c.env...)
	env = append(env, "DIRECTORATE_CA="+oldOnly)
	if _, errs, code := c.ctlEnv(leader, env, "status"); code == 0 || !strings.Contains(errs, "unknown authority") {
		t.Fatalf("clusterctl trusting only the old CA: exit %d, %q; want a refused certificate", code, errs)
	}

	// A new election needs raft connections between the followers, made
	// with the new material.
	old := leader
	c.stop(old)
	leader = c.waitLeader(30 * time.Second)
	c.mustCtl(leader, "service", "add", "after", "--vip", "web-vip", "--port", "9000")
	// Restarted, the old leader loads the new files and catches up.
	c.start(old)
	waitFor(t, 30*time.Second, old.id+" to catch up after its restart", func() bool {
		st, ok := c.status(old)
		if !ok || st.Leader != leader.id {
			return false
		}
		_, _, code := c.ctl(old, "service", "show", "after")
		return code == 0
	})
	t.Logf("rotated with %d SIGHUPs per director in term %d; %s led after the old leader stopped, and %s rejoined", reloads, term0, leader.id, old.id)
}

// follower returns a running director other than leader.
func follower(c *cluster, leader *director) *director {
	for _, d := range c.directors {
		if d != leader && d.cmd != nil {
			return d
		}
	}
	c.t.Fatal("no follower running")
	return nil
}
