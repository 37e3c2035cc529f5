package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/directorate/directorate/api"
)

// directorName is the DNS name every director certificate carries. Raft
// peers must present it, so a certificate the cluster CA issued to a
// client (clusterctl) cannot be used to join the Raft group; directors
// dial each other's raft and API with it as the server name, so the
// certificates need no IP SANs for director-to-director traffic.
const directorName = api.DirectorServerName

// gossipKeyLen is the length of a memberlist key for AES-256-GCM.
const gossipKeyLen = 32

// tlsInitHint says how to get the files a secure configuration needs.
const tlsInitHint = "run `clusterd tls init -dir DIR -nodes d1,d2,d3` to create a CA, certificates and a gossip key " +
	"and print the config lines, or set insecure: true for a plaintext development cluster"

// validateSecurity checks that the configuration is either secure (TLS
// files and a gossip key named) or explicitly insecure. It reads no
// files: loadClusterTLS and loadGossipKey do, at start and in
// -check-config.
func (c *config) validateSecurity() []error {
	var errs []error
	if c.Insecure {
		if c.TLS != (tlsFiles{}) {
			errs = append(errs, errors.New("tls: must be empty with insecure: true, which turns TLS off; remove one of them"))
		}
		if c.GossipKeyFile != "" {
			errs = append(errs, errors.New("gossip_key_file: must be empty with insecure: true, which turns gossip encryption off; remove one of them"))
		}
		return errs
	}
	for _, f := range []struct{ field, v string }{{"tls.ca", c.TLS.CA}, {"tls.cert", c.TLS.Cert}, {"tls.key", c.TLS.Key}, {"gossip_key_file", c.GossipKeyFile}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("%s: is required: directors talk over mutual TLS with encrypted gossip; %s", f.field, tlsInitHint))
		}
	}
	return errs
}

// clusterTLS is a director's TLS material, the cluster CA and its own
// certificate, behind an atomic pointer: Reload swaps in new files (on
// SIGHUP), and every handshake after it uses them, so a certificate or CA
// rotates without a restart, and so without a failover on the leader.
type clusterTLS struct {
	files tlsFiles
	cur   atomic.Pointer[tlsMaterial]
}

// tlsMaterial is one consistent load of the tls: files.
type tlsMaterial struct {
	pool *x509.CertPool
	cert tls.Certificate
	// cas counts the CA certificates, for the reload log.
	cas int
}

// loadClusterTLS reads and checks the files named under tls: (see
// loadTLSMaterial).
func loadClusterTLS(f tlsFiles) (*clusterTLS, error) {
	m, err := loadTLSMaterial(f)
	if err != nil {
		return nil, err
	}
	c := &clusterTLS{files: f}
	c.cur.Store(m)
	return c, nil
}

// Reload reads the files again and, if they pass the checks loading does,
// uses them from the next handshake on. On error the material in use is
// kept, so a half-copied file cannot take a director off the cluster.
// Connections already open keep the certificate they were made with.
func (c *clusterTLS) Reload() (*x509.Certificate, error) {
	m, err := loadTLSMaterial(c.files)
	if err != nil {
		return nil, err
	}
	c.cur.Store(m)
	return m.cert.Leaf, nil
}

// reloadOnHangup reloads ct whenever hup delivers, until ctx ends, and
// logs what it loaded or why it kept the material in use. After a reload
// it calls revalidate with the new material's peer check, so connections
// a peer opened under the old CA do not outlive it. ct is nil in insecure
// mode, where there is nothing to reload.
func reloadOnHangup(ctx context.Context, ct *clusterTLS, hup <-chan os.Signal, log *slog.Logger, revalidate func(verify func(tls.ConnectionState) error) int) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if ct == nil {
			log.Info("SIGHUP: nothing to reload (insecure: true)")
			continue
		}
		leaf, err := ct.Reload()
		if err != nil {
			log.Error("SIGHUP: TLS files refused; the certificate and CA in use stay", "err", err)
			continue
		}
		closed := 0
		if revalidate != nil {
			closed = revalidate(ct.verifyPeer)
		}
		log.Info("SIGHUP: reloaded the TLS certificate and CA; new connections use them",
			"subject", leaf.Subject.CommonName, "serial", leaf.SerialNumber.Text(16),
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "cas", ct.cur.Load().cas,
			"raft_connections_closed", closed)
	}
}

// verifyPeer checks an open raft connection's peer against the current
// CA: a director certificate (directorName) that chains to it and has not
// expired. The peer may be either end, so either usage will do.
func (c *clusterTLS) verifyPeer(cs tls.ConnectionState) error {
	return c.verifyChain(cs, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
}

// verifyChain verifies the peer's chain against the current cluster CA,
// naming directorName, for one of usages.
func (c *clusterTLS) verifyChain(cs tls.ConnectionState, usages ...x509.ExtKeyUsage) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         c.cur.Load().pool,
		Intermediates: inter,
		DNSName:       directorName,
		KeyUsages:     usages,
	})
	return err
}

