package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/internal/pki"
	"github.com/directorate/directorate/internal/testlog"
	"github.com/directorate/directorate/internal/testpoll"
)

// testPKI is a cluster CA with a director certificate, a clusterctl
// client certificate, and a client certificate from another CA.
type testPKI struct {
	ct     *clusterTLS
	pool   *x509.CertPool
	client tls.Certificate
	rogue  tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, caIss, err := pki.NewCA("test cluster CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dirIss, err := ca.Issue(pki.Request{CommonName: "d1", DNSNames: []string{directorName}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		Server: true, Client: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	files := tlsFiles{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "d1.pem"), Key: filepath.Join(dir, "d1-key.pem")}
	for path, data := range map[string][]byte{files.CA: caIss.CertPEM, files.Cert: dirIss.CertPEM, files.Key: dirIss.KeyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ct, err := loadClusterTLS(files)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{ct: ct, pool: ct.cur.Load().pool}
	cli, err := ca.Issue(pki.Request{CommonName: "clusterctl", Client: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if p.client, err = tls.X509KeyPair(cli.CertPEM, cli.KeyPEM); err != nil {
		t.Fatal(err)
	}
	other, _, err := pki.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := other.Issue(pki.Request{CommonName: "clusterctl", DNSNames: []string{directorName}, Client: true, Server: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if p.rogue, err = tls.X509KeyPair(rogue.CertPEM, rogue.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return p
}

// httpClient trusts the cluster CA and presents certs.
func (p *testPKI) httpClient(certs ...tls.Certificate) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: p.pool, ServerName: directorName, Certificates: certs}
	return &http.Client{Transport: tr}
}

type secureDirector struct {
	*director
	log *testlog.Sink
}

// newSecureDirector serves the API over HTTPS with authentication on;
// each of opts may set up the server before it serves.
func newSecureDirector(t *testing.T, p *testPKI, leader bool, opts ...func(*server)) *secureDirector {
	t.Helper()
	f := fsm.New()
	c := &fakeConsensus{fsm: f, leader: leader}
	node := "d2"
	if leader {
		node = "d1"
	}
	log, sink := testlog.New(t)
	srv := newServer(node, f, c, noIPVS{}, log, 2*time.Second, security{ClientTLS: p.ct.apiClient()})
	for _, o := range opts {
		o(srv)
	}
	ts := httptest.NewUnstartedServer(srv.handler())
	ts.Config.ErrorLog = apiErrorLog(log)
	ts.TLS = p.ct.apiServer()
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return &secureDirector{director: &director{fsm: f, raft: c, url: ts.URL}, log: sink}
}

// addToken puts a token straight into d's state, as a committed entry would.
func (d *secureDirector) addToken(t *testing.T, id string, role fsm.Role) string {
	t.Helper()
	secret := strings.Repeat(id[:1], 40)
	if _, err := d.raft.Propose(context.Background(), fsm.CreateToken{Token: fsm.Token{ID: id, Role: role, Hash: hashSecret(secret)}}); err != nil {
		t.Fatal(err)
	}
	return id + "." + secret
}

func doAs(t *testing.T, hc *http.Client, method, url, token string, body any) result {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, index: resp.Header.Get(api.IndexHeader)}
	if resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: undecodable success body %q: %v", method, url, raw, err)
		}
	} else {
		var er api.ErrorResponse
		if err := json.Unmarshal(raw, &er); err != nil {
			t.Fatalf("%s %s: undecodable error body %q: %v", method, url, raw, err)
		}
		r.err = er.Error
	}
	return r
}

// endpoints is every route of the API, with a body where it takes one.
var endpoints = []struct {
	method, path string
	body         any
}{
	{"GET", "/v1/status", nil},
	{"GET", "/v1/vips", nil},
	{"POST", "/v1/vips", map[string]any{"name": "x", "prefix": "192.0.2.99/32"}},
	{"DELETE", "/v1/vips/web-vip", nil},
	{"GET", "/v1/services", nil},
	{"POST", "/v1/services", map[string]any{"name": "x", "vip": "web-vip", "protocol": "udp", "port": 53}},
	{"GET", "/v1/services/web", nil},
	{"PATCH", "/v1/services/web", map[string]any{"scheduler": "rr"}},
	{"DELETE", "/v1/services/web", nil},
	{"GET", "/v1/services/web/servers", nil},
	{"POST", "/v1/services/web/servers", map[string]any{"address": "10.1.0.9", "port": 80}},
	{"PATCH", "/v1/services/web/servers/10.1.0.1:80", map[string]any{"weight": 5}},
	{"DELETE", "/v1/services/web/servers/10.1.0.1:80", nil},
	{"GET", "/v1/snapshot", nil},
	{"POST", "/v1/snapshot", map[string]any{"vips": map[string]any{}, "services": map[string]any{}}},
	{"GET", "/v1/members", nil},
	{"POST", "/v1/members", map[string]any{"id": "d9", "address": "127.0.0.9:7901"}},
	{"DELETE", "/v1/members/d3", nil},
	{"POST", "/v1/leader/transfer", map[string]any{}},
	{"GET", "/v1/ipvs", nil},
	{"GET", "/v1/tokens", nil},
	{"POST", "/v1/tokens", map[string]any{"role": "read"}},
	{"DELETE", "/v1/tokens/ro", nil},
	{"GET", "/v1/keyring", nil},
	{"POST", "/v1/keyring", map[string]any{"key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}},
	{"PUT", "/v1/keyring/primary", map[string]any{"fingerprint": "0011223344556677"}},
	{"DELETE", "/v1/keyring/0011223344556677", nil},
	{"GET", "/v1/nonexistent", nil},
	{"PUT", "/v1/vips", nil},
}

// TestAuthorization sends every endpoint with no token, a malformed one,
// a wrong secret, a revoked one and a read token: each write is refused
// with 401 or 403 and a clear message, is logged with who and from where,
// and leaves the state and its index unchanged. An operator token passes.
func TestAuthorization(t *testing.T) {
	p := newTestPKI(t)
	d := newSecureDirector(t, p, true)
	hc := p.httpClient()
	op := d.addToken(t, "ops", fsm.RoleOperator)
	ro := d.addToken(t, "ro", fsm.RoleRead)
	opSecret := strings.TrimPrefix(op, "ops.")
	// Seed the secure director through its API, as an operator.
	for _, s := range []struct {
		path string
		body any
	}{
		{"/v1/vips", map[string]any{"name": "web-vip", "prefix": "192.0.2.10/24"}},
		{"/v1/services", map[string]any{"name": "web", "vip": "web-vip", "protocol": "tcp", "port": 80, "method": "dr"}},
		{"/v1/services/web/servers", map[string]any{"address": "10.1.0.1", "port": 80}},
	} {
		if r := doAs(t, hc, "POST", d.url+s.path, op, s.body); r.status != 200 {
			t.Fatalf("seed %s: %d %+v", s.path, r.status, r.err)
		}
	}

	creds := []struct {
		name, token string
		status      int
		msg         string
	}{
		{"none", "", 401, "missing API token"},
		{"malformed", "not-a-token", 401, "invalid API token"},
		{"wrong secret", "ops." + strings.Repeat("z", len(opSecret)), 401, "wrong secret"},
		{"unknown id", "gone." + opSecret, 401, "does not exist or was revoked"},
	}
	for _, e := range endpoints {
		for _, c := range creds {
			before, idx := snapshot(t, d.fsm), d.fsm.Index()
			r := doAs(t, hc, e.method, d.url+e.path, c.token, e.body)
			if r.status != c.status || r.err.Code != api.CodeDenied || !strings.Contains(r.err.Message, c.msg) {
				t.Errorf("%s %s with %s token: %d %+v, want %d %q", e.method, e.path, c.name, r.status, r.err, c.status, c.msg)
			}
			if snapshot(t, d.fsm) != before || d.fsm.Index() != idx {
				t.Errorf("%s %s with %s token changed the state", e.method, e.path, c.name)
			}
		}
		readable := (e.method == "GET") && !strings.HasPrefix(e.path, "/v1/tokens")
		before, idx := snapshot(t, d.fsm), d.fsm.Index()
		r := doAs(t, hc, e.method, d.url+e.path, ro, e.body)
		switch {
		case readable && r.status == 403:
			t.Errorf("%s %s with a read token: refused: %+v", e.method, e.path, r.err)
		case !readable && (r.status != 403 || !strings.Contains(r.err.Message, "needs role operator")):
			t.Errorf("%s %s with a read token: %d %+v, want 403", e.method, e.path, r.status, r.err)
		}
		if !readable && (snapshot(t, d.fsm) != before || d.fsm.Index() != idx) {
			t.Errorf("%s %s with a read token changed the state", e.method, e.path)
		}
	}
	if n := d.log.Count("request denied", "remote=127.0.0.1:", "method=POST", "path=/v1/vips", "status=403", "token=ro"); n != 1 {
		t.Errorf("read token's POST /v1/vips logged %d times, want once", n)
	}
	if n := d.log.Count("request denied", "method=POST path=/v1/vips ", "status=401"); n != len(creds) {
		t.Errorf("denials of POST /v1/vips logged %d times, want %d", n, len(creds))
	}
	for _, line := range d.log.Find("request denied") {
		if strings.Contains(line, opSecret) {
			t.Fatalf("a secret was logged: %s", line)
		}
	}
	// An operator token passes, and the commit names it.
	if r := doAs(t, hc, "PATCH", d.url+"/v1/services/web", op, map[string]any{"scheduler": "rr"}); r.status != 200 {
		t.Fatalf("operator PATCH: %d %+v", r.status, r.err)
	}
	if d.log.Count("committed", "cmd=service.update", "token=ops") != 1 {
		t.Error("the commit does not name the token that made it")
	}
	// Plain HTTP to the HTTPS port is refused by the server.
	resp, err := http.Get(strings.Replace(d.url, "https://", "http://", 1) + "/v1/status")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("plain HTTP answered %s", resp.Status)
		}
	}
}

// TestTokenAPI creates, lists, uses and revokes tokens through the API.
func TestTokenAPI(t *testing.T) {
	p := newTestPKI(t)
	d := newSecureDirector(t, p, true)
	op := d.addToken(t, "ops", fsm.RoleOperator)
	c, err := api.New(d.url, api.WithTLSConfig(&tls.Config{RootCAs: p.pool, ServerName: directorName}), api.WithToken(op))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	nt, _, err := c.CreateToken(ctx, api.TokenCreate{Role: "read", Description: "grafana"})
	if err != nil {
		t.Fatal(err)
	}
	if nt.Role != "read" || !strings.HasPrefix(nt.Token, nt.ID+".") || nt.Created.IsZero() {
		t.Fatalf("created %+v", nt)
	}
	ro, err := api.New(d.url, api.WithTLSConfig(&tls.Config{RootCAs: p.pool, ServerName: directorName}), api.WithToken(nt.Token))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ro.VIPs(ctx); err != nil {
		t.Fatalf("read with the new token: %v", err)
	}
	var ae *api.Error
	if _, err := ro.AddVIP(ctx, fsm.VIP{Name: "x", Prefix: netip.MustParsePrefix("192.0.2.1/32")}); !errors.As(err, &ae) || ae.Status != 403 {
		t.Fatalf("write with a read token: %v", err)
	}
	if _, _, err := c.CreateToken(ctx, api.TokenCreate{Role: "admin"}); !errors.As(err, &ae) || ae.Field != "token.role" {
		t.Fatalf("unknown role: %v", err)
	}
	list, _, err := c.Tokens(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("ls: %+v %v", list, err)
	}
	raw := doAs(t, p.httpClient(), "GET", d.url+"/v1/tokens", op, nil)
	if s := string(raw.body.Data); strings.Contains(s, "hash") || strings.Contains(s, strings.Split(nt.Token, ".")[1]) {
		t.Fatalf("token ls shows secrets or hashes: %s", s)
	}
	if _, err := d.raft.Propose(ctx, fsm.InstallKey{Key: bytes.Repeat([]byte{7}, 32)}); err != nil {
		t.Fatal(err)
	}
	snap := doAs(t, p.httpClient(), "GET", d.url+"/v1/snapshot", nt.Token, nil)
	if s := string(snap.body.Data); snap.status != 200 || strings.Contains(s, "tokens") || strings.Contains(s, "keyring") {
		t.Fatalf("snapshot for a read token carries credentials: %d %s", snap.status, s)
	}
	if _, err := c.RevokeToken(ctx, "ops"); !errors.As(err, &ae) || ae.Status != 409 {
		t.Fatalf("revoke the last operator token: %v", err)
	}
	if _, err := c.RevokeToken(ctx, nt.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ro.VIPs(ctx); !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("read with a revoked token: %v", err)
	}
}

// TestForwardedRequestIsReauthorized: a follower checks the token and
// forwards it; the leader checks it again against its own, newer table.
func TestForwardedRequestIsReauthorized(t *testing.T) {
	p := newTestPKI(t)
	leader, follower := newSecureDirector(t, p, true), newSecureDirector(t, p, false)
	u, _ := url.Parse(leader.url)
	follower.raft.leaderID, follower.raft.leaderAPI = "d1", u.Host
	hc := p.httpClient()
	both := leader.addToken(t, "ops", fsm.RoleOperator)
	follower.addTokenFollower(t, "ops", fsm.RoleOperator)
	// "stale" was revoked on the leader; the follower has not heard yet.
	stale := follower.addTokenFollower(t, "stale", fsm.RoleOperator)
	body := map[string]any{"name": "v", "prefix": "192.0.2.10/32"}
	if r := doAs(t, hc, "POST", follower.url+"/v1/vips", stale, body); r.status != 401 {
		t.Fatalf("stale token through the follower: %d %+v", r.status, r.err)
	}
	if leader.log.Count("request denied", "token=stale", "forwarded_by=d2") != 1 {
		t.Error("the leader did not log the forwarded denial")
	}
	if r := doAs(t, hc, "POST", follower.url+"/v1/vips", both, body); r.status != 200 {
		t.Fatalf("forwarded write: %d %+v", r.status, r.err)
	}
	if leader.fsm.Index() == 0 {
		t.Fatal("the leader did not commit the forwarded write")
	}
}

// addTokenFollower adds a token to a follower's state, which its fake
// consensus would refuse to propose.
func (d *secureDirector) addTokenFollower(t *testing.T, id string, role fsm.Role) string {
	t.Helper()
	d.raft.mu.Lock()
	d.raft.leader = true
	d.raft.mu.Unlock()
	defer func() { d.raft.mu.Lock(); d.raft.leader = false; d.raft.mu.Unlock() }()
	return d.addToken(t, id, role)
}

// TestBootstrapToken: the first operator token comes with a client
// certificate from the cluster CA, once.
func TestBootstrapToken(t *testing.T) {
	p := newTestPKI(t)
	d := newSecureDirector(t, p, true)
	url := d.url + bootstrapPath
	if r := doAs(t, p.httpClient(), "POST", url, "", map[string]any{}); r.status != 401 || !strings.Contains(r.err.Message, "client certificate") {
		t.Fatalf("without a certificate: %d %+v", r.status, r.err)
	}
	// Go's client would not even offer a certificate the server's CA
	// list does not name; a hostile client does.
	rogue := p.httpClient()
	rogue.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &p.rogue, nil
	}
	req, _ := http.NewRequest("POST", url, strings.NewReader("{}"))
	if resp, err := rogue.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a certificate from another CA was accepted: %s", resp.Status)
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a certificate from another CA: %v", err)
	}
	// The server logs the refused handshake, with the client's address.
	testpoll.Until(t, 5*time.Second, 10*time.Millisecond, "the refused handshake in the log", func() bool {
		return d.log.Count("TLS handshake error from 127.0.0.1:", "unknown authority") > 0
	})
	if d.fsm.Index() != 0 {
		t.Fatal("refused bootstraps changed the state")
	}
	hc := p.httpClient(p.client)
	cli, err := api.New(d.url, api.WithTLSConfig(&tls.Config{RootCAs: p.pool, ServerName: directorName, Certificates: []tls.Certificate{p.client}}))
	if err != nil {
		t.Fatal(err)
	}
	nt, _, err := cli.BootstrapToken(context.Background(), "first")
	if err != nil || nt.Role != "operator" || nt.Description != "first" || !strings.HasPrefix(nt.Token, nt.ID+".") {
		t.Fatalf("bootstrap: %+v %v", nt, err)
	}
	if d.log.Count("token created", "bootstrap=true", `by="client certificate \"clusterctl\"`) != 1 {
		t.Error("the bootstrap was not logged with the certificate that asked for it")
	}
	if r := doAs(t, hc, "GET", d.url+"/v1/tokens", nt.Token, nil); r.status != 200 {
		t.Fatalf("the bootstrap token does not work: %d %+v", r.status, r.err)
	}
	if r := doAs(t, hc, "POST", url, "", map[string]any{}); r.status != 409 || r.err.Field != "bootstrap" {
		t.Fatalf("second bootstrap: %d %+v", r.status, r.err)
	}
	if r := doAs(t, hc, "POST", url, "", map[string]any{"role": "read"}); r.status != 400 || r.err.Field != "role" {
		t.Fatalf("read bootstrap: %d %+v", r.status, r.err)
	}
	in := newDirector(t, true)
	if r := doAs(t, http.DefaultClient, "POST", in.url+bootstrapPath, "", map[string]any{}); r.status != 400 {
		t.Fatalf("bootstrap in insecure mode: %d %+v", r.status, r.err)
	}
}

func TestBootstrapTokenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	tok, err := writeBootstrapTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeBootstrapTokenFile(path); err == nil {
		t.Fatal("an existing token file was overwritten")
	}
	bt, err := loadBootstrapToken(path)
	if err != nil {
		t.Fatal(err)
	}
	id, secret, _ := parseToken(tok)
	if bt.id != id || bt.hash != hashSecret(secret) {
		t.Fatalf("loaded %+v from %q", bt, tok)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadBootstrapToken(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable file: %v", err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("boot.password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadBootstrapToken(short); err == nil || !strings.Contains(err.Error(), "32 to 256") {
		t.Fatalf("short secret: %v", err)
	}

	f := fsm.New()
	c := &fakeConsensus{fsm: f, leader: true}
	log, sink := testlog.New(t)
	proposeBootstrapToken(context.Background(), f, c, bt, log, 1)
	if got := f.Clone().Tokens[id]; got == nil || got.Role != fsm.RoleOperator || got.Hash != bt.hash {
		t.Fatalf("bootstrap token not added: %+v", f.Clone().Tokens)
	}
	// A second leader, or a restart, changes nothing.
	idx := f.Index()
	other := &bootstrapToken{id: "other", hash: hashSecret(strings.Repeat("o", 40))}
	proposeBootstrapToken(context.Background(), f, c, other, log, 2)
	if f.Index() != idx || len(f.Clone().Tokens) != 1 {
		t.Fatal("a bootstrap token was added to a cluster that had one")
	}
	if sink.Count("bootstrap token added", "token="+id) != 1 {
		t.Error("the bootstrap was not logged")
	}
}

func TestParseToken(t *testing.T) {
	id, secret, err := newToken()
	if err != nil {
		t.Fatal(err)
	}
	if gid, gs, err := parseToken(id + "." + secret); err != nil || gid != id || gs != secret {
		t.Fatalf("parse of a generated token: %q %q %v", gid, gs, err)
	}
	for _, bad := range []string{"", "nodot", ".secretsecretsecretsecretsecretsecret", "UP." + secret, "a." + secret[:10],
		"a." + strings.Repeat("s", 300), "a." + secret[:35] + " x"} {
		if _, _, err := parseToken(bad); !errors.Is(err, errBadToken) {
			t.Errorf("parseToken(%q) = %v, want errBadToken", bad, err)
		}
	}
}

// TestForwardRemoveCarriesToken: a leader that forwards its own removal
// does so with the caller's token, which the new leader authorises.
func TestForwardRemoveCarriesToken(t *testing.T) {
	p := newTestPKI(t)
	d := newSecureDirector(t, p, true)
	op := d.addToken(t, "ops", fsm.RoleOperator)
	u, _ := url.Parse(d.url)
	fwd := forwardRemove(2*time.Second, p.ct.apiClient())
	var ae *api.Error
	if err := fwd(context.Background(), "d1", u.Host, "d3", false); !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("forward without a caller: %v", err)
	}
	ctx := withPrincipal(context.Background(), principal{TokenID: "ops", Role: fsm.RoleOperator, Token: op})
	if err := fwd(ctx, "d1", u.Host, "d3", true); err != nil {
		t.Fatal(err)
	}
	if got := d.raft.recorded(); len(got) != 1 || got[0] != "remove d3 force=true" {
		t.Fatalf("calls %v", got)
	}
}

