package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/directorate/directorate/fsm"
)

// DefaultTimeout bounds one request when no WithTimeout option is given. A
// write waits for a quorum commit, which takes milliseconds when the cluster
// is healthy; the bound only matters when it is not.
const DefaultTimeout = 30 * time.Second

// maxResponseBytes bounds a response body: a snapshot carries a state that
// must itself fit in a MaxBodyBytes restore request, plus the envelope.
const maxResponseBytes = MaxBodyBytes + 1<<20

// maxErrorBytes bounds a failure's body; a JSON ErrorResponse is tiny, and
// anything larger is a proxy's HTML page of which only a snippet is shown.
const maxErrorBytes = 1 << 20

// snippetLen is how much of a non-JSON body an error message quotes.
const snippetLen = 160

// Client calls the clusterd HTTP API. It is safe for concurrent use.
type Client struct {
	base       *url.URL
	hc         *http.Client
	timeout    time.Duration
	userAgent  string
	hint       string
	consistent bool
	// token is sent as a bearer token with every request.
	token string
	// maxResponse is maxResponseBytes; tests lower it.
	maxResponse int64
}

// Option configures a Client.
type Option func(*Client) error

// WithHTTPClient makes the client send its requests through hc, for
// instance one whose transport carries TLS settings.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return errors.New("http client must not be nil")
		}
		c.hc = hc
		return nil
	}
}

// WithTimeout bounds each request, including the wait for a write to
// commit. Zero means no bound beyond the caller's context.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) error {
		if d < 0 {
			return fmt.Errorf("timeout %s must not be negative", d)
		}
		c.timeout = d
		return nil
	}
}

// WithToken sends tok, an API token ("ID.SECRET"), with every request.
func WithToken(tok string) Option {
	return func(c *Client) error {
		if strings.ContainsAny(tok, " \t\r\n") {
			return errors.New("API token must not contain spaces or line breaks")
		}
		c.token = tok
		return nil
	}
}

// WithTLSConfig sends requests over TLS with cfg: the cluster CA in
// RootCAs, and a client certificate when one is needed. It replaces the
// HTTP client, so it and WithHTTPClient exclude each other. Proxies from
// the environment are ignored: clusterd is reached directly.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *Client) error {
		if cfg == nil {
			return errors.New("TLS configuration must not be nil")
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		tr.TLSClientConfig = cfg
		c.hc = &http.Client{Transport: tr}
		return nil
	}
}

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) Option {
	return func(c *Client) error {
		c.userAgent = ua
		return nil
	}
}

// WithUnreachableHint replaces the advice appended to an UnreachableError,
// so a program can name its own way of setting the address.
func WithUnreachableHint(hint string) Option {
	return func(c *Client) error {
		c.hint = hint
		return nil
	}
}

// New returns a client of the clusterd at baseURL. baseURL is either a URL
// ("http://10.0.0.1:7950", "https://lb.example/prefix") or a bare host:port,
// which means plain HTTP.
func New(baseURL string, opts ...Option) (*Client, error) {
	base, err := parseBase(baseURL)
	if err != nil {
		return nil, err
	}
	c := &Client{
		base:      base,
		hc:        http.DefaultClient,
		timeout:   DefaultTimeout,
		userAgent: "directorate-api-client",
		hint:      "is it running?",

		maxResponse: maxResponseBytes,
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, fmt.Errorf("clusterd client: %w", err)
		}
	}
	return c, nil
}

func parseBase(raw string) (*url.URL, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return nil, errors.New("clusterd address is empty (want host:port or a URL)")
	}
	if !strings.Contains(s, "://") {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			return nil, fmt.Errorf("clusterd address %q: want host:port, such as 127.0.0.1:7950 or [::1]:7950, or a URL", raw)
		}
		if host == "" {
			return nil, fmt.Errorf("clusterd address %q: host is empty", raw)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("clusterd address %q: port %q is not a number in 1-65535", raw, port)
		}
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("clusterd address %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("clusterd address %q: scheme %q is not http or https", raw, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("clusterd address %q: host is empty", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("clusterd address %q: want only scheme, host, port and an optional path prefix", raw)
	}
	// A path prefix is kept so clusterd can sit behind a reverse proxy.
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	return u, nil
}

// BaseURL returns the URL the client sends requests to.
func (c *Client) BaseURL() string { return c.base.String() }

// Consistent returns a copy of c whose reads are answered by the leader
// after it confirms its leadership, so they reflect every acknowledged
// write. Plain reads may be served, slightly stale, by any director.
func (c *Client) Consistent() *Client {
	cc := *c
	cc.consistent = true
	return &cc
}

// UnreachableError reports that clusterd could not be reached, or did not
// answer, as opposed to answering with an error.
type UnreachableError struct {
	// Addr is the base URL that was tried.
	Addr string
	// Err is the transport error.
	Err error
	// Hint is advice for the person reading the message.
	Hint string
}

