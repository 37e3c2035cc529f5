package api

import (
	"context"
	"net/http"
	"time"
)

// Token roles, as fsm.Role names them.
const (
	RoleRead     = "read"
	RoleOperator = "operator"
)

// Environment variables clusterctl and other clients read their
// credentials from when no flag is given.
const (
	EnvCA        = "DIRECTORATE_CA"
	EnvCert      = "DIRECTORATE_CERT"
	EnvKey       = "DIRECTORATE_KEY"
	EnvToken     = "DIRECTORATE_TOKEN"
	EnvTokenFile = "DIRECTORATE_TOKEN_FILE"
)

// DirectorServerName is the DNS name every director certificate that
// `clusterd tls init` issues carries. Clients verify a director's API
// certificate against it rather than against the address they dialled, so
// directors need no certificate per IP address.
const DirectorServerName = "director.directorate"

// TokenInfo describes an API token. It never carries the secret.
type TokenInfo struct {
	ID          string    `json:"id"`
	Role        string    `json:"role"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created,omitzero"`
}

// TokenCreate asks for a new token. Role is read or operator.
type TokenCreate struct {
	Role        string `json:"role"`
	Description string `json:"description,omitempty"`
}

// NewToken is a token just created. Token, "ID.SECRET", is shown once:
// only a hash of the secret is kept.
type NewToken struct {
	TokenInfo
	Token string `json:"token"`
}

// Tokens lists the API tokens, without their secrets.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, uint64, error) {
	var t []TokenInfo
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"tokens"}, out: &t, list: true})
	return t, i, err
}

// CreateToken creates a token and returns it with its secret.
func (c *Client) CreateToken(ctx context.Context, req TokenCreate) (NewToken, uint64, error) {
	var t NewToken
	i, err := c.do(ctx, request{method: http.MethodPost, segments: []string{"tokens"}, body: req, out: &t})
	return t, i, err
}

// RevokeToken deletes a token; requests that present it fail from then on.
func (c *Client) RevokeToken(ctx context.Context, id string) (uint64, error) {
	return c.do(ctx, request{method: http.MethodDelete, segments: []string{"tokens", id}})
}

// BootstrapToken creates the first operator token. It needs no token, but
// a client certificate from the cluster CA, and works only while the
// cluster has no token at all.
func (c *Client) BootstrapToken(ctx context.Context, description string) (NewToken, uint64, error) {
	var t NewToken
	i, err := c.do(ctx, request{method: http.MethodPost, segments: []string{"tokens", "bootstrap"},
		body: TokenCreate{Role: RoleOperator, Description: description}, out: &t})
	return t, i, err
}