// TestBootstrapTokenFileSetting: the setting is refused with insecure:
// true, and -check-config reads the file.
func TestBootstrapTokenFileSetting(t *testing.T) {
	if _, err := parseConfig([]byte(minimalConfig)); err != nil {
		t.Fatalf("secure config with bootstrap_token_file: %v", err)
	}
	insecure := strings.Split(minimalConfig, "tls:")[0] + "insecure: true\nbootstrap_token_file: /x\n"
	if _, err := parseConfig([]byte(insecure)); err == nil || !strings.Contains(err.Error(), "bootstrap_token_file: must be empty with insecure: true") {
		t.Fatalf("insecure with a bootstrap token file: %v", err)
	}

	dir := t.TempDir()
	ca, caIss, err := pki.NewCA("check CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.Issue(pki.Request{CommonName: "d1", DNSNames: []string{directorName}, Server: true, Client: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"ca.pem": caIss.CertPEM, "d1.pem": iss.CertPEM, "d1-key.pem": iss.KeyPEM,
		"gossip.key": []byte(strings.Repeat("A", 43) + "=\n"), "token": []byte("short.secret\n")}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf("node_id: d1\ndata_dir: %[1]s/data\nraft_addr: 127.0.0.1:7901\ngossip_addr: 127.0.0.1:7946\napi_addr: 127.0.0.1:7950\n"+
		"bootstrap_expect: 1\ntls: {ca: %[1]s/ca.pem, cert: %[1]s/d1.pem, key: %[1]s/d1-key.pem}\ngossip_key_file: %[1]s/gossip.key\n"+
		"bootstrap_token_file: %[1]s/token\n", dir)
	path := filepath.Join(dir, "clusterd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"-check-config", path}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "bootstrap_token_file") {
		t.Fatalf("-check-config with a bad token file: exit %d, %s", code, errb.String())
	}
	if _, err := writeBootstrapTokenFile(filepath.Join(dir, "good")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(cfg, dir+"/token", dir+"/good")), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"-check-config", path}, &out, &errb); code != 0 {
		t.Fatalf("-check-config with a good token file: exit %d, %s", code, errb.String())
	}
}
