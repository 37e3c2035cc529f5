package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/fsm"
)

// consensus is what the API needs of the Raft layer. The interface lives
// here, with its consumer, so the handlers are tested against a fake.
type consensus interface {
	Propose(ctx context.Context, cmd fsm.Command) (uint64, error)
	IsLeader() bool
	// LeaderAPI returns the leader's node ID and API address; ok is false
	// when no leader is known.
	LeaderAPI() (id, addr string, ok bool)
	VerifyLeader(ctx context.Context) error
	Members(ctx context.Context) ([]api.Member, error)
	AddVoter(ctx context.Context, id, addr string) error
	RemoveServer(ctx context.Context, id string, force bool) error
	TransferLeadership(ctx context.Context, to string) error
	Status() api.Status
}

// ipvsReporter produces `clusterctl ipvs show`'s report.
type ipvsReporter interface {
	Report(ctx context.Context) (api.IPVSReport, error)
}

// server is the HTTP/JSON API of one director.
type server struct {
	node    string
	fsm     *fsm.FSM
	raft    consensus
	ipvs    ipvsReporter
	log     *slog.Logger
	timeout time.Duration // how long a write may wait to commit
	// proxy carries forwarded requests. It ignores HTTP_PROXY: directors
	// talk to each other directly.
	proxy http.RoundTripper
	// health gives the live health views; nil leaves them out.
	health liveHealth
	// conns reads connection counters for drain --wait; nil answers 503.
	conns connectionReader
	sec   security
	// keys serves the gossip keyring endpoints; nil in insecure mode.
	keys keyringSource
	// metrics serves GET /metrics and counts every request; nil means
	// no metrics (tests).
	metrics *metrics
}

// security is how the API authenticates callers and reaches the leader.
type security struct {
	// Insecure turns authentication off: the development mode of
	// `insecure: true`, which clusterd warns about at every start.
	Insecure bool
	// ClientTLS, when set, makes forwarded requests go to the leader over
	// HTTPS with this director's certificate; nil means plain HTTP.
	ClientTLS *tls.Config
}

// connectionReader reads a real server's connection counters from this
// director's kernel table.
type connectionReader interface {
	Connections(ctx context.Context, service string, server netip.AddrPort) (api.Connections, error)
}

// liveHealth gives every director's current views of a service's
// servers, by server key and director.
type liveHealth interface {
	liveViews(service string) map[string]map[string]string
}

// forwardMargin is how much longer a follower waits for a forwarded
// request than the leader works on it, so the leader's own answer, even
// its timeout, travels back rather than being cut off here.
const forwardMargin = 5 * time.Second

func newServer(node string, f *fsm.FSM, c consensus, r ipvsReporter, log *slog.Logger, timeout time.Duration, sec security) *server {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = sec.ClientTLS
	return &server{node: node, fsm: f, raft: c, ipvs: r, log: log, timeout: timeout, proxy: tr, sec: sec}
}

