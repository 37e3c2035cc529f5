package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directorate/directorate/internal/testlog"
	"github.com/directorate/directorate/internal/testpoll"
)

// liveFiles copies a director's TLS files from a `tls init` directory to
// a directory of its own, as a director's /etc would hold them, so a test
// can replace them.
func liveFiles(t *testing.T, from tlsFiles) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	to := tlsFiles{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")}
	install(t, to, from.CA, from.Cert, from.Key)
	return to
}

// install writes the concatenation of caFiles to f.CA, and cert and key
// to f.Cert and f.Key.
func install(t *testing.T, f tlsFiles, ca, cert, key string, moreCAs ...string) {
	t.Helper()
	var bundle []byte
	for _, p := range append([]string{ca}, moreCAs...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		bundle = append(bundle, b...)
	}
	if err := os.WriteFile(f.CA, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	for dst, src := range map[string]string{f.Cert: cert, f.Key: key} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTLSReloadRotatesTheCAWithoutRestart walks docs/security.md's CA
// rotation with Reload instead of restarts: two directors of the old CA,
// then each trusting both CAs, then each on a certificate of the new CA,
// then trusting only the new one. Every step keeps them talking both ways.
func TestTLSReloadRotatesTheCAWithoutRestart(t *testing.T) {
	oldDir, newDir := initDir(t, "d1", "d2"), initDir(t, "d1", "d2")
	f1, f2 := liveFiles(t, filesFor(oldDir, "d1")), liveFiles(t, filesFor(oldDir, "d2"))
	d1, err := loadClusterTLS(f1)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := loadClusterTLS(f2)
	if err != nil {
		t.Fatal(err)
	}
	// The configurations are made once, as the daemon makes them at
	// start: a reload must reach them.
	s1, c1, s2, c2, api1, apic2 := d1.raftServer(), d1.raftClient(), d2.raftServer(), d2.raftClient(), d1.apiServer(), d2.apiClient()
	talk := func(step string) {
		t.Helper()
		if err := handshake(t, s1, c2); err != nil {
			t.Fatalf("%s: d2 to d1: %v", step, err)
		}
		if err := handshake(t, s2, c1); err != nil {
			t.Fatalf("%s: d1 to d2: %v", step, err)
		}
		if err := handshake(t, api1, apic2); err != nil {
			t.Fatalf("%s: d2 to d1's API: %v", step, err)
		}
	}
	reload := func(c *clusterTLS) {
		t.Helper()
		if _, err := c.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	talk("old CA")

	// A new certificate of the new CA on d1 before d2 trusts that CA:
	// Reload refuses it, since d1's own bundle does not have the new CA
	// yet, and d1 keeps talking with what it had.
	install(t, f1, filesFor(oldDir, "d1").CA, filesFor(newDir, "d1").Cert, filesFor(newDir, "d1").Key)
	if _, err := d1.Reload(); err == nil || !strings.Contains(err.Error(), "does not verify against tls.ca") {
		t.Fatalf("reload of a certificate the CA file does not cover: %v", err)
	}
	talk("after a refused reload")

	for _, step := range []struct {
		name string
		ca   []string // the CA bundle: files concatenated
		dir  string   // whose certificates
	}{
		{"both CAs trusted", []string{filesFor(oldDir, "d1").CA, filesFor(newDir, "d1").CA}, oldDir},
		{"certificates of the new CA", []string{filesFor(oldDir, "d1").CA, filesFor(newDir, "d1").CA}, newDir},
		{"the new CA alone", []string{filesFor(newDir, "d1").CA}, newDir},
	} {
		for _, d := range []struct {
			id string
			f  tlsFiles
			c  *clusterTLS
		}{{"d1", f1, d1}, {"d2", f2, d2}} {
			install(t, d.f, step.ca[0], filesFor(step.dir, d.id).Cert, filesFor(step.dir, d.id).Key, step.ca[1:]...)
			reload(d.c)
			// Half the cluster done, half not: they still talk.
			talk(step.name + ", " + d.id + " reloaded")
		}
	}

	// A director still on the old CA alone is now refused.
	stale, err := loadClusterTLS(filesFor(oldDir, "d2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, s1, stale.raftClient()); err == nil {
		t.Fatal("a director of the retired CA was accepted")
	}
	// The dialler's own check refuses it (handshake reports the
	// server's side: the dialler's bad_certificate alert).
	if err := handshake(t, stale.raftServer(), c1); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("dialling a director of the retired CA: %v", err)
	}
	// Open raft connections are checked again after a reload: the
	// retired CA's director fails, a rotated one passes.
	if err := d1.verifyPeer(tlsState(t, stale)); err == nil {
		t.Fatal("an open connection from a director of the retired CA would survive the reload")
	}
	if err := d1.verifyPeer(tlsState(t, d2)); err != nil {
		t.Fatalf("an open connection from a rotated director would be cut: %v", err)
	}
	m := d1.cur.Load()
	if err := d1.verifyDirector(tlsState(t, stale)); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("verifying a director of the retired CA: %v (%d CAs trusted)", err, m.cas)
	}
}

func TestTLSReloadKeepsTheMaterialInUseOnBadFiles(t *testing.T) {
	dir := initDir(t, "d1", "d2")
	f1 := liveFiles(t, filesFor(dir, "d1"))
	d1, err := loadClusterTLS(f1)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := loadClusterTLS(filesFor(dir, "d2"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, content, want string
	}{
		{"truncated key", f1.Key, "-----BEGIN EC PRIVATE KEY-----\n", "tls.cert/tls.key"},
		{"empty CA", f1.CA, "", "tls.ca"},
		{"garbage certificate", f1.Cert, "not PEM", "tls.cert/tls.key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.WriteFile(tc.file, good, 0o600) })
			if err := os.WriteFile(tc.file, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := d1.Reload(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("reload: %v, want an error naming %s", err, tc.want)
			}
			if err := handshake(t, d1.raftServer(), d2.raftClient()); err != nil {
				t.Fatalf("after a refused reload: %v", err)
			}
		})
	}
}

func TestReloadOnHangupLogsWhatItLoaded(t *testing.T) {
	dir := initDir(t, "d1")
	f := liveFiles(t, filesFor(dir, "d1"))
	ct, err := loadClusterTLS(f)
	if err != nil {
		t.Fatal(err)
	}
	log, sink := testlog.New(t)
	hup := make(chan os.Signal, 1)
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	revalidated := make(chan error, 2)
	revalidate := func(verify func(tls.ConnectionState) error) int {
		revalidated <- verify(tlsState(t, ct))
		return 1
	}
	go func() { defer close(done); reloadOnHangup(ctx, ct, hup, log, revalidate) }()

	hup <- syscall.SIGHUP
	testpoll.Until(t, 10*time.Second, time.Millisecond, "the reload's log line", func() bool {
		return sink.Count("reloaded the TLS certificate and CA", "subject=", "raft_connections_closed=1") == 1
	})
	if err := <-revalidated; err != nil {
		t.Fatalf("after the reload, open connections were checked with a check that refuses this very director: %v", err)
	}
	if err := os.WriteFile(f.CA, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	testpoll.Until(t, 10*time.Second, time.Millisecond, "the refusal's log line", func() bool {
		return sink.Count("TLS files refused", "tls.ca") == 1
	})
	cancel()
	<-done
	if len(revalidated) != 0 {
		t.Fatal("a refused reload re-checked the open connections")
	}

	// Insecure mode: nothing to reload, and the daemon carries on.
	ctx, cancel = context.WithCancel(t.Context())
	done = make(chan struct{})
	go func() { defer close(done); reloadOnHangup(ctx, nil, hup, log, nil) }()
	hup <- syscall.SIGHUP
	testpoll.Until(t, 10*time.Second, time.Millisecond, "the insecure-mode log line", func() bool {
		return sink.Count("nothing to reload") == 1
	})
	cancel()
	<-done
}

// tlsState is what a dialler sees of c's certificate chain.
func tlsState(t *testing.T, c *clusterTLS) tls.ConnectionState {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range c.cur.Load().cert.Certificate {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, cert)
	}
	return tls.ConnectionState{PeerCertificates: chain}
}
