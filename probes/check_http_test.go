package probes_test

import (
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/directorate/directorate/probes"
)

// webHandler is a real server's status pages.
func webHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "status: ok\n")
	})
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "database down", http.StatusInternalServerError)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/vhost", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "www.example.test" {
			http.Error(w, "unknown host "+r.Host, http.StatusNotFound)
			return
		}
		fmt.Fprint(w, "vhost ok")
	})
	mux.HandleFunc("/query", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "full=%s", r.URL.Query().Get("full"))
	})
	// slow-headers never answers; slow-body sends its headers and then
	// trickles, as an overloaded application does.
	mux.HandleFunc("/slow-headers", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	mux.HandleFunc("/slow-body", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "status: ")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		fmt.Fprint(w, "ok\n")
	})
	return mux
}

// startWeb starts webHandler on loopback, over TLS with httptest's
// self-signed certificate if tls is set, logging to the test.
func startWeb(t *testing.T, tls bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(webHandler())
	srv.Config.ErrorLog = slog.NewLogLogger(testLogger(t).Handler(), slog.LevelDebug)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	return srv
}

func webSpec(t *testing.T, kind probes.CheckKind, srv *httptest.Server, timeout time.Duration) probes.CheckSpec {
	t.Helper()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := netip.ParseAddrPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	return spec(kind, ap, timeout)
}

func TestHTTPCheck(t *testing.T) {
	srv := startWeb(t, false)
	defer srv.Close()
	c := probes.NewHTTPChecker()
	tests := []struct {
		name string
		edit func(*probes.CheckSpec)
		want []string // nil: the check passes
	}{
		{"ok", func(s *probes.CheckSpec) { s.Path = "/ok" }, nil},
		{"default path is / and 404 fails", func(s *probes.CheckSpec) {}, []string{"status 404, want 200-399"}},
		{"server error", func(s *probes.CheckSpec) { s.Path = "/broken" }, []string{"status 500, want 200-399"}},
		{"expected server error", func(s *probes.CheckSpec) { s.Path, s.ExpectStatus = "/broken", "500" }, nil},
		{"redirect not followed", func(s *probes.CheckSpec) { s.Path, s.ExpectStatus = "/moved", "200" }, []string{"status 301, want 200"}},
		{"redirect accepted", func(s *probes.CheckSpec) { s.Path, s.ExpectStatus = "/moved", "200-299,301" }, nil},
		{"body matches", func(s *probes.CheckSpec) { s.Path, s.BodyRegex = "/ok", `(?m)^status: ok$` }, nil},
		{"body mismatch", func(s *probes.CheckSpec) { s.Path, s.BodyRegex = "/ok", "healthy" }, []string{`body does not match "healthy"`}},
		{"host header", func(s *probes.CheckSpec) { s.Path, s.Host, s.BodyRegex = "/vhost", "www.example.test", "vhost ok" }, nil},
		{"wrong host header", func(s *probes.CheckSpec) { s.Path, s.Host = "/vhost", "other.test" }, []string{"status 404"}},
		{"query string", func(s *probes.CheckSpec) { s.Path, s.BodyRegex = "/query?full=yes", "^full=yes$" }, nil},
		{"slow headers", func(s *probes.CheckSpec) { s.Path, s.Timeout = "/slow-headers", 200*time.Millisecond }, []string{"read response", "timeout"}},
		{"slow body", func(s *probes.CheckSpec) { s.Path, s.BodyRegex, s.Timeout = "/slow-body", "ok", 200*time.Millisecond }, []string{"read body", "timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := webSpec(t, probes.CheckHTTP, srv, time.Second)
			tt.edit(&s)
			if err := s.Validate(); err != nil {
				t.Fatalf("test spec invalid: %v", err)
			}
			err := check(t, c, s)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("check failed: %v", err)
				}
				return
			}
			wantErr(t, err, tt.want...)
		})
	}
}

