package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/directorate/directorate/fsm"
	"github.com/hashicorp/memberlist"
)

// GossipKeyring is the set of keys gossip accepts and the one it encrypts
// with. Keys are 32 bytes (AES-256-GCM).
type GossipKeyring struct {
	// Primary encrypts every outgoing message; it is one of Keys.
	Primary []byte
	// Keys decrypt incoming messages, each tried in turn.
	Keys [][]byte
}

// Validate checks the key lengths and that Primary is installed.
func (k GossipKeyring) Validate() error {
	if len(k.Keys) == 0 {
		return errors.New("gossip keyring: no keys")
	}
	for i, key := range k.Keys {
		if len(key) != 32 {
			return fmt.Errorf("gossip keyring: key %d is %d bytes, want 32", i, len(key))
		}
	}
	if !slices.ContainsFunc(k.Keys, func(key []byte) bool { return bytes.Equal(key, k.Primary) }) {
		return errors.New("gossip keyring: the primary key is not among the keys")
	}
	return nil
}

// Fingerprints returns the keys' fingerprints, the primary's first.
func (k GossipKeyring) Fingerprints() []string {
	out := []string{fsm.KeyFingerprint(k.Primary)}
	for _, key := range k.Keys {
		if !bytes.Equal(key, k.Primary) {
			out = append(out, fsm.KeyFingerprint(key))
		}
	}
	return out
}

// WithGossipKeyring encrypts gossip with k from the start. Without it
// gossip is plaintext, which clusterd allows only with insecure: true.
func WithGossipKeyring(k GossipKeyring) Option {
	return func(o *options) { o.keyring = &k }
}

// KeyedGossip is implemented by a Gossip whose encryption keys can change
// while it runs.
type KeyedGossip interface {
	// SetKeyring makes k the keyring: it installs the new keys, switches
	// the primary, then removes the keys k lacks. That order keeps every
	// message decryptable by a member that has applied the same keyring
	// changes, so a rotation done as install, use, remove never costs a
	// member.
	SetKeyring(k GossipKeyring) error
}

// SetGossipKeyring replaces gossip's keyring with k and announces the new
// key fingerprints through gossip metadata, so `clusterctl keyring ls`
// can tell which members hold which keys. ErrInvalidRequest when k is not
// valid or gossip is not encrypted (a keyring cannot be added to a
// running plaintext memberlist).
func (n *Node) SetGossipKeyring(k GossipKeyring) error {
	if err := k.Validate(); err != nil {
		return fmt.Errorf("set gossip keyring: %w: %v", ErrInvalidRequest, err)
	}
	kg, ok := n.gossip.(KeyedGossip)
	if !ok || !n.encrypted {
		return fmt.Errorf("set gossip keyring: %w: gossip is not encrypted on this director (insecure mode)", ErrInvalidRequest)
	}
	if err := kg.SetKeyring(k); err != nil {
		return fmt.Errorf("set gossip keyring: %w", err)
	}
	fps := strings.Join(k.Fingerprints(), ",")
	n.updateMeta(func(m *localMeta) { m.meta.Keys = fps })
	n.log.Info("gossip keyring applied", "primary", fsm.KeyFingerprint(k.Primary), "keys", fps)
	return nil
}

// memberlistKeyring builds memberlist's keyring from k.
func memberlistKeyring(k GossipKeyring) (*memberlist.Keyring, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	ring, err := memberlist.NewKeyring(nil, k.Primary)
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	for _, key := range k.Keys {
		if err := ring.AddKey(key); err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
	}
	return ring, nil
}

// SetKeyring implements KeyedGossip.
func (g *memberlistGossip) SetKeyring(k GossipKeyring) error {
	ring := g.keyring
	if ring == nil {
		return errors.New("gossip was started without encryption")
	}
	for _, key := range k.Keys {
		if err := ring.AddKey(key); err != nil {
			return fmt.Errorf("install key %s: %w", fsm.KeyFingerprint(key), err)
		}
	}
	if err := ring.UseKey(k.Primary); err != nil {
		return fmt.Errorf("use key %s: %w", fsm.KeyFingerprint(k.Primary), err)
	}
	for _, key := range ring.GetKeys() {
		if slices.ContainsFunc(k.Keys, func(want []byte) bool { return bytes.Equal(want, key) }) {
			continue
		}
		if err := ring.RemoveKey(key); err != nil {
			return fmt.Errorf("remove key %s: %w", fsm.KeyFingerprint(key), err)
		}
	}
	return nil
}