// loadTLSMaterial reads and checks the files named under tls:. The
// certificate must chain to the CA, be valid for both server and client
// use and name directorName, so a misconfigured director fails at start
// with a clear error instead of being refused by its peers.
func loadTLSMaterial(f tlsFiles) (*tlsMaterial, error) {
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("tls.ca: %w", err)
	}
	pool := x509.NewCertPool()
	cas := 0
	for rest := caPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		ca, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tls.ca: %s: certificate %d: %w", f.CA, cas+1, err)
		}
		pool.AddCert(ca)
		cas++
	}
	if cas == 0 {
		return nil, fmt.Errorf("tls.ca: %s holds no PEM certificate", f.CA)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("tls.cert/tls.key: %w", err)
	}
	leaf := cert.Leaf
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("tls.cert: intermediate certificate: %w", err)
		}
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
		if err != nil {
			return nil, fmt.Errorf("tls.cert: %s does not verify against tls.ca %s for %s: %w", f.Cert, f.CA, usageName(usage), err)
		}
	}
	if !slices.Contains(leaf.DNSNames, directorName) {
		return nil, fmt.Errorf("tls.cert: %s is not a director certificate: it must name %q (clusterd tls init issues such certificates)", f.Cert, directorName)
	}
	return &tlsMaterial{pool: pool, cert: cert, cas: cas}, nil
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageServerAuth {
		return "server use"
	}
	return "client use"
}

// raftServer is the raft listener's configuration: TLS 1.3 only, and a
// client certificate from the cluster CA that names directorName. Each
// handshake takes the material current at that moment.
func (c *clusterTLS) raftServer() *tls.Config {
	return c.serverConfig(tls.RequireAndVerifyClientCert, requireDirector)
}

// apiServer is the HTTPS API's configuration. A client certificate is
// verified against the cluster CA when one is presented, but not
// required: API requests are authorised by token.
func (c *clusterTLS) apiServer() *tls.Config {
	return c.serverConfig(tls.VerifyClientCertIfGiven, nil)
}

func (c *clusterTLS) serverConfig(auth tls.ClientAuthType, verify func(tls.ConnectionState) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := c.cur.Load()
			return &tls.Config{
				MinVersion:       tls.VersionTLS13,
				Certificates:     []tls.Certificate{m.cert},
				ClientAuth:       auth,
				ClientCAs:        m.pool,
				VerifyConnection: verify,
			}, nil
		},
	}
}

// raftClient is the configuration a director dials its raft peers with.
// The server name is directorName, not the peer's address, so a peer is
// any director the CA certified. crypto/tls takes its roots from a fixed
// RootCAs, so the chain is verified here instead, against the CA current
// at the handshake (a reloaded one included); the standard check is off
// only to be replaced by this one, which is as strict.
func (c *clusterTLS) raftClient() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: directorName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &c.cur.Load().cert, nil
		},
		InsecureSkipVerify: true,
		VerifyConnection:   c.verifyDirector,
	}
}

// apiClient is the configuration a director calls another director's
// API with (forwarding to the leader): it presents its own certificate
// and expects a director's.
func (c *clusterTLS) apiClient() *tls.Config { return c.raftClient() }

// verifyDirector verifies a server's chain against the current cluster
// CA, for server use, naming directorName: what crypto/tls would check
// with RootCAs and ServerName set.
func (c *clusterTLS) verifyDirector(cs tls.ConnectionState) error {
	if err := c.verifyChain(cs, x509.ExtKeyUsageServerAuth); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return nil
}

// requireDirector refuses a peer whose verified certificate does not
// name directorName, such as clusterctl's client certificate.
func requireDirector(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate presented")
	}
	if err := cs.PeerCertificates[0].VerifyHostname(directorName); err != nil {
		return fmt.Errorf("peer certificate %q is not a director certificate: %w", cs.PeerCertificates[0].Subject.CommonName, err)
	}
	return nil
}

// loadGossipKey reads a gossip key file: base64 of 32 bytes, surrounding
// white space ignored.
func loadGossipKey(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip_key_file: %w", err)
	}
	key, err := parseGossipKey(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("gossip_key_file %s: %w", path, err)
	}
	return key, nil
}

// parseGossipKey decodes a base64 gossip key and checks its length.
func parseGossipKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	if len(key) != gossipKeyLen {
		return nil, fmt.Errorf("key is %d bytes; AES-256-GCM needs %d", len(key), gossipKeyLen)
	}
	return key, nil
}

// checkSecurityFiles loads the TLS files and the gossip key a secure
// configuration names, for -check-config.
func (c *config) checkSecurityFiles() error {
	if c.Insecure {
		return nil
	}
	if _, err := loadTLSMaterial(c.TLS); err != nil {
		return err
	}
	_, err := loadGossipKey(c.GossipKeyFile)
	return err
}