// handler serves the API. Every request passes the authorization policy
// (requiredRole) before it reaches a route.
func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	s.registerTokenRoutes(mux)
	s.registerKeyringRoutes(mux)
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/vips", s.read(s.listVIPs))
	mux.HandleFunc("POST /v1/vips", s.write(s.addVIP))
	mux.HandleFunc("DELETE /v1/vips/{name}", s.write(s.deleteVIP))
	mux.HandleFunc("GET /v1/services", s.read(s.listServices))
	mux.HandleFunc("POST /v1/services", s.write(s.addService))
	mux.HandleFunc("GET /v1/services/{name}", s.read(s.getService))
	mux.HandleFunc("PATCH /v1/services/{name}", s.write(s.updateService))
	mux.HandleFunc("DELETE /v1/services/{name}", s.write(s.deleteService))
	mux.HandleFunc("GET /v1/services/{name}/servers", s.read(s.listServers))
	mux.HandleFunc("POST /v1/services/{name}/servers", s.write(s.addServer))
	mux.HandleFunc("PATCH /v1/services/{name}/servers/{server}", s.write(s.updateServer))
	mux.HandleFunc("DELETE /v1/services/{name}/servers/{server}", s.write(s.deleteServer))
	mux.HandleFunc("GET /v1/services/{name}/health", s.read(s.serviceHealth))
	mux.HandleFunc("GET /v1/services/{name}/servers/{server}/connections", s.leaderOnly(s.connections))
	mux.HandleFunc("GET /v1/snapshot", s.read(s.snapshot))
	mux.HandleFunc("POST /v1/snapshot", s.write(s.restore))
	mux.HandleFunc("GET /v1/members", s.members)
	mux.HandleFunc("POST /v1/members", s.leaderOnly(s.addMember))
	mux.HandleFunc("DELETE /v1/members/{id}", s.leaderOnly(s.removeMember))
	mux.HandleFunc("POST /v1/leader/transfer", s.leaderOnly(s.transfer))
	mux.HandleFunc("GET /v1/ipvs", s.ipvsShow)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, &api.Error{Code: api.CodeNotFound, Status: http.StatusNotFound,
			Message: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	if s.metrics == nil {
		return s.authorize(mux)
	}
	// Prometheus scrapes with a read token, like any other read.
	mux.Handle("GET /metrics", s.metrics.handler())
	return s.metrics.instrument(s.authorize(mux))
}

// mutation turns a request into a command, or fails with a client error.
type mutation func(r *http.Request) (fsm.Command, error)

// reader answers a read from the local state.
type reader func(r *http.Request, st *fsm.State) (any, error)

// write runs a mutation on the leader: a follower forwards the request. The
// command is checked against the leader's state first, so a bad request is
// refused with a clear error before it reaches the log; Apply checks it
// again with the same code.
func (s *server) write(m mutation) http.HandlerFunc {
	return s.leaderOnly(func(w http.ResponseWriter, r *http.Request) {
		cmd, err := m(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if err := s.fsm.Check(cmd); err != nil {
			s.fail(w, r, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
		defer cancel()
		idx, err := s.raft.Propose(ctx, cmd)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		attrs := []any{"cmd", cmd.Type(), "index", idx, "remote", r.RemoteAddr}
		if p, ok := principalFrom(r.Context()); ok {
			// Who changed what: the audit trail of the configuration.
			attrs = append(attrs, "token", p.TokenID)
		}
		s.log.Info("committed", attrs...)
		s.reply(w, http.StatusOK, idx, nil)
	})
}

// leaderOnly forwards a request to the leader unless this director leads.
func (s *server) leaderOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.raft.IsLeader() {
			h(w, r)
			return
		}
		s.forward(w, r)
	}
}

// read serves from the local state, or through the leader with ?consistent.
func (s *server) read(rd reader) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.consistent(w, r) {
			return
		}
		var (
			data any
			err  error
			idx  uint64
		)
		s.fsm.Read(func(st *fsm.State) {
			idx = st.Index
			data, err = rd(r, st)
		})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.reply(w, http.StatusOK, idx, data)
	}
}

