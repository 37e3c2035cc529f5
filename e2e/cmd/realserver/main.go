// Command realserver is the e2e lab's real server: a small HTTP server that
// answers every request with its name, so a client can tell which real
// server IPVS picked. Keep-alive works as net/http provides it.
//
//	realserver -name rs1 -listen :80,:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "realserver:", err)
		os.Exit(1)
	}
}

func run() error {
	name := flag.String("name", "", "the name every answer carries (required)")
	listen := flag.String("listen", ":80", "comma-separated listen addresses")
	flag.Parse()
	if *name == "" {
		return errors.New("-name: required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", *name)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{
		Handler:           handler(*name),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       30 * time.Second,
	}
	errc := make(chan error, 1)
	addrs := strings.Split(*listen, ",")
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("-listen %s: %w", a, err)
		}
		go func() { errc <- srv.Serve(ln) }()
	}
	log.Info("serving", "listen", addrs)
	select {
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return srv.Shutdown(shut)
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
}

// handler answers with name and a newline.
func handler(name string) http.Handler {
	body := name + "\n"
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = fmt.Fprint(w, body)
	})
}
