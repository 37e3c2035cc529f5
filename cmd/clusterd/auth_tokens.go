package main

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

func (s *server) registerTokenRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/tokens", s.read(s.listTokens))
	mux.HandleFunc("POST /v1/tokens", s.leaderOnly(s.createToken))
	mux.HandleFunc("DELETE /v1/tokens/{id}", s.write(s.revokeToken))
	// Bootstrap needs no token (see requiredRole), which is the point:
	// it is how the first one comes to be. It needs a client certificate
	// from the cluster CA instead, and the FSM refuses it once any token
	// exists.
	mux.HandleFunc("POST /v1/tokens/bootstrap", s.requireClientCert(s.leaderOnly(s.bootstrapToken)))
}

func tokenInfo(t *fsm.Token) api.TokenInfo {
	return api.TokenInfo{ID: t.ID, Role: string(t.Role), Description: t.Description, Created: t.Created}
}

func (s *server) listTokens(_ *http.Request, st *fsm.State) (any, error) {
	out := make([]api.TokenInfo, 0, len(st.Tokens))
	for _, t := range st.Tokens {
		out = append(out, tokenInfo(t))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *server) revokeToken(r *http.Request) (fsm.Command, error) {
	return fsm.RevokeToken{ID: r.PathValue("id")}, nil
}

func (s *server) createToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenCreate
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	s.issueToken(w, r, req, false)
}

func (s *server) bootstrapToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenCreate
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Role != "" && req.Role != string(fsm.RoleOperator) {
		s.fail(w, r, invalid("role", "the bootstrap token is an operator token, got %q", req.Role))
		return
	}
	req.Role = string(fsm.RoleOperator)
	s.issueToken(w, r, req, true)
}

// issueToken generates a token on the leader, commits its hash and answers
// with the secret, which exists nowhere else from then on.
func (s *server) issueToken(w http.ResponseWriter, r *http.Request, req api.TokenCreate, bootstrap bool) {
	id, secret, err := newToken()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cmd := fsm.CreateToken{Bootstrap: bootstrap, Token: fsm.Token{ID: id, Role: fsm.Role(req.Role), Hash: hashSecret(secret),
		Description: req.Description, Created: time.Now().UTC().Truncate(time.Second)}}
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
	// Without a principal the API runs with insecure: true and nobody
	// was authenticated.
	by := "nobody (insecure: true)"
	if p, ok := principalFrom(r.Context()); ok {
		by = p.TokenID
	}
	if bootstrap {
		by = "client certificate " + clientCertName(r)
	}
	s.log.Info("token created", "token", id, "role", req.Role, "bootstrap", bootstrap, "by", by,
		"remote", r.RemoteAddr, "index", idx)
	s.reply(w, http.StatusOK, idx, api.NewToken{TokenInfo: tokenInfo(&cmd.Token), Token: id + "." + secret})
}

// requireClientCert lets a request through only if it came over TLS with a
// client certificate the API's TLS configuration verified against the
// cluster CA. A follower forwards it with its own director certificate,
// which the leader verifies in turn, so the guarantee holds end to end.
func (s *server) requireClientCert(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.sec.Insecure {
			s.fail(w, r, &api.Error{Code: api.CodeInvalid, Status: http.StatusBadRequest,
				Message: "this cluster runs with insecure: true, which has no API tokens: nothing to bootstrap"})
			return
		}
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			s.deny(w, r, "", &api.Error{Code: api.CodeDenied, Status: http.StatusUnauthorized,
				Message: "token bootstrap needs a client certificate issued by the cluster CA (clusterctl --cert and --key)"})
			return
		}
		h(w, r)
	}
}

func clientCertName(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	c := r.TLS.PeerCertificates[0]
	return fmt.Sprintf("%q (serial %s)", c.Subject.CommonName, c.SerialNumber)
}
