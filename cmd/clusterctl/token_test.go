package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/internal/pki"
)

// secureAPI is an HTTPS endpoint that answers the token routes and
// records the credentials each request carried.
type secureAPI struct {
	srv           *httptest.Server
	dir           string
	ca, cert, key string
	mu            sync.Mutex
	auth          []string
	certs         []bool
}

func newSecureAPI(t *testing.T) *secureAPI {
	t.Helper()
	ca, caIss, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvIss, err := ca.Issue(pki.Request{CommonName: "d1", DNSNames: []string{api.DirectorServerName}, Server: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cliIss, err := ca.Issue(pki.Request{CommonName: "clusterctl", Client: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s := &secureAPI{dir: t.TempDir()}
	s.ca, s.cert, s.key = filepath.Join(s.dir, "ca.pem"), filepath.Join(s.dir, "client.pem"), filepath.Join(s.dir, "client-key.pem")
	for p, data := range map[string][]byte{s.ca: caIss.CertPEM, s.cert: cliIss.CertPEM, s.key: cliIss.KeyPEM} {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pair, err := tls.X509KeyPair(srvIss.CertPEM, srvIss.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	data := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		s.certs = append(s.certs, len(r.TLS.VerifiedChains) > 0)
		s.mu.Unlock()
		if r.URL.Path == "/v1/tokens/bootstrap" {
			if len(r.TLS.VerifiedChains) == 0 {
				reply(w, 401, api.ErrorResponse{Error: api.Error{Code: api.CodeDenied, Message: "needs a client certificate"}})
				return
			}
			reply(w, 200, api.Response{Index: 3, Data: data(api.NewToken{TokenInfo: api.TokenInfo{ID: "boot", Role: "operator"}, Token: "boot.SECRET"})})
			return
		}
		if r.Header.Get("Authorization") != "Bearer ops.s3cret" {
			reply(w, 401, api.ErrorResponse{Index: 2, Error: api.Error{Code: api.CodeDenied, Message: "missing API token"}})
			return
		}
		switch r.Method + " " + r.URL.Path {
		case "GET /v1/tokens":
			reply(w, 200, api.Response{Index: 2, Data: data([]api.TokenInfo{{ID: "ops", Role: "operator", Description: "first",
				Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}})})
		case "POST /v1/tokens":
			var tc api.TokenCreate
			_ = json.NewDecoder(r.Body).Decode(&tc)
			reply(w, 200, api.Response{Index: 4, Data: data(api.NewToken{TokenInfo: api.TokenInfo{ID: "abc", Role: tc.Role, Description: tc.Description}, Token: "abc.NEWSECRET"})})
		case "DELETE /v1/tokens/abc":
			reply(w, 200, api.Response{Index: 5})
		default:
			reply(w, 404, api.ErrorResponse{Error: api.Error{Code: api.CodeNotFound, Message: "no route"}})
		}
	}))
	s.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *secureAPI) hostPort() string { return strings.TrimPrefix(s.srv.URL, "https://") }

func TestTokenCommandsOverTLS(t *testing.T) {
	s := newSecureAPI(t)
	tokFile := filepath.Join(s.dir, "token")
	if err := os.WriteFile(tokFile, []byte("ops.s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--addr", s.hostPort(), "--ca", s.ca}

	r := runEnv(t, env{Version: "test"}, append(base, "--token-file", tokFile, "token", "ls")...)
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, "ops  operator  2026-01-02T03:04:05Z  first") {
		t.Errorf("token ls: %q", r.stdout)
	}
	// The environment supplies the CA and the token.
	e := env{Version: "test", Getenv: func(k string) string {
		return map[string]string{api.EnvCA: s.ca, api.EnvToken: "ops.s3cret", addrEnv: s.hostPort()}[k]
	}}
	r = runEnv(t, e, "token", "create", "--role", "read", "--description", "grafana")
	wantExit(t, r, 0, "shown only now")
	if r.stdout != "abc.NEWSECRET\n" {
		t.Errorf("token create stdout %q, want the token alone", r.stdout)
	}
	wantExit(t, runEnv(t, e, "token", "revoke", "abc"), 0)
	wantExit(t, runEnv(t, e, "token", "create", "--role", "admin"), exitUsage, "not a role")
	// A flag wins over the environment, even over $DIRECTORATE_TOKEN_FILE.
	ef := env{Version: "test", Getenv: func(k string) string {
		return map[string]string{api.EnvCA: s.ca, api.EnvTokenFile: filepath.Join(s.dir, "missing"), addrEnv: s.hostPort()}[k]
	}}
	wantExit(t, runEnv(t, ef, "--token", "ops.s3cret", "token", "ls"), 0)
	wantExit(t, runEnv(t, ef, "token", "ls"), exitUsage, "missing")
	// A missing or wrong token is the server's refusal, exit 1.
	wantExit(t, runEnv(t, env{Version: "test"}, append(base, "token", "ls")...), exitFailure, "missing API token")
	// Bootstrap needs the client certificate.
	wantExit(t, runEnv(t, env{Version: "test"}, append(base, "token", "bootstrap")...), exitUsage, "client certificate")
	wantExit(t, runEnv(t, env{Version: "test"}, append(base, "--cert", s.cert, "token", "bootstrap")...), exitUsage, "give both")
	r = runEnv(t, env{Version: "test"}, append(base, "--cert", s.cert, "--key", s.key, "token", "bootstrap")...)
	wantExit(t, r, 0)
	if r.stdout != "boot.SECRET\n" {
		t.Errorf("bootstrap stdout %q", r.stdout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if last := s.certs[len(s.certs)-1]; !last {
		t.Error("the client certificate was not presented")
	}
	for i, a := range s.auth[:3] {
		if a != "Bearer ops.s3cret" {
			t.Errorf("request %d carried Authorization %q", i, a)
		}
	}
}

func TestCredentialErrors(t *testing.T) {
	s := newSecureAPI(t)
	run := func(args ...string) result { return runEnv(t, env{Version: "test"}, args...) }
	wantExit(t, run("--addr", s.hostPort(), "--ca", filepath.Join(s.dir, "nope"), "token", "ls"), exitUsage, "--ca")
	wantExit(t, run("--addr", s.hostPort(), "--ca", s.key, "token", "ls"), exitUsage, "no PEM certificate")
	wantExit(t, run("--addr", "http://"+s.hostPort(), "--ca", s.ca, "token", "ls"), exitUsage, "plain HTTP")
	wantExit(t, run("--addr", s.hostPort(), "--token", "a.b", "--token-file", "x", "token", "ls"), exitUsage, "one or the other")
	// Without the CA the director's certificate is not trusted.
	r := run("--addr", "https://"+s.hostPort(), "--token", "ops.s3cret", "token", "ls")
	wantExit(t, r, exitUnavailable, "certificate")
	// A certificate that does not name the director is refused.
	r = run("--addr", s.hostPort(), "--ca", s.ca, "--tls-server-name", "other.example", "--token", "ops.s3cret", "token", "ls")
	wantExit(t, r, exitUnavailable, "other.example")
}