func TestHTTPCheckSlowBodyWithoutRegexPasses(t *testing.T) {
	// Without a body regexp the status line decides: a page that is slow
	// to finish is still up.
	srv := startWeb(t, false)
	defer srv.Close()
	s := webSpec(t, probes.CheckHTTP, srv, 500*time.Millisecond)
	s.Path = "/slow-body"
	if err := check(t, probes.NewHTTPChecker(), s); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPCheckRefused(t *testing.T) {
	s := spec(probes.CheckHTTP, closedPort(t), time.Second)
	wantErr(t, check(t, probes.NewHTTPChecker(), s), "http", "connect", "connection refused")
}

func TestHTTPCheckConnectTimeout(t *testing.T) {
	s := spec(probes.CheckHTTP, fullBacklog(t), 200*time.Millisecond)
	wantErr(t, check(t, probes.NewHTTPChecker(), s), "connect", "timeout")
}

func TestHTTPCheckNotHTTP(t *testing.T) {
	l := listenTCP(t)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(conn, "SSH-2.0-OpenSSH_9.2\r\n")
			conn.Close()
		}
	}()
	s := spec(probes.CheckHTTP, addrPort(l.Addr()), time.Second)
	wantErr(t, check(t, probes.NewHTTPChecker(), s), "read response", "malformed HTTP")
}

func TestHTTPSCheck(t *testing.T) {
	srv := startWeb(t, true)
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	tests := []struct {
		name    string
		checker *probes.HTTPChecker
		edit    func(*probes.CheckSpec)
		want    []string
	}{
		{"verification off accepts a self-signed certificate", probes.NewHTTPChecker(), func(s *probes.CheckSpec) {}, nil},
		{"verification on rejects it", probes.NewHTTPChecker(), func(s *probes.CheckSpec) { s.TLSVerify = true },
			[]string{"tls handshake", "certificate signed by unknown authority"}},
		{"verified against its CA, by address", probes.NewHTTPCheckerWithRoots(roots), func(s *probes.CheckSpec) { s.TLSVerify = true }, nil},
		{"verified, server name", probes.NewHTTPCheckerWithRoots(roots), func(s *probes.CheckSpec) { s.TLSVerify, s.ServerName = true, "example.com" }, nil},
		{"verified, name from the Host header", probes.NewHTTPCheckerWithRoots(roots), func(s *probes.CheckSpec) { s.TLSVerify, s.Host = true, "example.com:443" }, nil},
		{"wrong server name", probes.NewHTTPCheckerWithRoots(roots), func(s *probes.CheckSpec) { s.TLSVerify, s.ServerName = true, "wrong.test" },
			[]string{"tls handshake", "not wrong.test"}},
		{"body mismatch over TLS", probes.NewHTTPChecker(), func(s *probes.CheckSpec) { s.BodyRegex = "nope" }, []string{"body does not match"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := webSpec(t, probes.CheckHTTPS, srv, time.Second)
			s.Path = "/ok"
			tt.edit(&s)
			if err := s.Validate(); err != nil {
				t.Fatalf("test spec invalid: %v", err)
			}
			err := check(t, tt.checker, s)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("check failed: %v", err)
				}
				return
			}
			wantErr(t, err, tt.want...)
		})
	}
}

func TestHTTPSCheckAgainstPlainHTTP(t *testing.T) {
	srv := startWeb(t, false)
	defer srv.Close()
	s := webSpec(t, probes.CheckHTTPS, srv, time.Second)
	wantErr(t, check(t, probes.NewHTTPChecker(), s), "https", "tls handshake")
}

func TestHTTPSCheckHandshakeTimeout(t *testing.T) {
	// A listener that accepts and then says nothing stalls the handshake.
	l := listenTCP(t)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
		}
	}()
	s := spec(probes.CheckHTTPS, addrPort(l.Addr()), 200*time.Millisecond)
	wantErr(t, check(t, probes.NewHTTPChecker(), s), "tls handshake")
}
