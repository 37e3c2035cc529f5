package main

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/fsm"
)

// keyringSource is what the keyring endpoints need of this director's
// gossip: the keyring it runs with and what its members announce. nil in
// insecure mode, where gossip is not encrypted.
type keyringSource interface {
	current() cluster.GossipKeyring
	members() []cluster.GossipMember
}

func (s *server) registerKeyringRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/keyring", s.listKeyring)
	mux.HandleFunc("POST /v1/keyring", s.write(s.installKey))
	mux.HandleFunc("PUT /v1/keyring/primary", s.write(s.useKey))
	mux.HandleFunc("DELETE /v1/keyring/{fingerprint}", s.write(s.removeKey))
}

func (s *server) requireEncryptedGossip() error {
	if s.keys == nil {
		return &api.Error{Code: api.CodeUnsupported, Status: http.StatusConflict,
			Message: "gossip is not encrypted on this director (insecure: true): there is no keyring to manage"}
	}
	return nil
}

// listKeyring answers from the local state and gossip: fingerprints only,
// never keys.
func (s *server) listKeyring(w http.ResponseWriter, r *http.Request) {
	if !s.consistent(w, r) {
		return
	}
	idx := s.fsm.Index()
	if s.keys == nil {
		s.reply(w, http.StatusOK, idx, api.KeyringStatus{Insecure: true, Keys: []api.KeyInfo{}, Members: []api.KeyringMember{}})
		return
	}
	var st api.KeyringStatus
	var keys [][]byte
	var primary string
	s.fsm.Read(func(fs *fsm.State) {
		if fs.Keyring != nil {
			st.Replicated = true
			keys, primary = fs.Keyring.Clone().Keys, fs.Keyring.Primary
		}
	})
	if !st.Replicated {
		cur := s.keys.current()
		keys, primary = cur.Keys, fsm.KeyFingerprint(cur.Primary)
	}
	st.Primary = primary
	var alive []cluster.GossipMember
	for _, m := range s.keys.members() {
		st.Members = append(st.Members, api.KeyringMember{ID: m.Name, State: m.State, Keys: splitKeys(m.Meta.Keys)})
		if m.State == cluster.GossipAlive {
			alive = append(alive, m)
		}
	}
	for _, k := range keys {
		fp := fsm.KeyFingerprint(k)
		info := api.KeyInfo{Fingerprint: fp, Primary: fp == primary, InstalledOn: []string{}}
		for _, m := range alive {
			if slices.Contains(splitKeys(m.Meta.Keys), fp) {
				info.InstalledOn = append(info.InstalledOn, m.Name)
			} else {
				info.MissingOn = append(info.MissingOn, m.Name)
			}
		}
		st.Keys = append(st.Keys, info)
	}
	if st.Members == nil {
		st.Members = []api.KeyringMember{}
	}
	s.reply(w, http.StatusOK, idx, st)
}

func splitKeys(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, ",")
}

// installKey sends, with the first key installed, the key this director
// gossips with now, so the replicated keyring starts from what every
// director already uses (see fsm.InstallKey).
func (s *server) installKey(r *http.Request) (fsm.Command, error) {
	if err := s.requireEncryptedGossip(); err != nil {
		return nil, err
	}
	var req api.KeyInstall
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	key, err := parseGossipKey(strings.TrimSpace(req.Key))
	if err != nil {
		return nil, invalid("key", "%v (generate one with `clusterctl keyring generate`)", err)
	}
	return fsm.InstallKey{Key: key, Current: s.keys.current().Primary}, nil
}

// useKey refuses, unless forced, to switch to a key that a live director
// does not announce yet: that director could not read what the others
// send, and gossip would suspect it.
func (s *server) useKey(r *http.Request) (fsm.Command, error) {
	if err := s.requireEncryptedGossip(); err != nil {
		return nil, err
	}
	var req api.KeyUse
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	fp := strings.ToLower(strings.TrimSpace(req.Fingerprint))
	if !req.Force {
		var missing []string
		for _, m := range s.keys.members() {
			if m.State == cluster.GossipAlive && !slices.Contains(splitKeys(m.Meta.Keys), fp) {
				missing = append(missing, m.Name)
			}
		}
		if len(missing) > 0 {
			return nil, &api.Error{Code: api.CodeRefused, Status: http.StatusConflict, Field: "fingerprint",
				Message: fmt.Sprintf("key %s is not installed on live directors %s yet: they could not decrypt gossip; "+
					"wait for `clusterctl keyring ls` to show it everywhere, or use --force", fp, strings.Join(missing, ", "))}
		}
	}
	return fsm.UseKey{Fingerprint: fp}, nil
}

func (s *server) removeKey(r *http.Request) (fsm.Command, error) {
	if err := s.requireEncryptedGossip(); err != nil {
		return nil, err
	}
	return fsm.RemoveKey{Fingerprint: strings.ToLower(r.PathValue("fingerprint"))}, nil
}

// encodeGossipKey is a key as gossip_key_file and clusterctl keyring
// install take it.
func encodeGossipKey(key []byte) string { return base64.StdEncoding.EncodeToString(key) }
