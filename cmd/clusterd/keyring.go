package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/fsm"
)

// keyringFile is where a director keeps the gossip keyring it last
// applied, under data_dir, so that after a restart it gossips with the
// current keys at once rather than with gossip_key_file's, which a
// rotation may have removed since.
const keyringFile = "gossip-keyring.json"

// storedKeyring is keyringFile's format. []byte encodes as base64.
type storedKeyring struct {
	Primary []byte   `json:"primary"`
	Keys    [][]byte `json:"keys"`
}

// startKeyring returns the keyring this director starts gossip with: the
// one it persisted last, or else gossip_key_file's key alone.
func startKeyring(cfg *config) (cluster.GossipKeyring, error) {
	path := filepath.Join(cfg.DataDir, keyringFile)
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		var s storedKeyring
		if err := json.Unmarshal(raw, &s); err != nil {
			return cluster.GossipKeyring{}, fmt.Errorf("gossip keyring %s: %w (delete it to start from gossip_key_file)", path, err)
		}
		k := cluster.GossipKeyring{Primary: s.Primary, Keys: s.Keys}
		if err := k.Validate(); err != nil {
			return cluster.GossipKeyring{}, fmt.Errorf("%s: %w (delete it to start from gossip_key_file)", path, err)
		}
		return k, nil
	case !errors.Is(err, os.ErrNotExist):
		return cluster.GossipKeyring{}, fmt.Errorf("gossip keyring: %w", err)
	}
	key, err := loadGossipKey(cfg.GossipKeyFile)
	if err != nil {
		return cluster.GossipKeyring{}, err
	}
	return cluster.GossipKeyring{Primary: key, Keys: [][]byte{key}}, nil
}

// transportOptions are the cluster options a secure configuration adds:
// raft over mutual TLS and encrypted gossip. The keyring is returned so
// the daemon can keep it current.
func transportOptions(cfg *config, ct *clusterTLS) ([]cluster.Option, *cluster.GossipKeyring, error) {
	if cfg.Insecure {
		return nil, nil, nil
	}
	ring, err := startKeyring(cfg)
	if err != nil {
		return nil, nil, err
	}
	return []cluster.Option{cluster.WithRaftTLS(ct.raftServer(), ct.raftClient()), cluster.WithGossipKeyring(ring)}, &ring, nil
}

// gossipKeys is what the keyring needs of the cluster node.
type gossipKeys interface {
	SetGossipKeyring(cluster.GossipKeyring) error
	GossipMembers() []cluster.GossipMember
}

// keyringApplier keeps gossip's keyring equal to the replicated one on
// every commit, and persists it in data_dir first, so a restart never
// goes back to keys the cluster removed.
type keyringApplier struct {
	fsm  *fsm.FSM
	path string
	log  *slog.Logger

	mu   sync.Mutex
	node gossipKeys
	cur  cluster.GossipKeyring
}

func newKeyringApplier(f *fsm.FSM, dataDir string, start cluster.GossipKeyring, log *slog.Logger) *keyringApplier {
	return &keyringApplier{fsm: f, path: filepath.Join(dataDir, keyringFile), log: log, cur: start}
}

// bind sets the node whose gossip the applier keys; the node is created
// with the starting keyring, after the applier.
func (a *keyringApplier) bind(n gossipKeys) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.node = n
}

// current returns the keyring gossip runs with on this director.
func (a *keyringApplier) current() cluster.GossipKeyring {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}

// members returns gossip's members with the key fingerprints they announce.
func (a *keyringApplier) members() []cluster.GossipMember {
	a.mu.Lock()
	n := a.node
	a.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.GossipMembers()
}

// run applies the replicated keyring after every commit until ctx ends.
func (a *keyringApplier) run(ctx context.Context) {
	changed, cancel := a.fsm.Subscribe()
	defer cancel()
	for {
		if err := a.sync(); err != nil {
			a.log.Error("apply the replicated gossip keyring; retrying at the next commit", "index", a.fsm.Index(), "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// sync applies the replicated keyring when it differs from the one in
// use. Before the first key is installed the keyring is not replicated,
// and gossip keeps gossip_key_file's key.
func (a *keyringApplier) sync() error {
	var (
		want  cluster.GossipKeyring
		index uint64
		have  bool
	)
	a.fsm.Read(func(st *fsm.State) {
		if st.Keyring == nil {
			return
		}
		k := st.Keyring.Clone()
		want, index, have = cluster.GossipKeyring{Primary: k.PrimaryKey(), Keys: k.Keys}, st.Index, true
	})
	if !have {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if sameKeyring(a.cur, want) || a.node == nil {
		return nil
	}
	if err := persistKeyring(a.path, want); err != nil {
		return err
	}
	if err := a.node.SetGossipKeyring(want); err != nil {
		return err
	}
	a.cur = want
	a.log.Info("gossip keyring follows the replicated state", "index", index,
		"primary", fsm.KeyFingerprint(want.Primary), "keys", len(want.Keys))
	return nil
}

func sameKeyring(a, b cluster.GossipKeyring) bool {
	return bytes.Equal(a.Primary, b.Primary) && slices.EqualFunc(a.Keys, b.Keys, bytes.Equal)
}

// persistKeyring writes k to path atomically, readable by root alone: it
// holds gossip secrets.
func persistKeyring(path string, k cluster.GossipKeyring) error {
	raw, err := json.Marshal(storedKeyring{Primary: k.Primary, Keys: k.Keys})
	if err != nil {
		return fmt.Errorf("encode gossip keyring: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("persist gossip keyring: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), keyringFile+".*")
	if err != nil {
		return fmt.Errorf("persist gossip keyring: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return fmt.Errorf("persist gossip keyring %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("persist gossip keyring %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("persist gossip keyring %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("persist gossip keyring: %w", err)
	}
	return nil
}
