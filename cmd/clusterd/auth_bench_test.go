package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/directorate/directorate/fsm"
)

// BenchmarkAPIWrite measures one configuration change through the API,
// on a kept-alive connection or a new one each time, against a fake consensus that applies at once:
// the cost of HTTP, TLS and token checks, without Raft. Compare plain
// HTTP (insecure: true) with HTTPS and a token.
func BenchmarkAPIWrite(b *testing.B) {
	for _, mode := range []struct {
		name          string
		secure, fresh bool
	}{{"insecure-http", false, false}, {"https-token", true, false}, {"https-token-new-connection", true, true}} {
		secure := mode.secure
		b.Run(mode.name, func(b *testing.B) {
			f := fsm.New()
			c := &fakeConsensus{fsm: f, leader: true}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			sec := security{Insecure: true}
			var p *testPKI
			if secure {
				p = newTestPKI(b)
				sec = security{ClientTLS: p.ct.apiClient()}
			}
			srv := newServer("d1", f, c, noIPVS{}, log, time.Second, sec)
			ts := httptest.NewUnstartedServer(srv.handler())
			hc := &http.Client{}
			token := ""
			if secure {
				ts.TLS = p.ct.apiServer()
				ts.StartTLS()
				hc = p.httpClient()
				// clusterctl makes one connection per command: a full
				// TLS 1.3 handshake each time.
				hc.Transport.(*http.Transport).DisableKeepAlives = mode.fresh
				secret := "benchmark-secret-benchmark-secret-0123"
				if _, err := c.Propose(context.Background(), fsm.CreateToken{Token: fsm.Token{ID: "ops", Role: fsm.RoleOperator, Hash: hashSecret(secret)}}); err != nil {
					b.Fatal(err)
				}
				token = "ops." + secret
			} else {
				ts.Start()
			}
			defer ts.Close()
			if _, err := c.Propose(context.Background(), fsm.AddVIP{VIP: fsm.VIP{Name: "v", Prefix: netip.MustParsePrefix("192.0.2.10/24")}}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				body := fmt.Sprintf(`{"name":"s%d","vip":"v","protocol":"tcp","port":%d}`, i, i%60000+1)
				req, _ := http.NewRequest("POST", ts.URL+"/v1/services", bytes.NewReader([]byte(body)))
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 && resp.StatusCode != 409 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// BenchmarkAuthenticate is the token check alone: parse, hash, look up,
// compare.
func BenchmarkAuthenticate(b *testing.B) {
	f := fsm.New()
	c := &fakeConsensus{fsm: f, leader: true}
	secret := "benchmark-secret-benchmark-secret-0123"
	for i := range 1000 {
		if _, err := c.Propose(context.Background(), fsm.CreateToken{Token: fsm.Token{ID: fmt.Sprintf("t%d", i), Role: fsm.RoleRead, Hash: hashSecret(secret)}}); err != nil {
			b.Fatal(err)
		}
	}
	req := httptest.NewRequest("GET", "/v1/vips", nil)
	req.Header.Set("Authorization", "Bearer t500."+secret)
	b.ResetTimer()
	for range b.N {
		if _, err := authenticate(f, req); err != nil {
			b.Fatal(err)
		}
	}
}
