package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/fsm"
)

// apiSecurity wraps the API listener in TLS and returns how the server
// authenticates. With no TLS material (insecure mode) ln is returned as
// it is: plain HTTP without authentication.
func apiSecurity(ct *clusterTLS, ln net.Listener) (security, net.Listener) {
	if ct == nil {
		return security{Insecure: true}, ln
	}
	return security{ClientTLS: ct.apiClient()}, tls.NewListener(ln, ct.apiServer())
}

// apiErrorLog sends net/http's own messages, such as a refused TLS
// handshake with the client's address and the reason, to the structured
// log rather than to stderr.
func apiErrorLog(log *slog.Logger) *stdlog.Logger {
	return slog.NewLogLogger(log.With("component", "api").Handler(), slog.LevelWarn)
}

// bootstrapToken is the first operator token, read from
// bootstrap_token_file. Only its hash is kept in memory.
type bootstrapToken struct {
	id, hash string
}

// loadBootstrapToken reads a bootstrap token file: one token, ID.SECRET,
// as `clusterctl token create` prints it; surrounding white space is
// ignored. A file others may read is refused: it holds an operator
// credential.
func loadBootstrapToken(path string) (*bootstrapToken, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap_token_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("bootstrap_token_file: %s is readable by others (mode %s): chmod 600 it", path, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap_token_file: %w", err)
	}
	id, secret, err := parseToken(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("bootstrap_token_file %s: %w", path, err)
	}
	return &bootstrapToken{id: id, hash: hashSecret(secret)}, nil
}

// writeBootstrapTokenFile creates path (mode 0600, never overwriting)
// holding a fresh token, and returns the token. It is what a harness or
// `clusterd tls init` uses to give a new cluster its first operator token.
func writeBootstrapTokenFile(path string) (string, error) {
	id, secret, err := newToken()
	if err != nil {
		return "", err
	}
	tok := id + "." + secret
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("write bootstrap token: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("write bootstrap token %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write bootstrap token %s: %w", path, err)
	}
	return tok, nil
}

// proposer is what bootstrapping needs of the Raft node.
type proposer interface {
	Propose(ctx context.Context, cmd fsm.Command) (uint64, error)
}

// proposeBootstrapToken adds the configured bootstrap token when the
// cluster has no token yet. A new leader calls it: the FSM refuses a
// bootstrap once any token exists, so directors that race, or a restart
// after the token was revoked, change nothing.
func proposeBootstrapToken(ctx context.Context, f *fsm.FSM, p proposer, bt *bootstrapToken, log *slog.Logger, term uint64) {
	if bt == nil {
		return
	}
	empty := true
	f.Read(func(st *fsm.State) { empty = len(st.Tokens) == 0 })
	if !empty {
		return
	}
	cmd := fsm.CreateToken{Bootstrap: true, Token: fsm.Token{ID: bt.id, Role: fsm.RoleOperator, Hash: bt.hash,
		Description: "bootstrap_token_file", Created: time.Now().UTC().Truncate(time.Second)}}
	idx, err := p.Propose(ctx, cmd)
	var fe *fsm.FieldError
	switch {
	case errors.As(err, &fe) && errors.Is(err, fsm.ErrConflict):
		log.Info("bootstrap token not added: the cluster already has tokens", "term", term)
	case err != nil:
		log.Warn("add the bootstrap token; the next leader tries again", "term", term, "err", err)
	default:
		log.Info("bootstrap token added from bootstrap_token_file", "token", bt.id, "term", term, "index", idx)
	}
}

// forwardRemove lets a leader asked to remove itself have the new leader
// do it, through that leader's API, with the caller's token: the new
// leader authorises the caller, not this director.
func forwardRemove(timeout time.Duration, clientTLS *tls.Config) cluster.RemoveForwarder {
	return func(ctx context.Context, leaderID, addr, id string, force bool) error {
		opts := []api.Option{api.WithTimeout(timeout)}
		if clientTLS != nil {
			addr = "https://" + addr
			opts = append(opts, api.WithTLSConfig(clientTLS))
		}
		if p, ok := principalFrom(ctx); ok && p.Token != "" {
			opts = append(opts, api.WithToken(p.Token))
		}
		c, err := api.New(addr, opts...)
		if err != nil {
			return fmt.Errorf("reach new leader %s: %w", leaderID, err)
		}
		if _, err := c.RemoveMember(ctx, id, force); err != nil {
			return fmt.Errorf("remove %s through new leader %s: %w", id, leaderID, err)
		}
		return nil
	}
}