// Error names the address, the cause and the hint.
func (e *UnreachableError) Error() string {
	msg := fmt.Sprintf("cannot reach clusterd at %s: %s", e.Addr, transportCause(e.Err))
	if e.Hint != "" {
		msg += " — " + e.Hint
	}
	return msg
}

// Unwrap exposes the transport error, so errors.Is can match for instance
// syscall.ECONNREFUSED.
func (e *UnreachableError) Unwrap() error { return e.Err }

// transportCause shortens a transport error to its cause: url.Error repeats
// the whole request URL, and net.OpError repeats the address already named.
func transportCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		err = se.Err
	}
	return err.Error()
}

// TimeoutError reports that clusterd did not answer in time. A write may
// still commit after it.
type TimeoutError struct {
	// Addr is the base URL that was asked.
	Addr string
	// Timeout is the client's per-request bound; zero when it has none
	// and the caller's context ran out.
	Timeout time.Duration
	// Err is the underlying error.
	Err error
}

// Error says who did not answer, and that a write may still commit.
func (e *TimeoutError) Error() string {
	within := ""
	if e.Timeout > 0 {
		within = " within " + e.Timeout.String()
	}
	return fmt.Sprintf("no answer from clusterd at %s%s (a write may still commit; check before retrying)", e.Addr, within)
}

// Unwrap exposes the underlying error, normally context.DeadlineExceeded.
func (e *TimeoutError) Unwrap() error { return e.Err }

// request is one API call: what to send and where to put the answer.
type request struct {
	method string
	// segments are the path elements after /v1; each is escaped on its own.
	segments []string
	query    url.Values
	body     any
	// out receives Data; nil means the data is not needed.
	out any
	// list marks a list endpoint, where absent or null data means empty
	// (a Go server encodes an empty nil slice as null).
	list bool
}

func (c *Client) do(ctx context.Context, r request) (uint64, error) {
	u, err := c.url(r)
	if err != nil {
		return 0, err
	}
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return 0, fmt.Errorf("encode %s %s request: %w", r.method, u.Path, err)
		}
		if len(b) > MaxBodyBytes {
			return 0, &Error{Code: CodeTooLarge, Message: fmt.Sprintf("request body of %d bytes exceeds the limit of %d", len(b), MaxBodyBytes)}
		}
		body = bytes.NewReader(b)
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return 0, fmt.Errorf("build %s %s request: %w", r.method, u.Path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, c.transportError(ctx, err)
	}
	defer resp.Body.Close()
	headerIndex, _ := strconv.ParseUint(resp.Header.Get(IndexHeader), 10, 64)

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		raw, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		if err != nil {
			return headerIndex, c.transportError(ctx, err)
		}
		return decodeError(resp, raw, headerIndex, c.base.String())
	}

	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.maxResponse+1))
	if err != nil {
		return headerIndex, c.transportError(ctx, err)
	}
	if int64(len(raw)) > c.maxResponse {
		return headerIndex, fmt.Errorf("%s %s: response exceeds %d bytes", r.method, u.Path, c.maxResponse)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		if r.out != nil {
			return headerIndex, fmt.Errorf("%s %s: clusterd answered %s with an empty body", r.method, u.Path, resp.Status)
		}
		return headerIndex, nil
	}
	var env Response
	if err := json.Unmarshal(raw, &env); err != nil {
		return headerIndex, fmt.Errorf("%s %s: clusterd answered %s with a body that is not a JSON response (%v): %s", r.method, u.Path, resp.Status, err, snippet(raw))
	}
	index := env.Index
	if index == 0 {
		index = headerIndex
	}
	if r.out == nil {
		return index, nil
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		if r.list {
			return index, nil
		}
		return index, fmt.Errorf("%s %s: response carries no data", r.method, u.Path)
	}
	if err := json.Unmarshal(env.Data, r.out); err != nil {
		return index, fmt.Errorf("%s %s: decode response data: %w", r.method, u.Path, err)
	}
	return index, nil
}

func (c *Client) url(r request) (*url.URL, error) {
	u := *c.base
	path, raw := u.Path+"/v1", u.EscapedPath()+"/v1"
	for _, s := range r.segments {
		// An empty, "." or ".." segment would address a different resource
		// once the path is cleaned, so it is refused rather than sent.
		if s == "" || s == "." || s == ".." {
			return nil, &Error{Code: CodeInvalid, Message: fmt.Sprintf("%q is not a valid name", s)}
		}
		path += "/" + s
		raw += "/" + url.PathEscape(s)
	}
	u.Path, u.RawPath = path, raw
	q := url.Values{}
	for k, v := range r.query {
		q[k] = v
	}
	if c.consistent && r.method == http.MethodGet {
		q.Set("consistent", "true")
	}
	u.RawQuery = q.Encode()
	return &u, nil
}

