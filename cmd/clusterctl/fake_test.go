package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

// request is one call the fake API received.
type request struct {
	Method string
	Path   string // escaped
	Query  string
	Body   string
}

// fakeAPI is an in-memory clusterd that honours the contract in
// api/types.go: the routes, strict JSON bodies, the Response and
// ErrorResponse envelopes, the index header, and enough validation to
// produce the errors a real director would.
type fakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	index    uint64
	vips     map[string]fsm.VIP
	services map[string]*fsm.Service
	members  []api.Member
	ipvs     api.IPVSReport
	// live and conns answer the health and connections endpoints: live
	// views by server key, and the active connection counts each read of
	// a server returns in turn (the last one repeats; -1 answers 421
	// not_leader, as a director does during a failover).
	live  map[string]map[string]string
	conns map[string][]int
	reqs  []request
	// intercept, when set, answers a request before the routes do; it
	// returns false to let the request through.
	intercept func(w http.ResponseWriter, r *http.Request) bool
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{
		t:        t,
		index:    10,
		vips:     map[string]fsm.VIP{},
		services: map[string]*fsm.Service{},
		members: []api.Member{
			{ID: "d1", Address: "10.0.0.11:7946", Suffrage: "Voter", Leader: true, APIAddress: "10.0.0.11:7950", Gossip: "alive"},
			{ID: "d2", Address: "10.0.0.12:7946", Suffrage: "Voter", Gossip: "alive"},
			{ID: "d3", Address: "10.0.0.13:7946", Suffrage: "Voter", Gossip: "suspect"},
		},
	}
	mux := http.NewServeMux()
	for pattern, h := range map[string]func(http.ResponseWriter, *http.Request) (any, error){
		"GET /v1/status":                                         f.status,
		"GET /v1/vips":                                           f.listVIPs,
		"POST /v1/vips":                                          f.addVIP,
		"DELETE /v1/vips/{name}":                                 f.deleteVIP,
		"GET /v1/services":                                       f.listServices,
		"POST /v1/services":                                      f.addService,
		"GET /v1/services/{name}":                                f.getService,
		"PATCH /v1/services/{name}":                              f.patchService,
		"DELETE /v1/services/{name}":                             f.deleteService,
		"GET /v1/services/{name}/servers":                        f.listServers,
		"POST /v1/services/{name}/servers":                       f.addServer,
		"PATCH /v1/services/{name}/servers/{addrport}":           f.patchServer,
		"DELETE /v1/services/{name}/servers/{addrport}":          f.deleteServer,
		"GET /v1/members":                                        f.listMembers,
		"POST /v1/members":                                       f.addMember,
		"DELETE /v1/members/{id}":                                f.removeMember,
		"POST /v1/leader/transfer":                               f.transfer,
		"GET /v1/snapshot":                                       f.snapshot,
		"POST /v1/snapshot":                                      f.restore,
		"GET /v1/ipvs":                                           f.getIPVS,
		"GET /v1/services/{name}/health":                         f.serviceHealth,
		"GET /v1/services/{name}/servers/{addrport}/connections": f.connections,
	} {
		mux.HandleFunc(pattern, f.wrap(h))
	}
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// addr is the fake's address in host:port form, as an operator types it.
func (f *fakeAPI) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// apiErr is a failure the fake answers with an ErrorResponse.
type apiErr struct {
	status           int
	code, field, msg string
}

func (e *apiErr) Error() string { return e.msg }

func invalid(field, format string, args ...any) error {
	return &apiErr{http.StatusBadRequest, api.CodeInvalid, field, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &apiErr{http.StatusNotFound, api.CodeNotFound, "", fmt.Sprintf(format, args...)}
}

func conflict(code, field, format string, args ...any) error {
	return &apiErr{http.StatusConflict, code, field, fmt.Sprintf(format, args...)}
}

// written marks a handler result that committed a change.
type written struct{ data any }

func (f *fakeAPI) wrap(h func(http.ResponseWriter, *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			f.t.Errorf("fake: read body: %v", err)
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		f.mu.Lock()
		defer f.mu.Unlock()
		f.reqs = append(f.reqs, request{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Body: string(body)})
		if f.intercept != nil && f.intercept(w, r) {
			return
		}
		data, err := h(w, r)
		if wr, ok := data.(written); ok {
			f.index++
			data = wr.data
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(api.IndexHeader, fmt.Sprint(f.index))
		if err != nil {
			e, ok := err.(*apiErr)
			if !ok {
				e = &apiErr{http.StatusInternalServerError, api.CodeInternal, "", err.Error()}
			}
			w.WriteHeader(e.status)
			_ = json.NewEncoder(w).Encode(api.ErrorResponse{Index: f.index, Error: api.Error{Code: e.code, Field: e.field, Message: e.msg}})
			return
		}
		resp := api.Response{Index: f.index}
		if data != nil {
			raw, err := json.Marshal(data)
			if err != nil {
				f.t.Errorf("fake: encode: %v", err)
			}
			resp.Data = raw
		}
		_ = json.NewEncoder(w).Encode(resp)
	}
}

// decode reads a body strictly, as clusterd does.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("", "bad request body: %v", err)
	}
	return nil
}

