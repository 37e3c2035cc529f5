package probes

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// maxBody is how much of a response body an HTTP check reads for
// BodyRegex: enough for any status page, bounded so that a server
// streaming without end cannot hold the check.
const maxBody = 1 << 20

// HTTPChecker is the checker of CheckHTTP and CheckHTTPS: one GET on a
// fresh connection, closed afterwards. A fresh connection each time is
// deliberate: a kept-alive one would outlive a listener that has stopped
// accepting, and the check would miss exactly what it is for.
type HTTPChecker struct {
	dialer net.Dialer
	// roots verifies servers when TLSVerify is set; nil means the
	// system's roots.
	roots *x509.CertPool

	mu      sync.Mutex
	regexps map[string]*regexp.Regexp
	status  map[string]statusSet
}

// NewHTTPChecker returns the real HTTP(S) checker, verifying against the
// system's root certificates.
func NewHTTPChecker() *HTTPChecker {
	return &HTTPChecker{dialer: checkDialer(), regexps: make(map[string]*regexp.Regexp), status: make(map[string]statusSet)}
}

// NewHTTPCheckerWithRoots returns an HTTP(S) checker that verifies
// servers against roots instead of the system's root certificates, for a
// private CA.
func NewHTTPCheckerWithRoots(roots *x509.CertPool) *HTTPChecker {
	c := NewHTTPChecker()
	c.roots = roots
	return c
}

// Check implements Checker.
func (c *HTTPChecker) Check(ctx context.Context, spec CheckSpec) error {
	if err := c.check(ctx, spec); err != nil {
		return fmt.Errorf("%s %s: %w", spec.Kind, spec.Target, err)
	}
	return nil
}

func (c *HTTPChecker) check(ctx context.Context, spec CheckSpec) error {
	want, body, err := c.compiled(spec)
	if err != nil {
		return err
	}
	path := cmp.Or(spec.Path, DefaultPath)
	scheme := "http"
	if spec.Kind == CheckHTTPS {
		scheme = "https"
	}
	u := &url.URL{Scheme: scheme, Host: spec.Target.String()}
	if u.Path, u.RawQuery, _ = strings.Cut(path, "?"); u.Path == "" {
		u.Path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Close = true
	req.Header.Set("User-Agent", "directorate-health-check")
	if spec.Host != "" {
		req.Host = spec.Host
	}

	conn, err := c.dialer.DialContext(ctx, "tcp", spec.Target.String())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer closeAbortive(conn.(*net.TCPConn))
	// The deadline makes every read and write below, including a slow
	// body, give up at the check's timeout.
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return fmt.Errorf("set deadline: %w", err)
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var rw net.Conn = conn
	if spec.Kind == CheckHTTPS {
		tc := tls.Client(conn, c.tlsConfig(spec))
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		rw = tc
	}
	if err := req.Write(rw); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(rw), req)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	if !want.contains(resp.StatusCode) {
		return fmt.Errorf("status %d, want %s", resp.StatusCode, cmp.Or(spec.ExpectStatus, DefaultExpectStatus))
	}
	if body == nil {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if !body.Match(data) {
		return fmt.Errorf("body does not match %q", spec.BodyRegex)
	}
	return nil
}

func (c *HTTPChecker) tlsConfig(spec CheckSpec) *tls.Config {
	name := spec.ServerName
	if name == "" && spec.Host != "" {
		name = spec.Host
		if h, _, err := net.SplitHostPort(spec.Host); err == nil {
			name = h
		}
	}
	if name == "" {
		name = spec.Target.Addr().String()
	}
	cfg := &tls.Config{
		ServerName: name,
		// An operator who turns verification off accepts any
		// certificate: self-signed ones on real servers are common.
		InsecureSkipVerify: !spec.TLSVerify, //nolint:gosec // chosen per check
		MinVersion:         tls.VersionTLS12,
	}
	cfg.RootCAs = c.roots
	return cfg
}

// compiled returns the spec's status set and body regexp (nil when the
// body is not checked), parsing each distinct one once.
func (c *HTTPChecker) compiled(spec CheckSpec) (statusSet, *regexp.Regexp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	es := cmp.Or(spec.ExpectStatus, DefaultExpectStatus)
	set, ok := c.status[es]
	if !ok {
		var err error
		if set, err = parseStatusSet(es); err != nil {
			return nil, nil, fmt.Errorf("expect_status: %w", err)
		}
		c.status[es] = set
	}
	if spec.BodyRegex == "" {
		return set, nil, nil
	}
	re, ok := c.regexps[spec.BodyRegex]
	if !ok {
		var err error
		if re, err = regexp.Compile(spec.BodyRegex); err != nil {
			return nil, nil, fmt.Errorf("body_regex: %w", err)
		}
		c.regexps[spec.BodyRegex] = re
	}
	return set, re, nil
}
