package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/directorate/directorate/internal/pki"
)

// tlsInitUsage is printed for `clusterd tls` without a valid subcommand.
const tlsInitUsage = `Usage: clusterd tls init -dir DIR -nodes d1,d2,d3 [-ip d1=10.0.0.1 ...] [-days N]

Writes into DIR a cluster CA, a certificate for each director (server and
client use), a clusterctl client certificate, a gossip key and a bootstrap
operator token, then prints the configuration lines that use them.

Run it again with the same DIR to add directors or renew certificates:
the CA in DIR is reused, and only missing files are written (delete a
director's ID.pem and ID-key.pem to renew them). Nothing is ever overwritten.
`

// runTLS runs `clusterd tls SUBCOMMAND`.
func runTLS(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "init" {
		fmt.Fprint(stderr, tlsInitUsage)
		return 2
	}
	fset := flag.NewFlagSet("clusterd tls init", flag.ContinueOnError)
	fset.SetOutput(stderr)
	dir := fset.String("dir", "", "write the files into this `directory` (created 0700)")
	nodes := fset.String("nodes", "", "comma-separated director `IDs`, as their node_id")
	days := fset.Int("days", 825, "certificate lifetime in `days` (the CA gets ten times as long)")
	var ips ipFlags
	fset.Var(&ips, "ip", "add an IP SAN to a director certificate, `ID=ADDR`; repeatable")
	fset.Usage = func() {
		fmt.Fprint(stderr, tlsInitUsage+"\n")
		fset.PrintDefaults()
	}
	if err := fset.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "clusterd tls init: unexpected argument %q\n", fset.Arg(0))
		return 2
	}
	opts := tlsInitOptions{dir: *dir, ips: ips, validFor: time.Duration(*days) * 24 * time.Hour}
	if *nodes != "" {
		opts.nodes = strings.Split(*nodes, ",")
	}
	if err := tlsInit(opts, stdout); err != nil {
		fmt.Fprintf(stderr, "clusterd tls init: %v\n", err)
		return 1
	}
	return 0
}

// ipFlags collects -ip ID=ADDR.
type ipFlags map[string][]net.IP

func (f *ipFlags) String() string { return "" }

func (f *ipFlags) Set(v string) error {
	id, addr, ok := strings.Cut(v, "=")
	ip := net.ParseIP(addr)
	if !ok || ip == nil {
		return fmt.Errorf("want ID=ADDR such as d1=10.0.0.1, got %q", v)
	}
	if *f == nil {
		*f = ipFlags{}
	}
	(*f)[id] = append((*f)[id], ip)
	return nil
}

type tlsInitOptions struct {
	dir      string
	nodes    []string
	ips      ipFlags
	validFor time.Duration
}

// Files tls init writes, relative to its directory.
const (
	caCertFile         = "ca.pem"
	caKeyFile          = "ca-key.pem"
	ctlCertFile        = "clusterctl.pem"
	ctlKeyFile         = "clusterctl-key.pem"
	gossipKeyFile      = "gossip.key"
	bootstrapTokenFile = "bootstrap-token"
)

