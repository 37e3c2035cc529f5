package api

import (
	"context"
	"encoding/base64"
	"net/http"
)

// KeyInstall installs a gossip key: Key is the base64 of 32 bytes.
type KeyInstall struct {
	Key string `json:"key"`
}

// KeyUse makes an installed key the primary. Force skips the check that
// every live director has the key installed.
type KeyUse struct {
	Fingerprint string `json:"fingerprint"`
	Force       bool   `json:"force,omitempty"`
}

// KeyringStatus is what `clusterctl keyring ls` shows. It never carries
// a key, only fingerprints.
type KeyringStatus struct {
	// Replicated is false while the cluster still runs on the key of
	// each director's gossip_key_file (no key was installed yet); Keys
	// then lists the key this director uses.
	Replicated bool `json:"replicated"`
	// Insecure is true when gossip is not encrypted at all.
	Insecure bool      `json:"insecure,omitempty"`
	Primary  string    `json:"primary,omitempty"`
	Keys     []KeyInfo `json:"keys"`
	// Members are the directors gossip knows, with the key fingerprints
	// each one announces having installed.
	Members []KeyringMember `json:"members"`
}

// KeyInfo is one key of the keyring.
type KeyInfo struct {
	Fingerprint string `json:"fingerprint"`
	Primary     bool   `json:"primary,omitempty"`
	// InstalledOn lists the live directors that announce this key;
	// MissingOn the live directors that do not (yet).
	InstalledOn []string `json:"installed_on"`
	MissingOn   []string `json:"missing_on,omitempty"`
}

// KeyringMember is one director's announced keyring.
type KeyringMember struct {
	ID    string `json:"id"`
	State string `json:"state"`
	// Keys are the fingerprints it announces, its primary first.
	Keys []string `json:"keys"`
}

// Keyring lists the gossip keyring.
func (c *Client) Keyring(ctx context.Context) (KeyringStatus, uint64, error) {
	var k KeyringStatus
	i, err := c.do(ctx, request{method: http.MethodGet, segments: []string{"keyring"}, out: &k})
	return k, i, err
}

// InstallKey installs a 32-byte gossip key on every director; they accept
// it at once and send with it once it is used.
func (c *Client) InstallKey(ctx context.Context, key []byte) (uint64, error) {
	return c.do(ctx, request{method: http.MethodPost, segments: []string{"keyring"},
		body: KeyInstall{Key: base64.StdEncoding.EncodeToString(key)}})
}

// UseKey makes the installed key with this fingerprint the primary.
func (c *Client) UseKey(ctx context.Context, fingerprint string, force bool) (uint64, error) {
	return c.do(ctx, request{method: http.MethodPut, segments: []string{"keyring", "primary"},
		body: KeyUse{Fingerprint: fingerprint, Force: force}})
}

// RemoveKey removes an installed key that is not the primary.
func (c *Client) RemoveKey(ctx context.Context, fingerprint string) (uint64, error) {
	return c.do(ctx, request{method: http.MethodDelete, segments: []string{"keyring", fingerprint}})
}