// consistent prepares a read for ?consistent: a follower forwards it to the
// leader, and the leader confirms its leadership first, so the answer
// reflects every acknowledged write. It reports whether the caller should
// go on and answer from the local state; when it returns false, it has
// already answered.
func (s *server) consistent(w http.ResponseWriter, r *http.Request) bool {
	want, err := consistentParam(r)
	if err != nil {
		s.fail(w, r, err)
		return false
	}
	if !want {
		return true
	}
	if !s.raft.IsLeader() {
		s.forward(w, r)
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	if err := s.raft.VerifyLeader(ctx); err != nil {
		s.fail(w, r, err)
		return false
	}
	return true
}

// forward proxies a request to the leader's API. A request that was already
// forwarded once is not forwarded again, so two directors that each believe
// the other leads cannot bounce it between them.
func (s *server) forward(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(api.ForwardedHeader) != "" {
		s.fail(w, r, &api.Error{Code: api.CodeNotLeader, Status: http.StatusMisdirectedRequest,
			Message: fmt.Sprintf("director %s received a forwarded request but is not the leader; retry", s.node)})
		return
	}
	id, addr, ok := s.raft.LeaderAPI()
	if !ok {
		s.fail(w, r, cluster.ErrNoLeader)
		return
	}
	if id == s.node {
		// Raft elected this director, which is still committing its
		// term's barrier: forwarding would only come back here.
		s.fail(w, r, &api.Error{Code: api.CodeUnavailable, Status: http.StatusServiceUnavailable,
			Message: fmt.Sprintf("director %s was just elected leader and is catching up; retry shortly", s.node)})
		return
	}
	scheme := "http"
	if s.sec.ClientTLS != nil {
		scheme = "https"
	}
	target := &url.URL{Scheme: scheme, Host: addr}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = r.Host
			pr.Out.Header.Set(api.ForwardedHeader, s.node)
		},
		Transport: s.proxy,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.DeadlineExceeded) {
				s.fail(w, r, fmt.Errorf("forward to the leader %s at %s: %w", id, addr, err))
				return
			}
			s.fail(w, r, &api.Error{Code: api.CodeUnavailable, Status: http.StatusServiceUnavailable,
				Message: fmt.Sprintf("cannot reach the leader %s at %s: %v", id, addr, err)})
		},
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout+forwardMargin)
	defer cancel()
	proxy.ServeHTTP(w, r.WithContext(ctx))
}

func (s *server) reply(w http.ResponseWriter, status int, idx uint64, data any) {
	resp := api.Response{Index: idx}
	if data != nil {
		raw, err := json.Marshal(data)
		if err != nil {
			s.log.Error("encode response", "err", err)
			status = http.StatusInternalServerError
			writeJSON(w, status, idx, api.ErrorResponse{Index: idx, Error: api.Error{Code: api.CodeInternal, Message: "cannot encode response"}})
			return
		}
		resp.Data = raw
	}
	writeJSON(w, status, idx, resp)
}

func writeJSON(w http.ResponseWriter, status int, idx uint64, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(api.IndexHeader, strconv.FormatUint(idx, 10))
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing useful to do
}

// fail maps an error onto a status and a message a person can act on.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := toAPIError(err)
	level := slog.LevelInfo
	if e.Status >= 500 {
		level = slog.LevelWarn
	}
	s.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path,
		"status", e.Status, "code", e.Code, "err", e.Error())
	idx := s.fsm.Index()
	writeJSON(w, e.Status, idx, api.ErrorResponse{Index: idx, Error: *e})
}

func toAPIError(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		if ae.Status == 0 {
			ae.Status = http.StatusBadRequest
		}
		return ae
	}
	var fe *fsm.FieldError
	if errors.As(err, &fe) {
		e := &api.Error{Field: fe.Field, Message: fe.Reason}
		switch {
		case errors.Is(err, fsm.ErrNotFound):
			e.Code, e.Status = api.CodeNotFound, http.StatusNotFound
		case errors.Is(err, fsm.ErrConflict):
			e.Code, e.Status = api.CodeConflict, http.StatusConflict
		default:
			e.Code, e.Status = api.CodeInvalid, http.StatusBadRequest
		}
		return e
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &api.Error{Code: api.CodeTooLarge, Status: http.StatusRequestEntityTooLarge,
			Message: fmt.Sprintf("request body exceeds %d bytes", mbe.Limit)}
	case errors.Is(err, cluster.ErrNoLeader):
		return &api.Error{Code: api.CodeNoLeader, Status: http.StatusServiceUnavailable,
			Message: "no leader is elected: the cluster may have lost quorum; retry, and check `clusterctl member ls`"}
	case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrLeadershipLost), errors.Is(err, cluster.ErrShutdown):
		return &api.Error{Code: api.CodeUnavailable, Status: http.StatusServiceUnavailable,
			Message: err.Error() + "; retry"}
	case errors.Is(err, cluster.ErrWouldLoseQuorum), errors.Is(err, cluster.ErrLastVoter),
		errors.Is(err, cluster.ErrMemberExists), errors.Is(err, cluster.ErrChangeInProgress),
		errors.Is(err, cluster.ErrLeaderRemoval), errors.Is(err, cluster.ErrUntrustedPeer):
		return &api.Error{Code: api.CodeRefused, Status: http.StatusConflict, Message: err.Error()}
	case errors.Is(err, cluster.ErrUnknownMember):
		return &api.Error{Code: api.CodeNotFound, Status: http.StatusNotFound, Message: err.Error()}
	case errors.Is(err, cluster.ErrInvalidRequest):
		return &api.Error{Code: api.CodeInvalid, Status: http.StatusBadRequest, Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &api.Error{Code: api.CodeTimeout, Status: http.StatusGatewayTimeout,
			Message: "the change was not committed in time; it may still commit: check before retrying"}
	}
	return &api.Error{Code: api.CodeInternal, Status: http.StatusInternalServerError, Message: err.Error()}
}

