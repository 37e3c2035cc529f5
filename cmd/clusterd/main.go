// Command clusterd is a Directorate director: it joins the Raft group,
// keeps this host's IPVS table converged to the replicated configuration,
// and serves the HTTP API that clusterctl talks to.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/directorate/directorate/cluster"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "tls" {
		return runTLS(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("clusterd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "run with the YAML configuration `file`")
	checkPath := fs.String("check-config", "", "validate the configuration `file` and exit")
	printTiming := fs.Bool("print-timing", false, "print the timing profiles and their worst-case bounds and exit; with -config, the configured timing")
	members := fs.Int("members", 3, "with -print-timing: how many directors to compute the gossip bounds for")
	showVersion := fs.Bool("version", false, "print the version and exit")
	nodeID := fs.String("node-id", "", "override node_id")
	dataDir := fs.String("data-dir", "", "override data_dir")
	logLevel := fs.String("log-level", "", "override log.level (debug, info, warn, error)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: clusterd -config FILE\n       clusterd -check-config FILE\n       clusterd tls init -dir DIR -nodes d1,d2,d3\n       clusterd -print-timing [-config FILE] [-members N]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "clusterd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "clusterd: %v\n", err)
		return 1
	}
	switch {
	case *showVersion:
		fmt.Fprintln(stdout, "clusterd", version)
		return 0
	case *checkPath != "":
		cfg, err := loadConfig(*checkPath)
		if err != nil {
			return fail(err)
		}
		if err := cfg.checkSecurityFiles(); err != nil {
			return fail(fmt.Errorf("config %s: %w", *checkPath, err))
		}
		if cfg.BootstrapTokenFile != "" {
			if _, err := loadBootstrapToken(cfg.BootstrapTokenFile); err != nil {
				return fail(fmt.Errorf("config %s: %w", *checkPath, err))
			}
		}
		fmt.Fprintf(stdout, "%s: OK (node %s, bootstrap_expect %d, lvs backend %s)\n", *checkPath, cfg.NodeID, cfg.BootstrapExpect, cfg.LVS.Backend)
		return 0
	case *printTiming:
		if err := writeTiming(stdout, *configPath, *members); err != nil {
			return fail(err)
		}
		return 0
	case *configPath == "":
		fs.Usage()
		return 2
	}

	cfg, err := loadConfig(*configPath)
	if err != nil {
		return fail(err)
	}
	if *nodeID != "" {
		cfg.NodeID = *nodeID
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	if err := cfg.validate(); err != nil {
		return fail(err)
	}
	log, err := newLogger(stderr, cfg)
	if err != nil {
		return fail(err)
	}
	if cfg.Insecure {
		log.Warn("insecure: true: raft and the API run in plaintext, gossip is not encrypted and the API authorises nobody; " +
			"anyone who reaches this director's ports can join the cluster or change it. Use it for development only")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runDaemon(ctx, cfg, log); err != nil {
		log.Error("clusterd stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, cfg *config) (*slog.Logger, error) {
	level, err := parseLevel(cfg.Log.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h).With("node", cfg.NodeID), nil
}

// writeTiming prints each profile, or the configured timing, with the
// worst-case bounds that follow from it.
func writeTiming(w io.Writer, configPath string, members int) error {
	if members < 1 {
		return fmt.Errorf("-members: must be at least 1, got %d", members)
	}
	if configPath != "" {
		cfg, err := loadConfig(configPath)
		if err != nil {
			return err
		}
		t, err := cfg.Timing.Resolve()
		if err != nil {
			return err
		}
		name := cfg.Timing.Profile
		if name == "" {
			name = cluster.ProfileDefault
		}
		return cluster.WriteTable(w, name+" (as configured)", t, t.Bounds(members))
	}
	for i, name := range []string{cluster.ProfileDefault, cluster.ProfileFast} {
		t, err := cluster.Profile(name)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := cluster.WriteTable(w, name, t, t.Bounds(members)); err != nil {
			return err
		}
	}
	return nil
}
