package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/fsm"
)

// fakeGossipKeys stands in for the cluster node: it records the keyrings
// applied to it, and every member announces what the test says.
type fakeGossipKeys struct {
	mu        sync.Mutex
	applied   []cluster.GossipKeyring
	announced map[string]string // member -> fingerprints
	fail      error
}

func (g *fakeGossipKeys) SetGossipKeyring(k cluster.GossipKeyring) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail != nil {
		return g.fail
	}
	g.applied = append(g.applied, k)
	return nil
}

func (g *fakeGossipKeys) GossipMembers() []cluster.GossipMember {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []cluster.GossipMember
	for _, id := range []string{"d1", "d2", "d3"} {
		out = append(out, cluster.GossipMember{Name: id, State: cluster.GossipAlive, Meta: cluster.NodeMeta{ID: id, Keys: g.announced[id]}})
	}
	return out
}

func (g *fakeGossipKeys) announce(fps string, ids ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range ids {
		g.announced[id] = fps
	}
}

func (g *fakeGossipKeys) last() cluster.GossipKeyring {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.applied) == 0 {
		return cluster.GossipKeyring{}
	}
	return g.applied[len(g.applied)-1]
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, gossipKeyLen) }

func TestKeyringRotationThroughTheAPI(t *testing.T) {
	dataDir := t.TempDir()
	f := fsm.New()
	c := &fakeConsensus{fsm: f, leader: true}
	fileKey, newKey := key(1), key(2)
	oldFP, newFP := fsm.KeyFingerprint(fileKey), fsm.KeyFingerprint(newKey)
	node := &fakeGossipKeys{announced: map[string]string{}}
	node.announce(oldFP, "d1", "d2", "d3")
	keys := newKeyringApplier(f, dataDir, cluster.GossipKeyring{Primary: fileKey, Keys: [][]byte{fileKey}}, testLogger(t))
	keys.bind(node)
	srv := newServer("d1", f, c, noIPVS{}, testLogger(t), 2*time.Second, security{Insecure: true})
	srv.keys = keys
	ts := httptest.NewServer(srv.handler())
	t.Cleanup(ts.Close)
	cl, err := api.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	applyNow := func() {
		t.Helper()
		if err := keys.sync(); err != nil {
			t.Fatal(err)
		}
	}

	st, _, err := cl.Keyring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Replicated || st.Primary != oldFP || len(st.Keys) != 1 || len(st.Keys[0].InstalledOn) != 3 {
		t.Fatalf("before any install: %+v", st)
	}

	if _, err := cl.InstallKey(ctx, newKey); err != nil {
		t.Fatal(err)
	}
	applyNow()
	if got := node.last(); !bytes.Equal(got.Primary, fileKey) || len(got.Keys) != 2 {
		t.Fatalf("after install gossip got %+v; the file's key must stay primary next to the new one", got.Fingerprints())
	}
	// Restarting now would gossip with both keys, not just the file's.
	if ring, err := startKeyring(&config{DataDir: dataDir, GossipKeyFile: "/nonexistent"}); err != nil || len(ring.Keys) != 2 {
		t.Fatalf("persisted keyring: %v %v", ring.Fingerprints(), err)
	}
	fi, err := os.Stat(filepath.Join(dataDir, keyringFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("persisted keyring file: %v %v", fi, err)
	}

	// d3 has not applied the install yet: using the key is refused and
	// changes nothing.
	node.announce(oldFP+","+newFP, "d1", "d2")
	before := f.Index()
	_, err = cl.UseKey(ctx, newFP, false)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || !strings.Contains(ae.Message, "d3") {
		t.Fatalf("use before d3 has the key: got %v", err)
	}
	if f.Index() != before {
		t.Fatal("a refused use changed the state")
	}
	node.announce(oldFP+","+newFP, "d3")
	if _, err := cl.UseKey(ctx, newFP, false); err != nil {
		t.Fatal(err)
	}
	applyNow()
	if got := node.last(); !bytes.Equal(got.Primary, newKey) {
		t.Fatalf("after use the primary is %v", got.Fingerprints())
	}
	_, err = cl.RemoveKey(ctx, newFP)
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Field != "keyring.fingerprint" {
		t.Fatalf("removing the primary: got %v", err)
	}
	if _, err := cl.RemoveKey(ctx, oldFP); err != nil {
		t.Fatal(err)
	}
	applyNow()
	if got := node.last(); len(got.Keys) != 1 || !bytes.Equal(got.Keys[0], newKey) {
		t.Fatalf("after remove gossip has %v", got.Fingerprints())
	}
	ring, err := startKeyring(&config{DataDir: dataDir})
	if err != nil || !bytes.Equal(ring.Primary, newKey) || len(ring.Keys) != 1 {
		t.Fatalf("after a restart the director would gossip with %v (%v)", ring.Fingerprints(), err)
	}

	st, _, err = cl.Keyring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Replicated || st.Primary != newFP || len(st.Keys) != 1 || !st.Keys[0].Primary {
		t.Fatalf("keyring ls: %+v", st)
	}
	if raw := do(t, http.MethodGet, ts.URL+"/v1/keyring", nil); bytes.Contains(raw.body.Data, []byte(encodeGossipKey(newKey))) {
		t.Fatal("keyring ls shows a key")
	}
}

func TestKeyringBadRequestsChangeNothing(t *testing.T) {
	f := fsm.New()
	c := &fakeConsensus{fsm: f, leader: true}
	node := &fakeGossipKeys{announced: map[string]string{}}
	keys := newKeyringApplier(f, t.TempDir(), cluster.GossipKeyring{Primary: key(1), Keys: [][]byte{key(1)}}, testLogger(t))
	keys.bind(node)
	srv := newServer("d1", f, c, noIPVS{}, testLogger(t), 2*time.Second, security{Insecure: true})
	srv.keys = keys
	ts := httptest.NewServer(srv.handler())
	t.Cleanup(ts.Close)
	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		field              string
	}{
		{"short key", "POST", "/v1/keyring", `{"key":"c2hvcnQ="}`, 400, "key"},
		{"not base64", "POST", "/v1/keyring", `{"key":"!!"}`, 400, "key"},
		{"unknown field", "POST", "/v1/keyring", `{"key":"x","colour":1}`, 400, "body"},
		{"the key in use", "POST", "/v1/keyring", api.KeyInstall{Key: encodeGossipKey(key(1))}, 409, "keyring.key"},
		{"use unknown", "PUT", "/v1/keyring/primary", api.KeyUse{Fingerprint: fsm.KeyFingerprint(key(9)), Force: true}, 404, "keyring.fingerprint"},
		{"use garbage", "PUT", "/v1/keyring/primary", api.KeyUse{Fingerprint: "zz", Force: true}, 400, "keyring.fingerprint"},
		{"remove unknown", "DELETE", "/v1/keyring/" + fsm.KeyFingerprint(key(9)), nil, 404, "keyring.fingerprint"},
	} {
		r := do(t, tc.method, ts.URL+tc.path, tc.body)
		if r.status != tc.status || r.err.Field != tc.field {
			t.Errorf("%s: got %d %+v, want %d naming %s", tc.name, r.status, r.err, tc.status, tc.field)
		}
	}
	if f.Index() != 0 || len(node.applied) != 0 {
		t.Fatalf("bad requests changed the state (index %d) or gossip (%d keyrings)", f.Index(), len(node.applied))
	}

	// Without encrypted gossip there is no keyring to change.
	srv.keys = nil
	insecure := httptest.NewServer(srv.handler())
	t.Cleanup(insecure.Close)
	if r := do(t, "POST", insecure.URL+"/v1/keyring", api.KeyInstall{Key: encodeGossipKey(key(2))}); r.status != http.StatusConflict {
		t.Fatalf("install in insecure mode: %d %+v", r.status, r.err)
	}
}

func TestKeyringApplierRetriesAfterAFailure(t *testing.T) {
	f := fsm.New()
	node := &fakeGossipKeys{announced: map[string]string{}, fail: errors.New("memberlist says no")}
	keys := newKeyringApplier(f, t.TempDir(), cluster.GossipKeyring{Primary: key(1), Keys: [][]byte{key(1)}}, testLogger(t))
	keys.bind(node)
	if err := keys.sync(); err != nil {
		t.Fatalf("nothing replicated yet, nothing to do: %v", err)
	}
	data, err := fsm.Encode(fsm.InstallKey{Key: key(2), Current: key(1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(1, data); err != nil {
		t.Fatal(err)
	}
	if err := keys.sync(); err == nil {
		t.Fatal("a failed apply was not reported")
	}
	if len(keys.current().Keys) != 1 {
		t.Fatal("the keyring in use changed although gossip refused it")
	}
	node.mu.Lock()
	node.fail = nil
	node.mu.Unlock()
	if err := keys.sync(); err != nil || len(keys.current().Keys) != 2 {
		t.Fatalf("retry: %v, keys %d", err, len(keys.current().Keys))
	}
}
