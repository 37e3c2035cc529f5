// Command clusterctl is the operator's tool for a Directorate cluster: it
// changes VIPs, virtual services, real servers and Raft membership through
// the clusterd HTTP API, and shows what the directors hold.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// version is set at link time (-ldflags "-X main.version=..."), which
// needs a package variable; nothing assigns it at run time.
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, env{
		Stdin:           os.Stdin,
		StdinIsTerminal: isTerminal(os.Stdin),
		Getenv:          os.Getenv,
		Version:         version,
	})
	stop()
	os.Exit(code)
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
