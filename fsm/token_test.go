package fsm

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

func hash(c byte) string { return strings.Repeat(string(c), tokenHashLen) }

func tok(id string, role Role) Token {
	return Token{ID: id, Role: role, Hash: hash('a'), Description: "ops " + id,
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func TestTokenLifecycle(t *testing.T) {
	h := fixture(t)
	h.mustApply(CreateToken{Token: tok("boot", RoleOperator), Bootstrap: true})
	h.mustApply(CreateToken{Token: tok("ro", RoleRead)}, CreateToken{Token: tok("op2", RoleOperator)})
	h.f.Read(func(s *State) {
		if len(s.Tokens) != 3 || s.Tokens["ro"].Role != RoleRead || s.Tokens["boot"].Hash != hash('a') {
			t.Fatalf("tokens %+v", s.Tokens)
		}
	})
	h.mustApply(RevokeToken{ID: "boot"}, RevokeToken{ID: "ro"})
	h.refuse(RevokeToken{ID: "op2"}, "token.id", ErrConflict)
	h.refuse(RevokeToken{ID: "gone"}, "token.id", ErrNotFound)
	h.refuse(CreateToken{Token: tok("again", RoleOperator), Bootstrap: true}, "bootstrap", ErrConflict)
	h.refuse(CreateToken{Token: tok("op2", RoleRead)}, "token.id", ErrConflict)
}

func TestTokenValidation(t *testing.T) {
	long := strings.Repeat("x", MaxTokenIDLen+1)
	cases := []struct {
		name  string
		mod   func(*Token)
		field string
	}{
		{"no id", func(t *Token) { t.ID = "" }, "token.id"},
		{"long id", func(t *Token) { t.ID = long }, "token.id"},
		{"upper id", func(t *Token) { t.ID = "Ops" }, "token.id"},
		{"leading dash", func(t *Token) { t.ID = "-ops" }, "token.id"},
		{"dot id", func(t *Token) { t.ID = "a.b" }, "token.id"},
		{"no role", func(t *Token) { t.Role = "" }, "token.role"},
		{"admin role", func(t *Token) { t.Role = "admin" }, "token.role"},
		{"short hash", func(t *Token) { t.Hash = "abc" }, "token.hash"},
		{"upper hash", func(t *Token) { t.Hash = hash('A') }, "token.hash"},
		{"control char", func(t *Token) { t.Description = "a\nb" }, "token.description"},
		{"long description", func(t *Token) { t.Description = strings.Repeat("d", MaxTokenDescriptionLen+1) }, "token.description"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := fixture(t)
			tk := tok("ops", RoleOperator)
			c.mod(&tk)
			h.refuse(CreateToken{Token: tk}, c.field, ErrInvalid)
		})
	}
}

func TestRoleAllows(t *testing.T) {
	for _, c := range []struct {
		have, need Role
		ok         bool
	}{
		{RoleOperator, RoleOperator, true}, {RoleOperator, RoleRead, true},
		{RoleRead, RoleRead, true}, {RoleRead, RoleOperator, false},
		{"", RoleRead, false}, {"admin", RoleRead, false}, {RoleOperator, "admin", false},
	} {
		if got := c.have.Allows(c.need); got != c.ok {
			t.Errorf("%q.Allows(%q) = %t, want %t", c.have, c.need, got, c.ok)
		}
	}
}

// A restore replaces the configuration but keeps the credentials: a saved
// snapshot must not lock operators out or bring back a revoked token.
func TestReplaceStateKeepsTokens(t *testing.T) {
	h := fixture(t)
	h.mustApply(CreateToken{Token: tok("boot", RoleOperator), Bootstrap: true})
	h.mustApply(ReplaceState{State: *configState(t)})
	h.f.Read(func(s *State) {
		if len(s.Tokens) != 1 || s.Tokens["boot"] == nil {
			t.Fatalf("tokens after restore: %+v", s.Tokens)
		}
	})
	st := *richState(t)
	st.Tokens = map[string]*Token{"evil": ptr(tok("evil", RoleOperator))}
	h.refuse(ReplaceState{State: st}, "state.tokens", ErrInvalid)
}

func TestTokensSnapshotRoundTrip(t *testing.T) {
	h := fixture(t)
	h.mustApply(CreateToken{Token: tok("boot", RoleOperator), Bootstrap: true}, CreateToken{Token: tok("ro", RoleRead)})
	snap := snapshotBytes(t, h.f)
	again := New()
	if err := again.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if got := snapshotBytes(t, again); !bytes.Equal(got, snap) {
		t.Fatalf("round trip:\n%s\n%s", snap, got)
	}
	if !reflect.DeepEqual(again.Clone().Tokens, h.f.Clone().Tokens) {
		t.Fatal("tokens differ after restore")
	}
	// A snapshot whose token does not match its key is refused whole.
	bad := bytes.Replace(snap, []byte(`"id":"ro"`), []byte(`"id":"rx"`), 1)
	if err := New().Restore(bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "tokens[ro].id") {
		t.Fatalf("restore of a mismatched token: %v", err)
	}
}

func TestTokenCommandsRoundTrip(t *testing.T) {
	for _, cmd := range []Command{
		CreateToken{Token: tok("ops", RoleOperator), Bootstrap: true},
		&RevokeToken{ID: "ops"},
	} {
		got, err := Decode(mustEncode(t, cmd))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := normalize(cmd)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip: got %#v want %#v", got, want)
		}
	}
}