func (c *Client) transportError(ctx context.Context, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		if !errors.Is(err, context.DeadlineExceeded) {
			// A body read cut short by the deadline reports a plain I/O
			// error; keep errors.Is(err, DeadlineExceeded) true.
			err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
		return &TimeoutError{Addr: c.base.String(), Timeout: c.timeout, Err: err}
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("request to clusterd at %s: %w", c.base.String(), context.Canceled)
	}
	return &UnreachableError{Addr: c.base.String(), Err: err, Hint: c.hint}
}

// decodeError turns a failure response into an *Error, keeping the server's
// code and field when the body is an ErrorResponse.
func decodeError(resp *http.Response, raw []byte, headerIndex uint64, addr string) (uint64, error) {
	var er ErrorResponse
	if err := json.Unmarshal(raw, &er); err == nil && (er.Error.Code != "" || er.Error.Message != "") {
		e := er.Error
		e.Status = resp.StatusCode
		if e.Code == "" {
			e.Code = codeForStatus(resp.StatusCode)
		}
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
		index := er.Index
		if index == 0 {
			index = headerIndex
		}
		return index, &e
	}
	msg := fmt.Sprintf("clusterd at %s answered %s", addr, resp.Status)
	if s := snippet(raw); s != "" {
		msg += " with a body that is not a clusterd error: " + s
	} else {
		msg += " with an empty body"
	}
	return headerIndex, &Error{Code: codeForStatus(resp.StatusCode), Message: msg, Status: resp.StatusCode}
}

// codeForStatus guesses the error code of a failure that did not come with
// one, such as a proxy's error page.
func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeInvalid
	case http.StatusUnauthorized, http.StatusForbidden:
		return CodeDenied
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusConflict:
		return CodeConflict
	case http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType:
		return CodeUnsupported
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusMisdirectedRequest:
		return CodeNotLeader
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return CodeUnavailable
	case http.StatusGatewayTimeout:
		return CodeTimeout
	}
	return CodeInternal
}

// snippet quotes the start of a body on one line, so an HTML error page
// neither floods the terminal nor hides the status.
func snippet(raw []byte) string {
	s := strings.Join(strings.FieldsFunc(string(raw), unicode.IsSpace), " ")
	if s == "" {
		return ""
	}
	if r := []rune(s); len(r) > snippetLen {
		s = string(r[:snippetLen]) + "…"
	}
	return strconv.Quote(s)
}

func forceQuery(force bool) url.Values {
	if !force {
		return nil
	}
	return url.Values{"force": {"true"}}
}

// Status describes the director the client talks to.
func (c *Client) Status(ctx context.Context) (Status, uint64, error) {
	var s Status
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"status"}, out: &s})
	return s, i, err
}

// VIPs lists the VIPs.
func (c *Client) VIPs(ctx context.Context) ([]fsm.VIP, uint64, error) {
	var v []fsm.VIP
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"vips"}, out: &v, list: true})
	return v, i, err
}

// AddVIP adds a VIP and returns the index that committed it.
func (c *Client) AddVIP(ctx context.Context, v fsm.VIP) (uint64, error) {
	return c.do(ctx, request{method: http.MethodPost, segments: []string{"vips"}, body: v})
}

// DeleteVIP removes a VIP. Without force it is refused while a service uses
// it; with force those services go too.
func (c *Client) DeleteVIP(ctx context.Context, name string, force bool) (uint64, error) {
	return c.do(ctx, request{method: http.MethodDelete, segments: []string{"vips", name}, query: forceQuery(force)})
}

// Services lists the services, without their real servers.
func (c *Client) Services(ctx context.Context) ([]ServiceSummary, uint64, error) {
	var s []ServiceSummary
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"services"}, out: &s, list: true})
	return s, i, err
}

// Service returns one service.
func (c *Client) Service(ctx context.Context, name string) (fsm.Service, uint64, error) {
	var s fsm.Service
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"services", name}, out: &s})
	return s, i, err
}

// AddService adds a service, with any real servers it carries.
func (c *Client) AddService(ctx context.Context, s fsm.Service) (uint64, error) {
	return c.do(ctx, request{method: http.MethodPost, segments: []string{"services"}, body: s})
}

// UpdateService changes the fields of a service that patch sets.
func (c *Client) UpdateService(ctx context.Context, name string, patch fsm.ServicePatch) (uint64, error) {
	return c.do(ctx, request{method: http.MethodPatch, segments: []string{"services", name}, body: patch})
}

// DeleteService removes a service and its real servers.
func (c *Client) DeleteService(ctx context.Context, name string) (uint64, error) {
	return c.do(ctx, request{method: http.MethodDelete, segments: []string{"services", name}})
}

