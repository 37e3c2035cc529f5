package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

// An API token is "ID.SECRET". The ID is public (logs, `token ls`,
// `token revoke`); only the SHA-256 of the secret is replicated. The
// secret has 256 bits of entropy, so a plain hash is enough: there is
// nothing to brute-force, unlike a password.
const (
	tokenSecretBytes = 32
	tokenIDBytes     = 6
	// minSecretLen and maxSecretLen bound a presented secret, so a
	// bootstrap file holding a short password is refused and a huge
	// header is not hashed.
	minSecretLen = 32
	maxSecretLen = 256
)

// newToken returns a fresh token ID and secret from the system's CSPRNG.
func newToken() (id, secret string, err error) {
	b := make([]byte, tokenIDBytes+tokenSecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b[:tokenIDBytes]), base64.RawURLEncoding.EncodeToString(b[tokenIDBytes:]), nil
}

// hashSecret is what the replicated state keeps of a secret.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// errBadToken is a token that is not "ID.SECRET" in the expected alphabet.
var errBadToken = errors.New("malformed token")

// parseToken splits a presented token into its ID and secret.
func parseToken(tok string) (id, secret string, err error) {
	id, secret, ok := strings.Cut(tok, ".")
	if !ok {
		return "", "", fmt.Errorf("%w: want ID.SECRET, as clusterctl token create prints it", errBadToken)
	}
	if err := fsm.ValidateTokenID("token id", id); err != nil {
		return "", "", fmt.Errorf("%w: %v", errBadToken, err)
	}
	if len(secret) < minSecretLen || len(secret) > maxSecretLen {
		return "", "", fmt.Errorf("%w: the secret must be %d to %d characters, got %d", errBadToken, minSecretLen, maxSecretLen, len(secret))
	}
	for i := 0; i < len(secret); i++ {
		if c := secret[i]; c <= ' ' || c >= 0x7f {
			return "", "", fmt.Errorf("%w: the secret must be printable ASCII without spaces", errBadToken)
		}
	}
	return id, secret, nil
}

// principal is who made a request.
type principal struct {
	// TokenID is empty in insecure mode and for certificate-only
	// requests (bootstrap).
	TokenID string
	Role    fsm.Role
	// Token is the token the caller presented, kept so work done on its
	// behalf elsewhere (a leader asked to remove itself forwards the
	// removal) carries the caller's identity rather than a director's.
	Token string
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// principalFrom returns the caller of the request ctx belongs to.
func principalFrom(ctx context.Context) (principal, bool) {
	p, ok := ctx.Value(principalKey{}).(principal)
	return p, ok
}

// bearer extracts the token of an "Authorization: Bearer TOKEN" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true
	}
	return strings.TrimSpace(tok), true
}

// authenticate finds the token a request presents in the replicated
// state. It returns a 401 *api.Error when there is none or it does not
// match. The secret's hash is compared in constant time; the ID lookup is
// not, and need not be: IDs are not secret.
func authenticate(f *fsm.FSM, r *http.Request) (principal, error) {
	raw, present := bearer(r)
	if !present {
		return principal{}, &api.Error{Code: api.CodeDenied, Status: http.StatusUnauthorized,
			Message: "missing API token: send \"Authorization: Bearer ID.SECRET\" (clusterctl --token or $DIRECTORATE_TOKEN)"}
	}
	id, secret, err := parseToken(raw)
	if raw == "" {
		err = fmt.Errorf("%w: the Authorization header is not \"Bearer ID.SECRET\"", errBadToken)
	}
	if err != nil {
		return principal{}, &api.Error{Code: api.CodeDenied, Status: http.StatusUnauthorized, Message: "invalid API token: " + err.Error()}
	}
	var (
		role  fsm.Role
		found bool
	)
	want := hashSecret(secret)
	f.Read(func(st *fsm.State) {
		t := st.Tokens[id]
		if t == nil {
			return
		}
		found = true
		if subtle.ConstantTimeCompare([]byte(t.Hash), []byte(want)) == 1 {
			role = t.Role
		}
	})
	switch {
	case !found:
		return principal{TokenID: id}, &api.Error{Code: api.CodeDenied, Status: http.StatusUnauthorized,
			Message: fmt.Sprintf("API token %q does not exist or was revoked", id)}
	case role == "":
		return principal{TokenID: id}, &api.Error{Code: api.CodeDenied, Status: http.StatusUnauthorized,
			Message: fmt.Sprintf("API token %q: wrong secret", id)}
	}
	return principal{TokenID: id, Role: role, Token: raw}, nil
}

// bootstrapPath is the one endpoint that takes no token.
const bootstrapPath = "/v1/tokens/bootstrap"

// requiredRole is the authorization policy, one place for every endpoint,
// including ones added later: reads need a read token, everything else an
// operator token. The token table is operator-only even to read. public
// is true only for token bootstrap, which checks a client certificate.
func requiredRole(r *http.Request) (need fsm.Role, public bool) {
	path := r.URL.Path
	switch {
	case r.Method == http.MethodPost && path == bootstrapPath:
		return "", true
	case path == "/v1/tokens" || strings.HasPrefix(path, "/v1/tokens/"):
		return fsm.RoleOperator, false
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		return fsm.RoleRead, false
	}
	return fsm.RoleOperator, false
}

// authorize puts requiredRole in front of every route of next. The mux
// behind it serves only clean paths (it redirects others), so a path
// that merely looks like the bootstrap endpoint cannot slip through.
func (s *server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need, public := requiredRole(r)
		if public {
			next.ServeHTTP(w, r)
			return
		}
		s.allow(need, next.ServeHTTP)(w, r)
	})
}

// allow wraps h so it runs only for a caller whose token grants need. In
// insecure mode every request is let through: that is what insecure means,
// and clusterd warns about it at every start. A follower checks the token
// before forwarding, so an anonymous flood stops at the first director;
// the leader checks it again, against the newest token table.
func (s *server) allow(need fsm.Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.sec.Insecure {
			h(w, r)
			return
		}
		p, err := authenticate(s.fsm, r)
		if err == nil && !p.Role.Allows(need) {
			err = &api.Error{Code: api.CodeDenied, Status: http.StatusForbidden,
				Message: fmt.Sprintf("API token %q has role %s; %s %s needs role %s", p.TokenID, p.Role, r.Method, r.URL.Path, need)}
		}
		if err != nil {
			s.deny(w, r, p.TokenID, err)
			return
		}
		h(w, r.WithContext(withPrincipal(r.Context(), p)))
	}
}

// deny answers a refused request and logs who tried what from where; the
// secret is never logged.
func (s *server) deny(w http.ResponseWriter, r *http.Request, tokenID string, err error) {
	e := toAPIError(err)
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="directorate"`)
	}
	attrs := []any{"remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "status", e.Status,
		"token", tokenID, "reason", e.Message}
	if by := r.Header.Get(api.ForwardedHeader); by != "" {
		attrs = append(attrs, "forwarded_by", by)
	}
	s.log.Warn("request denied", attrs...)
	idx := s.fsm.Index()
	writeJSON(w, e.Status, idx, api.ErrorResponse{Index: idx, Error: *e})
}
