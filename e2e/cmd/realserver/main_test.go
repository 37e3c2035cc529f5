package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandlerAnswersWithName(t *testing.T) {
	srv := httptest.NewServer(handler("rs2"))
	defer srv.Close()
	for range 2 { // the second request may reuse the kept-alive connection
		resp, err := http.Get(srv.URL + "/anything")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || string(b) != "rs2\n" {
			t.Fatalf("got %d %q, want 200 \"rs2\\n\"", resp.StatusCode, b)
		}
	}
}

// TestStopKeepsEstablishedConnections stops and restarts the listeners
// through the control API: while stopped, a new connection is refused but
// a kept-alive one is still answered; after a start, the same address
// answers again.
func TestStopKeepsEstablishedConnections(t *testing.T) {
	errc := make(chan error, 1)
	ls := newListeners([]string{"127.0.0.1:0"}, handler("rs1"), slog.New(slog.NewTextHandler(io.Discard, nil)), errc)
	if err := ls.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls.stop(); _ = ls.srv.Close() })
	ctl := httptest.NewServer(ls.controlHandler())
	defer ctl.Close()
	addr := ls.addrs[0]

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	ask := func() (string, error) {
		if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if got, err := ask(); err != nil || got != "rs1\n" {
		t.Fatalf("first answer %q, %v", got, err)
	}
	control := func(method, path, want string) {
		t.Helper()
		req, err := http.NewRequest(method, ctl.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ctl.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(b) != want+"\n" {
			t.Fatalf("%s %s: %d %q, want 200 %q", method, path, resp.StatusCode, b, want)
		}
	}
	control("POST", "/listeners/stop", "stopped")
	control("GET", "/listeners", "stopped")
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("a new connection to %s was accepted with the listeners stopped", addr)
	}
	if got, err := ask(); err != nil || got != "rs1\n" {
		t.Fatalf("kept-alive connection after stop: %q, %v", got, err)
	}
	control("POST", "/listeners/start", "serving")
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatalf("after start: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after start: %s", resp.Status)
	}
	select {
	case err := <-errc:
		t.Fatalf("a stop was reported as a serving error: %v", err)
	default:
	}
}