func invalid(field, format string, args ...any) error {
	return &api.Error{Code: api.CodeInvalid, Status: http.StatusBadRequest, Field: field, Message: fmt.Sprintf(format, args...)}
}

// decode reads a bounded JSON body, refusing unknown fields so a typo is an
// error rather than a silently ignored setting.
func decode(r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(nil, r.Body, api.MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return invalid("body", "request body is empty; expected a JSON object")
		}
		return invalid("body", "malformed JSON: %v", err)
	}
	// More would let a stray '}' or ']' through; only the end of the body
	// may follow the object.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("body", "unexpected data after the JSON object")
	}
	return nil
}

func forceParam(r *http.Request) (bool, error) { return boolParam(r, "force", false) }

// consistentParam reads ?consistent; a bare "?consistent" means true.
func consistentParam(r *http.Request) (bool, error) { return boolParam(r, "consistent", true) }

// boolParam parses the query parameter name; bare is its value when it is
// given without one ("?name" or "?name=").
func boolParam(r *http.Request, name string, bare bool) (bool, error) {
	vs, ok := r.URL.Query()[name]
	if !ok {
		return false, nil
	}
	v := vs[0]
	if v == "" {
		return bare, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalid(name, "must be true or false, got %q", v)
	}
	return b, nil
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	st := s.raft.Status()
	s.reply(w, http.StatusOK, s.fsm.Index(), st)
}

