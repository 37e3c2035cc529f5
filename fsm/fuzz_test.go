package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzApply feeds arbitrary entries to an FSM holding the rich state.
// Entries that do not decode are skipped: Apply panics on them by design.
// For every other entry: Apply does not panic, Check predicts its result,
// a refusal is a FieldError that leaves the state unchanged, and the state
// afterwards passes Restore's whole-state validation and round-trips
// byte for byte.
func FuzzApply(f *testing.F) {
	base := mustSnapshot(f, richState(f))
	for _, cmd := range sampleCommands(f) {
		f.Add(mustEncode(f, cmd))
	}
	for _, cmd := range []Command{
		AddVIP{VIP: VIP{Name: "x", Prefix: pfx("::ffff:192.0.2.1/128")}},
		AddService{Service: Service{Name: "x", FWMark: 7, Family: IPv6, Scheduler: "rr", Method: NAT}},
		AddServer{Service: "fw6", Server: RealServer{Address: addr("10.0.0.5"), Port: 80}},
		UpdateServer{Service: "web", Address: addr("10.0.0.1"), Port: 8080, Patch: ServerPatch{Method: ptr(DR)}},
		DeleteVIP{Name: "v4"},
		ReplaceState{},
		CreateToken{Token: Token{ID: "ro", Role: RoleRead, Hash: strings.Repeat("ab", 32)}},
		CreateToken{Token: Token{ID: "ops2", Role: RoleOperator, Hash: strings.Repeat("cd", 32)}, Bootstrap: true},
		RevokeToken{ID: "ops"},
		InstallKey{Key: bytes.Repeat([]byte{1}, GossipKeyLen)},
		InstallKey{Key: bytes.Repeat([]byte{2}, GossipKeyLen)},
		UseKey{Fingerprint: KeyFingerprint(bytes.Repeat([]byte{2}, GossipKeyLen))},
		RemoveKey{Fingerprint: KeyFingerprint(bytes.Repeat([]byte{1}, GossipKeyLen))},
		UpdateService{Name: "fw6", Patch: ServicePatch{Check: &CheckConfig{Kind: CheckTCP}}},
		UpdateService{Name: "web", Patch: ServicePatch{Quorum: ptr(1), QuorumHysteresis: ptr(1)}},
		UpdateService{Name: "web", Patch: ServicePatch{Sorry: &SorryServer{Address: addr("10.0.0.1"), Port: 8080}}},
		UpdateServer{Service: "web", Address: addr("10.0.0.1"), Port: 8080, Patch: ServerPatch{Check: &CheckConfig{Kind: CheckNone, Rise: 1}}},
		AddServer{Service: "web", Server: RealServer{Address: addr("10.0.0.99"), Port: 8080}},
		SetHealth{Updates: []HealthUpdate{{Service: "web", Server: "10.0.0.1:8080", State: HealthUp}, {Service: "web", Server: "10.0.0.1:8080", State: HealthDown}}},
		SetHealth{Updates: []HealthUpdate{{Service: "fwv", Server: "[2001:db8:1::3]:8443", State: HealthDown}}},
	} {
		f.Add(mustEncode(f, cmd))
	}
	f.Add([]byte(`{"v":1,"type":"state.replace","payload":{"state":{"vips":{"a":null},"services":{"b":{"name":"b","servers":{"x":null}}}}}}`))
	f.Add([]byte(`{"v":1,"type":"server.update","payload":{"service":"web","address":"10.0.0.1","port":73616,"patch":{"weight":1}}}`))
	f.Add([]byte(`{"v":1,"type":"service.update","payload":{"name":"web","patch":{"check":{"kind":"http","interval":"1ns","body_regex":"(("}}}}`))
	f.Add([]byte(`{"v":1,"type":"health.set","payload":{"updates":[{"service":"web","server":"10.0.0.1:8080","state":"down","views":{"":"up"}}]}}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := Decode(data)
		if err != nil {
			t.Skip("undecodable: Apply panics by design")
		}
		fs := New()
		if err := fs.Restore(bytes.NewReader(base)); err != nil {
			t.Fatal(err)
		}
		before := stateBytes(t, fs)
		checkErr := fs.Check(cmd)
		applyErr := fs.Apply(100, data)
		if (checkErr == nil) != (applyErr == nil) || checkErr != nil && checkErr.Error() != applyErr.Error() {
			t.Fatalf("Check said %v, Apply said %v", checkErr, applyErr)
		}
		if applyErr != nil {
			var fe *FieldError
			if !errors.As(applyErr, &fe) || fe.Field == "" || fe.Reason == "" ||
				!(errors.Is(fe, ErrInvalid) || errors.Is(fe, ErrNotFound) || errors.Is(fe, ErrConflict)) {
				t.Fatalf("refusal is not a proper FieldError: %#v", applyErr)
			}
			if after := stateBytes(t, fs); !bytes.Equal(before, after) {
				t.Fatalf("refused entry changed the state")
			}
		}
		if fs.Index() != 100 {
			t.Fatalf("index %d, want 100", fs.Index())
		}
		snap := snapshotBytes(t, fs)
		again := New()
		if err := again.Restore(bytes.NewReader(snap)); err != nil {
			t.Fatalf("state after %s does not restore: %v\n%s", cmd.Type(), err, snap)
		}
		if got := snapshotBytes(t, again); !bytes.Equal(got, snap) {
			t.Fatalf("snapshot does not round-trip:\n%s\n%s", snap, got)
		}
	})
}