func tlsInit(o tlsInitOptions, out io.Writer) error {
	if o.dir == "" {
		return errors.New("-dir: is required")
	}
	if len(o.nodes) == 0 {
		return errors.New("-nodes: is required: the directors' node_id values, comma-separated")
	}
	seen := map[string]bool{}
	for _, n := range o.nodes {
		if !nodeIDPattern.MatchString(n) {
			return fmt.Errorf("-nodes: %q is not a valid node_id", n)
		}
		if seen[n] {
			return fmt.Errorf("-nodes: %q is listed twice", n)
		}
		seen[n] = true
	}
	for id := range o.ips {
		if !seen[id] {
			return fmt.Errorf("-ip: %q is not among -nodes", id)
		}
	}
	if o.validFor <= 0 {
		return errors.New("-days: must be positive")
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return fmt.Errorf("-dir: %w", err)
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return fmt.Errorf("-dir: %w", err)
	}
	path := func(name string) string { return filepath.Join(dir, name) }

	ca, err := loadOrCreateCA(path(caCertFile), path(caKeyFile), 10*o.validFor)
	if err != nil {
		return err
	}
	for _, id := range o.nodes {
		sans := append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, o.ips[id]...)
		req := pki.Request{CommonName: id, DNSNames: []string{directorName, id, "localhost"}, IPs: sans,
			Server: true, Client: true, ValidFor: o.validFor}
		if err := issueOnce(ca, req, path(id+".pem"), path(id+"-key.pem")); err != nil {
			return err
		}
	}
	if err := issueOnce(ca, pki.Request{CommonName: "clusterctl", Client: true, ValidFor: o.validFor},
		path(ctlCertFile), path(ctlKeyFile)); err != nil {
		return err
	}
	if !exists(path(gossipKeyFile)) {
		key := make([]byte, gossipKeyLen)
		if _, err := rand.Read(key); err != nil {
			return fmt.Errorf("generate gossip key: %w", err)
		}
		if err := writeNew(path(gossipKeyFile), []byte(encodeGossipKey(key)+"\n"), 0o600); err != nil {
			return err
		}
	}
	if !exists(path(bootstrapTokenFile)) {
		if _, err := writeBootstrapTokenFile(path(bootstrapTokenFile)); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, "Wrote the cluster CA, certificates, a gossip key and a bootstrap token to %s.\n", dir)
	fmt.Fprintf(out, "Keep %s offline once every director has its certificate; copy to each director only its own files.\n\n", caKeyFile)
	for _, id := range o.nodes {
		fmt.Fprintf(out, "# clusterd.yaml of %s\n", id)
		fmt.Fprintf(out, "tls:\n  ca: %s\n  cert: %s\n  key: %s\n", path(caCertFile), path(id+".pem"), path(id+"-key.pem"))
		fmt.Fprintf(out, "gossip_key_file: %s\n", path(gossipKeyFile))
		fmt.Fprintf(out, "bootstrap_token_file: %s\n\n", path(bootstrapTokenFile))
	}
	fmt.Fprintf(out, "# clusterctl\nexport DIRECTORATE_CA=%s DIRECTORATE_CERT=%s DIRECTORATE_KEY=%s\n",
		path(caCertFile), path(ctlCertFile), path(ctlKeyFile))
	fmt.Fprintf(out, "export DIRECTORATE_TOKEN_FILE=%s   # the first operator token; create others with 'clusterctl token create'\n", path(bootstrapTokenFile))
	return nil
}

func loadOrCreateCA(certPath, keyPath string, validFor time.Duration) (*pki.CA, error) {
	if exists(certPath) || exists(keyPath) {
		certPEM, err := os.ReadFile(certPath)
		if err != nil {
			return nil, fmt.Errorf("reuse the CA: %w", err)
		}
		keyPEM, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, fmt.Errorf("reuse the CA: %w (the CA key is needed to issue certificates)", err)
		}
		ca, err := pki.LoadCA(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("reuse the CA in %s: %w", certPath, err)
		}
		return ca, nil
	}
	ca, files, err := pki.NewCA("Directorate cluster CA", validFor)
	if err != nil {
		return nil, err
	}
	if err := writeNew(keyPath, files.KeyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(certPath, files.CertPEM, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// issueOnce issues a certificate unless its file exists already.
func issueOnce(ca *pki.CA, req pki.Request, certPath, keyPath string) error {
	if exists(certPath) {
		return nil
	}
	files, err := ca.Issue(req)
	if err != nil {
		return err
	}
	if err := writeNew(keyPath, files.KeyPEM, 0o600); err != nil {
		return err
	}
	return writeNew(certPath, files.CertPEM, 0o644)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// writeNew creates path with data, refusing to overwrite a file.
func writeNew(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