// Servers lists the real servers of a service.
func (c *Client) Servers(ctx context.Context, service string) ([]fsm.RealServer, uint64, error) {
	var s []fsm.RealServer
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"services", service, "servers"}, out: &s, list: true})
	return s, i, err
}

// AddServer adds a real server to a service.
func (c *Client) AddServer(ctx context.Context, service string, server fsm.RealServer) (uint64, error) {
	return c.do(ctx, request{method: http.MethodPost, segments: []string{"services", service, "servers"}, body: server})
}

// UpdateServer changes the fields of a real server that patch sets.
func (c *Client) UpdateServer(ctx context.Context, service string, addr netip.Addr, port int, patch fsm.ServerPatch) (uint64, error) {
	key, err := serverKey(addr, port)
	if err != nil {
		return 0, err
	}
	return c.do(ctx, request{method: http.MethodPatch, segments: []string{"services", service, "servers", key}, body: patch})
}

// DeleteServer removes a real server from a service.
func (c *Client) DeleteServer(ctx context.Context, service string, addr netip.Addr, port int) (uint64, error) {
	key, err := serverKey(addr, port)
	if err != nil {
		return 0, err
	}
	return c.do(ctx, request{method: http.MethodDelete, segments: []string{"services", service, "servers", key}})
}

// ServiceHealth returns the committed and live health of a service's
// real servers.
func (c *Client) ServiceHealth(ctx context.Context, service string) (ServiceHealth, uint64, error) {
	var h ServiceHealth
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"services", service, "health"}, out: &h})
	return h, i, err
}

// Connections returns a real server's connection counts in the leader's
// kernel table.
func (c *Client) Connections(ctx context.Context, service string, addr netip.Addr, port int) (Connections, uint64, error) {
	key, err := serverKey(addr, port)
	if err != nil {
		return Connections{}, 0, err
	}
	var conns Connections
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"services", service, "servers", key, "connections"}, out: &conns})
	return conns, i, err
}

// serverKey refuses what fsm.ServerKey would silently mangle: an invalid
// address, or a port that does not fit in 16 bits.
func serverKey(addr netip.Addr, port int) (string, error) {
	if !addr.IsValid() {
		return "", &Error{Code: CodeInvalid, Field: "address", Message: "no real-server address given"}
	}
	if port < 0 || port > 65535 {
		return "", &Error{Code: CodeInvalid, Field: "port", Message: fmt.Sprintf("port %d is out of range 0-65535", port)}
	}
	return fsm.ServerKey(addr, port), nil
}

// Members lists the Raft members.
func (c *Client) Members(ctx context.Context) ([]Member, uint64, error) {
	var m []Member
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"members"}, out: &m, list: true})
	return m, i, err
}

// AddMember adds a voter with the given node ID and Raft address.
func (c *Client) AddMember(ctx context.Context, id, address string) (uint64, error) {
	return c.do(ctx, request{method: http.MethodPost, segments: []string{"members"}, body: MemberAdd{ID: id, Address: address}})
}

// RemoveMember removes a member. Force overrides the safety checks that
// would otherwise refuse the removal.
func (c *Client) RemoveMember(ctx context.Context, id string, force bool) (uint64, error) {
	return c.do(ctx, request{method: http.MethodDelete, segments: []string{"members", id}, query: forceQuery(force)})
}

// TransferLeader asks the leader to hand leadership to the node to, or to
// the most up-to-date follower when to is empty.
func (c *Client) TransferLeader(ctx context.Context, to string) (uint64, error) {
	return c.do(ctx, request{method: http.MethodPost, segments: []string{"leader", "transfer"}, body: LeaderTransfer{To: to}})
}

// Snapshot returns the whole replicated configuration.
func (c *Client) Snapshot(ctx context.Context) (fsm.State, uint64, error) {
	var s fsm.State
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"snapshot"}, out: &s})
	return s, i, err
}

// SnapshotJSON returns the configuration exactly as clusterd sent it, so a
// saved copy keeps fields this client does not know.
func (c *Client) SnapshotJSON(ctx context.Context) (json.RawMessage, uint64, error) {
	var s json.RawMessage
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"snapshot"}, out: &s})
	return s, i, err
}

// Restore replaces the whole configuration with state.
func (c *Client) Restore(ctx context.Context, state fsm.State) (uint64, error) {
	return c.do(ctx, request{method: http.MethodPost, segments: []string{"snapshot"}, body: state})
}

// IPVS puts the director's kernel IPVS table next to the desired state.
func (c *Client) IPVS(ctx context.Context) (IPVSReport, uint64, error) {
	var r IPVSReport
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"ipvs"}, out: &r})
	return r, i, err
}
