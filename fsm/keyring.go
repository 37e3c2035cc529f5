package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"slices"
)

// GossipKeyLen is the length of a gossip key: AES-256-GCM.
const GossipKeyLen = 32

// MaxGossipKeys bounds the keyring. A rotation needs two keys at once;
// the rest is headroom. Every director announces its key fingerprints in
// gossip metadata, which is limited to 512 bytes.
const MaxGossipKeys = 4

// Command types of the gossip keyring.
const (
	TypeInstallKey CommandType = "keyring.install"
	TypeUseKey     CommandType = "keyring.use"
	TypeRemoveKey  CommandType = "keyring.remove"
)

// Keyring is the replicated gossip keyring. Every director applies it to
// its memberlist on commit, so a rotation is three committed commands:
// install the new key, use it, remove the old one.
//
// The keys are secrets held in the replicated state: raft carries them
// only over mutual TLS, and they rest in each director's data_dir (mode
// 0700). The API never returns them, only their fingerprints.
type Keyring struct {
	// Primary is the fingerprint of the key that encrypts gossip.
	Primary string `json:"primary"`
	// Keys are every installed key, in installation order.
	Keys [][]byte `json:"keys"`
}

// KeyFingerprint names a gossip key without revealing it: the first 8
// bytes of its SHA-256, in hex.
func KeyFingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// PrimaryKey returns the primary key, or nil.
func (k *Keyring) PrimaryKey() []byte {
	if k == nil {
		return nil
	}
	for _, key := range k.Keys {
		if KeyFingerprint(key) == k.Primary {
			return key
		}
	}
	return nil
}

// Clone returns a deep copy of k; nil stays nil.
func (k *Keyring) Clone() *Keyring {
	if k == nil {
		return nil
	}
	c := &Keyring{Primary: k.Primary, Keys: make([][]byte, len(k.Keys))}
	for i, key := range k.Keys {
		c.Keys[i] = bytes.Clone(key)
	}
	return c
}

// InstallKey adds a gossip key that directors accept but do not yet send
// with.
//
// Until the first install the keyring is not replicated: every director
// runs with the key of its gossip_key_file. The proposer then sends that
// key as Current, and it becomes the keyring's primary next to the new
// key, so no director stops encrypting with the key the others expect.
// Without Current the first key installed becomes the primary. Current
// is ignored once the keyring exists.
type InstallKey struct {
	Key     []byte `json:"key"`
	Current []byte `json:"current,omitempty"`
}

// UseKey makes an installed key, named by its fingerprint, the primary.
type UseKey struct {
	Fingerprint string `json:"fingerprint"`
}

// RemoveKey removes an installed key that is not the primary.
type RemoveKey struct {
	Fingerprint string `json:"fingerprint"`
}

// Type implements Command.
func (InstallKey) Type() CommandType { return TypeInstallKey }

// Type implements Command.
func (UseKey) Type() CommandType { return TypeUseKey }

// Type implements Command.
func (RemoveKey) Type() CommandType { return TypeRemoveKey }

func (k *Keyring) find(fp string) int {
	if k == nil {
		return -1
	}
	return slices.IndexFunc(k.Keys, func(key []byte) bool { return KeyFingerprint(key) == fp })
}

func validateFingerprint(field, fp string) error {
	if len(fp) != 16 {
		return invalid(field, "must be the 16 hex digits `clusterctl keyring ls` shows, got %q", fp)
	}
	if _, err := hex.DecodeString(fp); err != nil {
		return invalid(field, "must be lowercase hex, got %q", fp)
	}
	return nil
}

func (s *store) installKey(c InstallKey) (func(), error) {
	if len(c.Key) != GossipKeyLen {
		return nil, invalid("keyring.key", "is %d bytes; a gossip key is %d bytes (AES-256-GCM)", len(c.Key), GossipKeyLen)
	}
	fp := KeyFingerprint(c.Key)
	k := s.state.Keyring
	var seed []byte
	if k == nil && c.Current != nil {
		if len(c.Current) != GossipKeyLen {
			return nil, invalid("keyring.current", "is %d bytes; a gossip key is %d bytes (AES-256-GCM)", len(c.Current), GossipKeyLen)
		}
		if !bytes.Equal(c.Current, c.Key) {
			seed = bytes.Clone(c.Current)
		}
	}
	if k.find(fp) >= 0 || seed == nil && k == nil && c.Current != nil {
		return nil, conflict("keyring.key", "key %s is already installed", fp)
	}
	if k != nil && len(k.Keys) >= MaxGossipKeys {
		return nil, conflict("keyring.key", "%d keys are installed, the most allowed: remove an unused one first", MaxGossipKeys)
	}
	key := bytes.Clone(c.Key)
	return func() {
		if s.state.Keyring == nil {
			s.state.Keyring = &Keyring{Primary: fp}
			if seed != nil {
				s.state.Keyring = &Keyring{Primary: KeyFingerprint(seed), Keys: [][]byte{seed}}
			}
		}
		s.state.Keyring.Keys = append(s.state.Keyring.Keys, key)
	}, nil
}

func (s *store) useKey(c UseKey) (func(), error) {
	if err := validateFingerprint("keyring.fingerprint", c.Fingerprint); err != nil {
		return nil, err
	}
	if s.state.Keyring.find(c.Fingerprint) < 0 {
		return nil, notFound("keyring.fingerprint", "key %s is not installed: install it first", c.Fingerprint)
	}
	return func() { s.state.Keyring.Primary = c.Fingerprint }, nil
}

func (s *store) removeKey(c RemoveKey) (func(), error) {
	if err := validateFingerprint("keyring.fingerprint", c.Fingerprint); err != nil {
		return nil, err
	}
	i := s.state.Keyring.find(c.Fingerprint)
	if i < 0 {
		return nil, notFound("keyring.fingerprint", "key %s is not installed", c.Fingerprint)
	}
	if s.state.Keyring.Primary == c.Fingerprint {
		return nil, conflict("keyring.fingerprint", "key %s is the primary key, which every director encrypts gossip with: "+
			"use another key first", c.Fingerprint)
	}
	return func() {
		s.state.Keyring.Keys = slices.Delete(s.state.Keyring.Keys, i, i+1)
	}, nil
}

// setKeyring validates and adopts the keyring of a whole state, for
// Restore.
func (s *store) setKeyring(k *Keyring) error {
	if k == nil {
		return nil
	}
	if len(k.Keys) == 0 {
		return invalid("keyring.keys", "an empty keyring must be omitted")
	}
	if len(k.Keys) > MaxGossipKeys {
		return invalid("keyring.keys", "%d keys exceed the limit of %d", len(k.Keys), MaxGossipKeys)
	}
	for _, key := range k.Keys {
		commit, err := s.installKey(InstallKey{Key: key})
		if err != nil {
			return err
		}
		commit()
	}
	if err := validateFingerprint("keyring.primary", k.Primary); err != nil {
		return err
	}
	if s.state.Keyring.find(k.Primary) < 0 {
		return invalid("keyring.primary", "key %s is not among the keys", k.Primary)
	}
	s.state.Keyring.Primary = k.Primary
	return nil
}