func (s *server) listVIPs(_ *http.Request, st *fsm.State) (any, error) {
	out := make([]fsm.VIP, 0, len(st.VIPs))
	for _, v := range st.VIPs {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *server) addVIP(r *http.Request) (fsm.Command, error) {
	var v fsm.VIP
	if err := decode(r, &v); err != nil {
		return nil, err
	}
	return fsm.AddVIP{VIP: v}, nil
}

func (s *server) deleteVIP(r *http.Request) (fsm.Command, error) {
	force, err := forceParam(r)
	if err != nil {
		return nil, err
	}
	return fsm.DeleteVIP{Name: r.PathValue("name"), Force: force}, nil
}

func (s *server) listServices(_ *http.Request, st *fsm.State) (any, error) {
	out := make([]api.ServiceSummary, 0, len(st.Services))
	for _, svc := range st.Services {
		sum := api.ServiceSummary{Service: *svc, ServerCount: len(svc.Servers)}
		for _, rs := range svc.Servers {
			if rs.Admin == fsm.Enabled {
				sum.ActiveWeight += rs.Weight
			}
		}
		sum.Servers = nil
		out = append(out, sum)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func lookupService(st *fsm.State, name string) (*fsm.Service, error) {
	svc, ok := st.Services[name]
	if !ok {
		return nil, &fsm.FieldError{Field: "service", Reason: fmt.Sprintf("no service named %q", name), Kind: fsm.ErrNotFound}
	}
	return svc, nil
}

func (s *server) getService(r *http.Request, st *fsm.State) (any, error) {
	svc, err := lookupService(st, r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	// Marshalled while the read lock is held, so the copy is consistent.
	return json.RawMessage(mustJSON(svc)), nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// The model holds only marshallable types; failing here is a bug.
		panic(fmt.Sprintf("marshal %T: %v", v, err))
	}
	return b
}

// serviceBody fills ipvsadm's defaults for what a request leaves out:
// scheduler wlc and direct routing, and for its real servers what
// serverBody fills. The shallower Servers field shadows the embedded one
// when decoding, as serverBody's Weight does.
type serviceBody struct {
	fsm.Service
	Servers map[string]*serverBody `json:"servers,omitempty"`
}

func (s *server) addService(r *http.Request) (fsm.Command, error) {
	var b serviceBody
	if err := decode(r, &b); err != nil {
		return nil, err
	}
	svc := b.Service
	if svc.Scheduler == "" {
		svc.Scheduler = "wlc"
	}
	if svc.Method == "" {
		svc.Method = fsm.DR
	}
	if len(b.Servers) > 0 {
		svc.Servers = make(map[string]*fsm.RealServer, len(b.Servers))
	}
	for key, sb := range b.Servers {
		if sb == nil {
			return nil, invalid("servers["+key+"]", "must be an object")
		}
		rs := sb.server()
		svc.Servers[key] = &rs
	}
	return fsm.AddService{Service: svc}, nil
}

func (s *server) updateService(r *http.Request) (fsm.Command, error) {
	var p fsm.ServicePatch
	if err := decode(r, &p); err != nil {
		return nil, err
	}
	return fsm.UpdateService{Name: r.PathValue("name"), Patch: p}, nil
}

func (s *server) deleteService(r *http.Request) (fsm.Command, error) {
	return fsm.DeleteService{Name: r.PathValue("name")}, nil
}

func (s *server) listServers(r *http.Request, st *fsm.State) (any, error) {
	svc, err := lookupService(st, r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	out := make([]fsm.RealServer, 0, len(svc.Servers))
	for _, rs := range svc.Servers {
		out = append(out, *rs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}

// serverBody makes an omitted weight mean 1, as ipvsadm does: the shallower
// Weight field shadows the embedded one when decoding. An omitted method
// and admin state are left to fsm, which resolves them to the service's
// method and enabled.
type serverBody struct {
	fsm.RealServer
	Weight *int `json:"weight,omitempty"`
}

func (b *serverBody) server() fsm.RealServer {
	rs := b.RealServer
	rs.Weight = 1
	if b.Weight != nil {
		rs.Weight = *b.Weight
	}
	return rs
}

func (s *server) addServer(r *http.Request) (fsm.Command, error) {
	var b serverBody
	if err := decode(r, &b); err != nil {
		return nil, err
	}
	return fsm.AddServer{Service: r.PathValue("name"), Server: b.server()}, nil
}

func parseServerKey(raw string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(raw)
	if err != nil {
		return netip.AddrPort{}, invalid("server", "want ADDRESS:PORT such as 10.0.0.1:80 or [2001:db8::1]:80, got %q", raw)
	}
	return ap, nil
}

func (s *server) updateServer(r *http.Request) (fsm.Command, error) {
	ap, err := parseServerKey(r.PathValue("server"))
	if err != nil {
		return nil, err
	}
	var p fsm.ServerPatch
	if err := decode(r, &p); err != nil {
		return nil, err
	}
	return fsm.UpdateServer{Service: r.PathValue("name"), Address: ap.Addr(), Port: int(ap.Port()), Patch: p}, nil
}

func (s *server) deleteServer(r *http.Request) (fsm.Command, error) {
	ap, err := parseServerKey(r.PathValue("server"))
	if err != nil {
		return nil, err
	}
	return fsm.DeleteServer{Service: r.PathValue("name"), Address: ap.Addr(), Port: int(ap.Port())}, nil
}

// snapshot is the configuration without the token table and the gossip
// keyring: credentials are not configuration, a read token must not hand
// out gossip keys, and a restore refuses both (see fsm.ReplaceState).
func (s *server) snapshot(_ *http.Request, st *fsm.State) (any, error) {
	cfg := *st
	cfg.Tokens = nil
	cfg.Keyring = nil
	return json.RawMessage(mustJSON(&cfg)), nil
}

func (s *server) restore(r *http.Request) (fsm.Command, error) {
	var st fsm.State
	if err := decode(r, &st); err != nil {
		return nil, err
	}
	return fsm.ReplaceState{State: st}, nil
}

func (s *server) members(w http.ResponseWriter, r *http.Request) {
	if !s.consistent(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	ms, err := s.raft.Members(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.reply(w, http.StatusOK, s.fsm.Index(), ms)
}

func (s *server) addMember(w http.ResponseWriter, r *http.Request) {
	var m api.MemberAdd
	if err := decode(r, &m); err != nil {
		s.fail(w, r, err)
		return
	}
	if m.ID == "" {
		s.fail(w, r, invalid("id", "is required"))
		return
	}
	if _, err := netip.ParseAddrPort(m.Address); err != nil {
		s.fail(w, r, invalid("address", "want the new director's raft HOST:PORT, got %q", m.Address))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	if err := s.raft.AddVoter(ctx, m.ID, m.Address); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("member added", "member", m.ID, "address", m.Address)
	s.reply(w, http.StatusOK, s.fsm.Index(), nil)
}

func (s *server) removeMember(w http.ResponseWriter, r *http.Request) {
	force, err := forceParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	if err := s.raft.RemoveServer(ctx, id, force); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("member removed", "member", id, "force", force)
	s.reply(w, http.StatusOK, s.fsm.Index(), nil)
}

func (s *server) transfer(w http.ResponseWriter, r *http.Request) {
	var t api.LeaderTransfer
	if err := decode(r, &t); err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	if err := s.raft.TransferLeadership(ctx, t.To); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("leadership transferred", "to", t.To)
	s.reply(w, http.StatusOK, s.fsm.Index(), nil)
}

func (s *server) ipvsShow(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	rep, err := s.ipvs.Report(ctx)
	if err != nil {
		s.fail(w, r, fmt.Errorf("read the IPVS table: %w", err))
		return
	}
	s.reply(w, http.StatusOK, rep.Index, rep)
}

func (s *server) serviceHealth(r *http.Request, st *fsm.State) (any, error) {
	svc, err := lookupService(st, r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	var live map[string]map[string]string
	if s.health != nil {
		live = s.health.liveViews(svc.Name)
	}
	out := api.ServiceHealth{Service: svc.Name, Node: s.node, HealthyWeight: fsm.HealthyWeight(svc),
		Quorum: svc.EffectiveQuorum(), QuorumLost: svc.QuorumLost, Servers: make([]api.ServerHealth, 0, len(svc.Servers))}
	for key, rs := range svc.Servers {
		sh := api.ServerHealth{Server: key, Admin: rs.Admin}
		if cc := fsm.EffectiveCheck(svc, rs); cc != nil {
			sh.Check = cc.Kind
			sh.Live = live[key]
		}
		if rs.Health != nil {
			sh.State, sh.Index, sh.Views = rs.Health.State, rs.Health.Index, rs.Health.Views
		}
		out.Servers = append(out.Servers, sh)
	}
	sort.Slice(out.Servers, func(i, j int) bool { return out.Servers[i].Server < out.Servers[j].Server })
	// Marshalled under the read lock: Views point into the state.
	return json.RawMessage(mustJSON(out)), nil
}

// connections reads a real server's connection counts from this leader's
// kernel table, for `clusterctl server drain --wait`.
func (s *server) connections(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ap, err := parseServerKey(r.PathValue("server"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	key := ap.String()
	var known bool
	s.fsm.Read(func(st *fsm.State) {
		if svc, ok := st.Services[name]; ok {
			_, known = svc.Servers[key]
			if !known && svc.Sorry != nil {
				known = fsm.ServerKey(svc.Sorry.Address, svc.Sorry.Port) == key
			}
		}
	})
	if !known {
		s.fail(w, r, &fsm.FieldError{Field: "server", Reason: fmt.Sprintf("service %q has no real server %s", name, key), Kind: fsm.ErrNotFound})
		return
	}
	if s.conns == nil {
		s.fail(w, r, &api.Error{Code: api.CodeUnavailable, Status: http.StatusServiceUnavailable,
			Message: "this director cannot read connection counters"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	out, err := s.conns.Connections(ctx, name, ap)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.reply(w, http.StatusOK, s.fsm.Index(), out)
}