func (f *fakeAPI) status(http.ResponseWriter, *http.Request) (any, error) {
	s := api.Status{Node: "d1", Version: "v0.1.0", State: "Leader", Leader: "d1", LeaderAddr: "10.0.0.11:7946",
		Term: 3, Index: f.index, Voters: 3, Backend: "dry-run", Services: len(f.services)}
	for _, v := range f.vips {
		s.VIPs = append(s.VIPs, api.VIPHolder{Name: v.Name, Prefix: v.Prefix, Holder: "d1"})
	}
	for _, svc := range f.services {
		s.Servers += len(svc.Servers)
	}
	return s, nil
}

func (f *fakeAPI) listVIPs(http.ResponseWriter, *http.Request) (any, error) {
	out := []fsm.VIP{}
	for _, v := range f.vips {
		out = append(out, v)
	}
	return out, nil
}

func (f *fakeAPI) addVIP(_ http.ResponseWriter, r *http.Request) (any, error) {
	var v fsm.VIP
	if err := decode(r, &v); err != nil {
		return nil, err
	}
	if v.Name == "" {
		return nil, invalid("vip.name", "must not be empty")
	}
	if !v.Prefix.IsValid() {
		return nil, invalid("vip.prefix", "must be an address with a prefix length")
	}
	if _, ok := f.vips[v.Name]; ok {
		return nil, conflict(api.CodeConflict, "vip.name", "VIP %s already exists", v.Name)
	}
	f.vips[v.Name] = v
	return written{v}, nil
}

func (f *fakeAPI) deleteVIP(_ http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	if _, ok := f.vips[name]; !ok {
		return nil, notFound("VIP %s not found", name)
	}
	var users []string
	for _, s := range f.services {
		if s.VIP == name {
			users = append(users, s.Name)
		}
	}
	if len(users) > 0 && r.URL.Query().Get("force") != "true" {
		return nil, conflict(api.CodeRefused, "", "VIP %s is used by services %s; use force to remove them too", name, strings.Join(users, ", "))
	}
	for _, u := range users {
		delete(f.services, u)
	}
	delete(f.vips, name)
	return written{}, nil
}

func (f *fakeAPI) listServices(http.ResponseWriter, *http.Request) (any, error) {
	out := []api.ServiceSummary{}
	for _, s := range f.services {
		sum := api.ServiceSummary{Service: *s, ServerCount: len(s.Servers)}
		sum.Servers = nil
		for _, rs := range s.Servers {
			if rs.Admin == fsm.Enabled {
				sum.ActiveWeight += rs.Weight
			}
		}
		out = append(out, sum)
	}
	return out, nil
}

func (f *fakeAPI) service(name string) (*fsm.Service, error) {
	s, ok := f.services[name]
	if !ok {
		return nil, notFound("service %s not found", name)
	}
	return s, nil
}

func (f *fakeAPI) addService(_ http.ResponseWriter, r *http.Request) (any, error) {
	var s fsm.Service
	if err := decode(r, &s); err != nil {
		return nil, err
	}
	if _, ok := f.services[s.Name]; ok {
		return nil, conflict(api.CodeConflict, "service.name", "service %s already exists", s.Name)
	}
	if s.VIP != "" {
		if _, ok := f.vips[s.VIP]; !ok {
			return nil, invalid("service.vip", "VIP %s does not exist", s.VIP)
		}
	}
	if s.Method == "" {
		return nil, invalid("service.method", "must be nat, dr or tun")
	}
	if s.Servers == nil {
		s.Servers = map[string]*fsm.RealServer{}
	}
	f.services[s.Name] = &s
	return written{s}, nil
}

func (f *fakeAPI) getService(_ http.ResponseWriter, r *http.Request) (any, error) {
	return f.service(r.PathValue("name"))
}

