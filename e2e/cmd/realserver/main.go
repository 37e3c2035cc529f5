// Command realserver is the e2e lab's real server: a small HTTP server that
// answers every request, on any path, with its name, so a client can tell
// which real server IPVS picked. Keep-alive works as net/http provides it.
// A sorry server is a realserver whose name says so.
//
//	realserver -name rs1 -listen :80,:8080 [-control 127.0.0.1:9000]
//
// The control listener lets a health scenario stop and restart the serving
// listeners without killing the process, as an operator stopping a web
// server's listener would:
//
//	POST /listeners/stop   close the serving listeners; established
//	                       connections, kept alive or not, go on
//	POST /listeners/start  listen again on the same addresses
//	GET  /listeners        "serving" or "stopped"
//
// It is on by default, on loopback only: the lab starts every real server
// before a scenario says what it needs, and only a process inside the
// node's own network namespace can reach it.
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
	"sync"
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
	control := flag.String("control", "127.0.0.1:9000", "address of the control listener; empty: none")
	flag.Parse()
	if *name == "" {
		return errors.New("-name: required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", *name)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 2)
	ls := newListeners(strings.Split(*listen, ","), handler(*name), log, errc)
	if err := ls.start(); err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	var ctl *http.Server
	if *control != "" {
		ln, err := net.Listen("tcp", *control)
		if err != nil {
			return fmt.Errorf("-control %s: %w", *control, err)
		}
		ctl = &http.Server{Handler: ls.controlHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := ctl.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				select {
				case errc <- fmt.Errorf("control: %w", err):
				default: // run is already ending with an earlier error
				}
			}
		}()
	}
	log.Info("serving", "listen", ls.addrs, "control", *control)
	select {
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if ctl != nil {
			_ = ctl.Shutdown(shut)
		}
		return ls.srv.Shutdown(shut)
	case err := <-errc:
		return err
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

// listeners are the serving listeners of one http.Server, which can be
// closed and opened again. Closing a listener, rather than the server,
// leaves the server's established connections alone: a stopped listener
// refuses new connections while kept-alive ones are still answered.
type listeners struct {
	addrs []string
	srv   *http.Server
	log   *slog.Logger
	// errc receives a serving error that is not a stop.
	errc chan<- error

	mu      sync.Mutex
	lns     []net.Listener
	serving sync.WaitGroup
}

func newListeners(addrs []string, h http.Handler, log *slog.Logger, errc chan<- error) *listeners {
	return &listeners{
		addrs: addrs,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       30 * time.Second,
		},
		log:  log,
		errc: errc,
	}
}

// start listens on every address; it does nothing if already serving.
func (l *listeners) start() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lns != nil {
		return nil
	}
	var lns []net.Listener
	for _, a := range l.addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, o := range lns {
				o.Close()
			}
			return fmt.Errorf("listen on %s: %w", a, err)
		}
		lns = append(lns, ln)
	}
	// A restart must listen where clients were sent before, even when
	// the first start picked the port (":0").
	for i, ln := range lns {
		if _, port, err := net.SplitHostPort(l.addrs[i]); err == nil && port == "0" {
			l.addrs[i] = ln.Addr().String()
		}
	}
	l.lns = lns
	for _, ln := range lns {
		l.serving.Go(func() {
			err := l.srv.Serve(ln)
			// A listener closed by stop ends Serve with net.ErrClosed.
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
				select {
				case l.errc <- fmt.Errorf("serve %s: %w", ln.Addr(), err):
				default: // run is already ending with an earlier error
				}
			}
		})
	}
	return nil
}

// stop closes the listeners and returns once nothing accepts on them any
// more; it does nothing if already stopped.
func (l *listeners) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ln := range l.lns {
		ln.Close()
	}
	l.lns = nil
	l.serving.Wait()
}

func (l *listeners) state() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lns == nil {
		return "stopped"
	}
	return "serving"
}

// controlHandler serves the control API described in the package comment.
func (l *listeners) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /listeners/stop", func(w http.ResponseWriter, _ *http.Request) {
		l.stop()
		l.log.Info("listeners stopped", "listen", l.addrs)
		fmt.Fprintln(w, l.state())
	})
	mux.HandleFunc("POST /listeners/start", func(w http.ResponseWriter, _ *http.Request) {
		if err := l.start(); err != nil {
			l.log.Error("listeners not started", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		l.log.Info("listeners started", "listen", l.addrs)
		fmt.Fprintln(w, l.state())
	})
	mux.HandleFunc("GET /listeners", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, l.state())
	})
	return mux
}
