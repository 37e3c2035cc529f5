package fsm

import (
	"maps"
	"slices"
	"time"
)

// Role is what an API token may do.
type Role string

// Roles, from least to most powerful. An operator may do everything a
// reader may.
const (
	// RoleRead reads the configuration, status and membership.
	RoleRead Role = "read"
	// RoleOperator also changes the configuration, membership, tokens and
	// the gossip keyring.
	RoleOperator Role = "operator"
)

// Allows reports whether a token of role r may do what role need requires.
func (r Role) Allows(need Role) bool {
	switch r {
	case RoleOperator:
		return need == RoleOperator || need == RoleRead
	case RoleRead:
		return need == RoleRead
	}
	return false
}

// Limits on tokens. The table is replicated to every director and read on
// every request, so it is kept small.
const (
	// MaxTokens bounds the token table.
	MaxTokens = 1000
	// MaxTokenIDLen bounds a token ID, which appears in logs and URLs.
	MaxTokenIDLen = 32
	// MaxTokenDescriptionLen bounds a token's description.
	MaxTokenDescriptionLen = 128
	// tokenHashLen is the length of a hex SHA-256 digest.
	tokenHashLen = 64
)

// Token is an API credential. Only a hash of its secret is replicated: a
// snapshot or a stolen data directory does not hand out working tokens.
type Token struct {
	// ID names the token in logs and in `clusterctl token revoke`; it is
	// not secret.
	ID   string `json:"id"`
	Role Role   `json:"role"`
	// Hash is the lowercase hex SHA-256 of the token's secret.
	Hash        string `json:"hash"`
	Description string `json:"description,omitempty"`
	// Created is set by the proposer, so Apply reads no clock.
	Created time.Time `json:"created,omitzero"`
}

// CreateToken adds a token. The proposer generates the ID and secret and
// sends only the secret's hash.
type CreateToken struct {
	Token Token `json:"token"`
	// Bootstrap makes the command succeed only while no token exists, so
	// two directors bootstrapping at once, or a replayed bootstrap, cannot
	// add a second first token.
	Bootstrap bool `json:"bootstrap,omitempty"`
}

// RevokeToken removes a token. The last operator token cannot be revoked:
// that would lock every operator out until a director's data is wiped.
type RevokeToken struct {
	ID string `json:"id"`
}

// Command types of the token table.
const (
	TypeCreateToken CommandType = "token.create"
	TypeRevokeToken CommandType = "token.revoke"
)

// Type implements Command.
func (CreateToken) Type() CommandType { return TypeCreateToken }

// Type implements Command.
func (RevokeToken) Type() CommandType { return TypeRevokeToken }

// ValidateTokenID checks a token ID: lowercase letters, digits and '-', as
// the API's generator produces, starting with a letter or digit.
func ValidateTokenID(field, id string) error {
	if id == "" {
		return invalid(field, "required")
	}
	if len(id) > MaxTokenIDLen {
		return invalid(field, "%q is %d characters long; at most %d are allowed", id, len(id), MaxTokenIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '-') {
			return invalid(field, "%q may only contain lowercase letters, digits and '-', starting with a letter or digit", id)
		}
	}
	return nil
}

func validateToken(p string, t *Token) error {
	if err := ValidateTokenID(p+".id", t.ID); err != nil {
		return err
	}
	switch t.Role {
	case RoleRead, RoleOperator:
	case "":
		return invalid(p+".role", "required: read or operator")
	default:
		return invalid(p+".role", "unknown role %q: read or operator", t.Role)
	}
	if len(t.Hash) != tokenHashLen {
		return invalid(p+".hash", "must be the %d hex digits of a SHA-256 digest, got %d characters", tokenHashLen, len(t.Hash))
	}
	for i := 0; i < len(t.Hash); i++ {
		if c := t.Hash[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return invalid(p+".hash", "must be lowercase hex")
		}
	}
	if len(t.Description) > MaxTokenDescriptionLen {
		return invalid(p+".description", "is %d bytes long; at most %d are allowed", len(t.Description), MaxTokenDescriptionLen)
	}
	for _, r := range t.Description {
		if r < 0x20 || r == 0x7f {
			return invalid(p+".description", "must not contain control characters")
		}
	}
	return nil
}

func (s *store) createToken(p string, c CreateToken) (func(), error) {
	t := c.Token
	if err := validateToken(p, &t); err != nil {
		return nil, err
	}
	if c.Bootstrap && len(s.state.Tokens) > 0 {
		return nil, conflict("bootstrap", "tokens already exist: bootstrap only creates the first token; "+
			"use an operator token to create more")
	}
	if _, ok := s.state.Tokens[t.ID]; ok {
		return nil, conflict(p+".id", "token %q already exists", t.ID)
	}
	if len(s.state.Tokens) >= MaxTokens {
		return nil, conflict(p, "there are already %d tokens, the most allowed: revoke unused ones first", MaxTokens)
	}
	return func() {
		if s.state.Tokens == nil {
			s.state.Tokens = map[string]*Token{}
		}
		s.state.Tokens[t.ID] = &t
	}, nil
}

func (s *store) revokeToken(c RevokeToken) (func(), error) {
	t, ok := s.state.Tokens[c.ID]
	if !ok {
		return nil, notFound("token.id", "token %q does not exist", c.ID)
	}
	if t.Role == RoleOperator && s.operatorTokens() == 1 {
		return nil, conflict("token.id", "%q is the last operator token: create another operator token first, "+
			"or nobody could change the cluster any more", c.ID)
	}
	return func() {
		delete(s.state.Tokens, c.ID)
		if len(s.state.Tokens) == 0 {
			s.state.Tokens = nil
		}
	}, nil
}

func (s *store) operatorTokens() int {
	n := 0
	for _, t := range s.state.Tokens {
		if t.Role == RoleOperator {
			n++
		}
	}
	return n
}

// addTokens validates and adds the token table of a whole state, in ID
// order, for Restore.
func (s *store) addTokens(tokens map[string]*Token) error {
	if len(tokens) > MaxTokens {
		return conflict("tokens", "%d tokens exceed the limit of %d", len(tokens), MaxTokens)
	}
	for _, id := range slices.Sorted(maps.Keys(tokens)) {
		p := "tokens[" + id + "]"
		t := tokens[id]
		if t == nil {
			return invalid(p, "is null")
		}
		if t.ID != id {
			return invalid(p+".id", "%q does not match its key %q", t.ID, id)
		}
		commit, err := s.createToken(p, CreateToken{Token: *t})
		if err != nil {
			return err
		}
		commit()
	}
	return nil
}

// cloneTokens deep-copies a token table; nil stays nil.
func cloneTokens(in map[string]*Token) map[string]*Token {
	if in == nil {
		return nil
	}
	out := make(map[string]*Token, len(in))
	for id, t := range in {
		if t == nil {
			out[id] = nil
			continue
		}
		c := *t
		out[id] = &c
	}
	return out
}
