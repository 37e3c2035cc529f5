package main

import (
	"bytes"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func initDir(t *testing.T, nodes ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	var out bytes.Buffer
	if err := tlsInit(tlsInitOptions{dir: dir, nodes: nodes, validFor: 24 * 3600e9}, &out); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if !strings.Contains(out.String(), "cert: "+filepath.Join(dir, n+".pem")) {
			t.Fatalf("the printed config does not name %s's certificate:\n%s", n, out.String())
		}
	}
	return dir
}

func filesFor(dir, id string) tlsFiles {
	return tlsFiles{CA: filepath.Join(dir, caCertFile), Cert: filepath.Join(dir, id+".pem"), Key: filepath.Join(dir, id+"-key.pem")}
}

func TestTLSInitWritesAWorkingCluster(t *testing.T) {
	dir := initDir(t, "d1", "d2")
	for _, name := range []string{caKeyFile, "d1-key.pem", ctlKeyFile, gossipKeyFile, bootstrapTokenFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %s; secrets must be 0600", name, fi.Mode().Perm())
		}
	}
	if _, err := loadGossipKey(filepath.Join(dir, gossipKeyFile)); err != nil {
		t.Fatal(err)
	}
	d1, err := loadClusterTLS(filesFor(dir, "d1"))
	if err != nil {
		t.Fatal(err)
	}
	d2, err := loadClusterTLS(filesFor(dir, "d2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, d1.raftServer(), d2.raftClient()); err != nil {
		t.Fatalf("two directors of one CA: %v", err)
	}

	// clusterctl's certificate is from the same CA but is not a
	// director's: it is refused as a director, and raft refuses it.
	if _, err := loadClusterTLS(tlsFiles{CA: filesFor(dir, "d1").CA, Cert: filepath.Join(dir, ctlCertFile), Key: filepath.Join(dir, ctlKeyFile)}); err == nil {
		t.Fatal("clusterctl's certificate was accepted as a director certificate")
	}
	ctl, err := tls.LoadX509KeyPair(filepath.Join(dir, ctlCertFile), filepath.Join(dir, ctlKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	client := d2.raftClient()
	client.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &ctl, nil }
	if err := handshake(t, d1.raftServer(), client); err == nil || !strings.Contains(err.Error(), "not a director certificate") {
		t.Fatalf("raft accepted clusterctl's certificate: %v", err)
	}

	// A director of another cluster (another CA) is refused both ways.
	other := initDir(t, "d1")
	stranger, err := loadClusterTLS(filesFor(other, "d1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, d1.raftServer(), stranger.raftClient()); err == nil {
		t.Fatal("raft accepted a director of another CA")
	}
	if _, err := loadClusterTLS(tlsFiles{CA: filesFor(dir, "d1").CA, Cert: filesFor(other, "d1").Cert, Key: filesFor(other, "d1").Key}); err == nil ||
		!strings.Contains(err.Error(), "does not verify against tls.ca") {
		t.Fatalf("a certificate of another CA: got %v", err)
	}
}

func TestTLSInitAddsDirectorsWithTheSameCA(t *testing.T) {
	dir := initDir(t, "d1")
	ca, _ := os.ReadFile(filepath.Join(dir, caCertFile))
	var out bytes.Buffer
	if err := tlsInit(tlsInitOptions{dir: dir, nodes: []string{"d1", "d4"}, validFor: 3600e9}, &out); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, caCertFile)); !bytes.Equal(ca, again) {
		t.Fatal("a second run replaced the CA")
	}
	d1, err := loadClusterTLS(filesFor(dir, "d1"))
	if err != nil {
		t.Fatal(err)
	}
	d4, err := loadClusterTLS(filesFor(dir, "d4"))
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, d4.raftServer(), d1.raftClient()); err != nil {
		t.Fatalf("a director added later: %v", err)
	}
}

func TestTLSInitRefusesBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    tlsInitOptions
		want string
	}{
		{"no dir", tlsInitOptions{nodes: []string{"d1"}, validFor: 1}, "-dir"},
		{"no nodes", tlsInitOptions{dir: t.TempDir(), validFor: 1}, "-nodes"},
		{"bad node", tlsInitOptions{dir: t.TempDir(), nodes: []string{"-x"}, validFor: 1}, "-nodes"},
		{"twice", tlsInitOptions{dir: t.TempDir(), nodes: []string{"d1", "d1"}, validFor: 1}, "twice"},
		{"ip of unknown node", tlsInitOptions{dir: t.TempDir(), nodes: []string{"d1"}, ips: ipFlags{"d9": nil}, validFor: 1}, "-ip"},
	} {
		if err := tlsInit(tc.o, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}

func TestSecureIsTheDefault(t *testing.T) {
	secure := strings.Replace(goodConfig, "insecure: true\n", "", 1)
	_, err := parseConfig([]byte(secure))
	for _, field := range []string{"tls.ca", "tls.cert", "tls.key", "gossip_key_file", "clusterd tls init"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Fatalf("a config without TLS: got %v, want it to name %s", err, field)
		}
	}
	dir := initDir(t, "d1")
	f := filesFor(dir, "d1")
	withTLS := secure + "tls: {ca: " + f.CA + ", cert: " + f.Cert + ", key: " + f.Key + "}\ngossip_key_file: " + filepath.Join(dir, gossipKeyFile) + "\n"
	cfg, err := parseConfig([]byte(withTLS))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.checkSecurityFiles(); err != nil {
		t.Fatal(err)
	}
	if _, err := parseConfig([]byte(withTLS + "insecure: true\n")); err == nil || !strings.Contains(err.Error(), "insecure") {
		t.Fatalf("tls with insecure: true: got %v", err)
	}
	cfg.GossipKeyFile = filepath.Join(dir, caCertFile)
	if err := cfg.checkSecurityFiles(); err == nil || !strings.Contains(err.Error(), "gossip_key_file") {
		t.Fatalf("a gossip key file that holds no key: got %v", err)
	}
}

// handshake runs a TLS 1.3 handshake between server and client over a
// pipe and returns the first error either side saw. In TLS 1.3 the
// server verifies the client's certificate after the client finished, so
// the client's read of the server's answer is what reports a refusal.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srvErr := make(chan error, 1)
	go func() {
		s := tls.Server(a, server)
		err := s.Handshake()
		if err == nil {
			_, err = s.Write([]byte{1})
		}
		srvErr <- err
		s.Close()
	}()
	c := tls.Client(b, client)
	err := c.Handshake()
	if err == nil {
		_, err = c.Read(make([]byte, 1))
	}
	if serr := <-srvErr; serr != nil {
		return serr
	}
	return err
}