func (f *fakeAPI) patchService(_ http.ResponseWriter, r *http.Request) (any, error) {
	s, err := f.service(r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	var p fsm.ServicePatch
	if err := decode(r, &p); err != nil {
		return nil, err
	}
	if p.NoPersistence && p.Persistence != nil {
		return nil, invalid("no_persistence", "conflicts with persistence")
	}
	if p.Scheduler != nil {
		s.Scheduler = *p.Scheduler
	}
	if p.SchedFlags != nil {
		s.SchedFlags = *p.SchedFlags
	}
	if p.Persistence != nil {
		pp := *p.Persistence
		s.Persistence = &pp
	}
	if p.NoPersistence {
		s.Persistence = nil
	}
	if p.OnePacket != nil {
		s.OnePacket = *p.OnePacket
	}
	if p.Method != nil {
		s.Method = *p.Method
	}
	if p.Check != nil {
		c := *p.Check
		s.Check = &c
	}
	if p.NoCheck {
		s.Check = nil
	}
	set(p.DownAction, &s.DownAction)
	set(p.Quorum, &s.Quorum)
	set(p.QuorumHysteresis, &s.QuorumHysteresis)
	if p.Sorry != nil {
		ss := *p.Sorry
		s.Sorry = &ss
	}
	if p.NoSorry {
		s.Sorry = nil
	}
	return written{s}, nil
}

func (f *fakeAPI) deleteService(_ http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := f.service(r.PathValue("name")); err != nil {
		return nil, err
	}
	delete(f.services, r.PathValue("name"))
	return written{}, nil
}

func (f *fakeAPI) listServers(_ http.ResponseWriter, r *http.Request) (any, error) {
	s, err := f.service(r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	out := []fsm.RealServer{}
	for _, rs := range s.Servers {
		out = append(out, *rs)
	}
	return out, nil
}

func (f *fakeAPI) addServer(_ http.ResponseWriter, r *http.Request) (any, error) {
	s, err := f.service(r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	var rs fsm.RealServer
	if err := decode(r, &rs); err != nil {
		return nil, err
	}
	if rs.Method == "" {
		rs.Method = s.Method
	}
	if rs.Admin == "" {
		rs.Admin = fsm.Enabled
	}
	if rs.Method != fsm.NAT && s.Port != 0 && rs.Port != s.Port {
		return nil, invalid("server.port", "%s cannot remap ports: port %d differs from service port %d",
			strings.ToUpper(string(rs.Method)), rs.Port, s.Port)
	}
	if _, ok := s.Servers[rs.Key()]; ok {
		return nil, conflict(api.CodeConflict, "server", "server %s already exists in service %s", rs.Key(), s.Name)
	}
	s.Servers[rs.Key()] = &rs
	return written{rs}, nil
}

func (f *fakeAPI) server(r *http.Request) (*fsm.RealServer, *fsm.Service, error) {
	s, err := f.service(r.PathValue("name"))
	if err != nil {
		return nil, nil, err
	}
	key := r.PathValue("addrport")
	if _, err := netip.ParseAddrPort(key); err != nil {
		return nil, nil, invalid("addrport", "%q is not ADDR:PORT", key)
	}
	rs, ok := s.Servers[key]
	if !ok {
		return nil, nil, notFound("server %s not found in service %s", key, s.Name)
	}
	return rs, s, nil
}

func (f *fakeAPI) patchServer(_ http.ResponseWriter, r *http.Request) (any, error) {
	rs, _, err := f.server(r)
	if err != nil {
		return nil, err
	}
	var p fsm.ServerPatch
	if err := decode(r, &p); err != nil {
		return nil, err
	}
	if p.Weight != nil && (*p.Weight < 0 || *p.Weight > fsm.MaxWeight) {
		return nil, invalid("weight", "%d is out of range 0-%d", *p.Weight, fsm.MaxWeight)
	}
	set(p.Method, &rs.Method)
	set(p.Tunnel, &rs.Tunnel)
	set(p.TunnelPort, &rs.TunnelPort)
	set(p.TunnelChecksum, &rs.TunnelChecksum)
	set(p.Weight, &rs.Weight)
	set(p.UpperThreshold, &rs.UpperThreshold)
	set(p.LowerThreshold, &rs.LowerThreshold)
	set(p.Admin, &rs.Admin)
	if p.Check != nil {
		c := *p.Check
		rs.Check = &c
	}
	if p.NoCheck {
		rs.Check = nil
	}
	return written{rs}, nil
}

func (f *fakeAPI) serviceHealth(_ http.ResponseWriter, r *http.Request) (any, error) {
	s, err := f.service(r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	out := api.ServiceHealth{Service: s.Name, Node: "d1", HealthyWeight: fsm.HealthyWeight(s), Quorum: s.EffectiveQuorum(), QuorumLost: s.QuorumLost}
	for key, rs := range s.Servers {
		sh := api.ServerHealth{Server: key, Admin: rs.Admin}
		if c := fsm.EffectiveCheck(s, rs); c != nil {
			sh.Check = c.Kind
			sh.Live = f.live[key]
		}
		if rs.Health != nil {
			sh.State, sh.Index, sh.Views = rs.Health.State, rs.Health.Index, rs.Health.Views
		}
		out.Servers = append(out.Servers, sh)
	}
	return out, nil
}

func (f *fakeAPI) connections(_ http.ResponseWriter, r *http.Request) (any, error) {
	rs, s, err := f.server(r)
	if err != nil {
		return nil, err
	}
	seq := f.conns[rs.Key()]
	active := 0
	if len(seq) > 0 {
		active = seq[0]
		if len(seq) > 1 {
			f.conns[rs.Key()] = seq[1:]
		}
	}
	if active < 0 {
		return nil, &apiErr{http.StatusMisdirectedRequest, api.CodeNotLeader, "", "director d1 received a forwarded request but is not the leader; retry"}
	}
	return api.Connections{Node: "d1", Service: s.Name, Server: rs.Key(), Present: true, Active: active, Inactive: 1}, nil
}

func set[T any](p *T, dst *T) {
	if p != nil {
		*dst = *p
	}
}

func (f *fakeAPI) deleteServer(_ http.ResponseWriter, r *http.Request) (any, error) {
	rs, s, err := f.server(r)
	if err != nil {
		return nil, err
	}
	delete(s.Servers, rs.Key())
	return written{}, nil
}

func (f *fakeAPI) listMembers(http.ResponseWriter, *http.Request) (any, error) {
	return append([]api.Member(nil), f.members...), nil
}

func (f *fakeAPI) addMember(_ http.ResponseWriter, r *http.Request) (any, error) {
	var m api.MemberAdd
	if err := decode(r, &m); err != nil {
		return nil, err
	}
	for _, x := range f.members {
		if x.ID == m.ID {
			return nil, conflict(api.CodeConflict, "id", "member %s already exists", m.ID)
		}
	}
	f.members = append(f.members, api.Member{ID: m.ID, Address: m.Address, Suffrage: "Voter"})
	return written{}, nil
}

func (f *fakeAPI) removeMember(_ http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	for i, m := range f.members {
		if m.ID != id {
			continue
		}
		if m.Leader && r.URL.Query().Get("force") != "true" {
			return nil, conflict(api.CodeRefused, "id", "%s is the leader; transfer leadership first or force", id)
		}
		f.members = append(f.members[:i], f.members[i+1:]...)
		return written{}, nil
	}
	return nil, notFound("member %s not found", id)
}

func (f *fakeAPI) transfer(_ http.ResponseWriter, r *http.Request) (any, error) {
	var lt api.LeaderTransfer
	if err := decode(r, &lt); err != nil {
		return nil, err
	}
	to := -1
	for i, m := range f.members {
		if (lt.To == "" && !m.Leader) || m.ID == lt.To {
			to = i
			break
		}
	}
	if to < 0 {
		return nil, invalid("to", "%s is not a member", lt.To)
	}
	for i := range f.members {
		f.members[i].Leader = i == to
	}
	return written{}, nil
}

func (f *fakeAPI) snapshot(http.ResponseWriter, *http.Request) (any, error) {
	st := fsm.State{Index: f.index, VIPs: map[string]*fsm.VIP{}, Services: map[string]*fsm.Service{}}
	for n, v := range f.vips {
		st.VIPs[n] = &v
	}
	for n, s := range f.services {
		st.Services[n] = s
	}
	return st, nil
}

func (f *fakeAPI) restore(_ http.ResponseWriter, r *http.Request) (any, error) {
	var st fsm.State
	if err := decode(r, &st); err != nil {
		return nil, err
	}
	f.vips = map[string]fsm.VIP{}
	for n, v := range st.VIPs {
		f.vips[n] = *v
	}
	f.services = st.Services
	if f.services == nil {
		f.services = map[string]*fsm.Service{}
	}
	return written{}, nil
}

func (f *fakeAPI) getIPVS(http.ResponseWriter, *http.Request) (any, error) {
	return f.ipvs, nil
}

// requests returns the requests received so far with the given method,
// oldest first.
func (f *fakeAPI) requests(method string) []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []request
	for _, r := range f.reqs {
		if method == "" || r.Method == method {
			out = append(out, r)
		}
	}
	return out
}

// lastWrite returns the newest non-GET request.
func (f *fakeAPI) lastWrite(t *testing.T) request {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.reqs) - 1; i >= 0; i-- {
		if f.reqs[i].Method != http.MethodGet {
			return f.reqs[i]
		}
	}
	t.Fatal("fake: no write received")
	return request{}
}

func (f *fakeAPI) setIntercept(fn func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.intercept = fn
}

func (f *fakeAPI) currentIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.index
}

func (f *fakeAPI) serviceCopy(name string) (fsm.Service, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[name]
	if !ok {
		return fsm.Service{}, false
	}
	return *s, true
}

func (f *fakeAPI) serverKeys(name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := range f.services[name].Servers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
