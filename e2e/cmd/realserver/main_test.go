package main

import (
	"io"
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
