package fsm

import (
	"bytes"
	"testing"
)

func gkey(b byte) []byte { return bytes.Repeat([]byte{b}, GossipKeyLen) }

func TestKeyringRotation(t *testing.T) {
	h := newHarness(t)
	old, next := gkey(1), gkey(2)
	h.mustApply(InstallKey{Key: old})
	h.f.Read(func(s *State) {
		if s.Keyring == nil || s.Keyring.Primary != KeyFingerprint(old) || len(s.Keyring.Keys) != 1 {
			t.Fatalf("the first key installed must become the primary: %+v", s.Keyring)
		}
	})
	h.mustApply(InstallKey{Key: next})
	h.refuse(RemoveKey{Fingerprint: KeyFingerprint(old)}, "keyring.fingerprint", ErrConflict)
	h.mustApply(UseKey{Fingerprint: KeyFingerprint(next)}, RemoveKey{Fingerprint: KeyFingerprint(old)})
	h.f.Read(func(s *State) {
		if s.Keyring.Primary != KeyFingerprint(next) || len(s.Keyring.Keys) != 1 || !bytes.Equal(s.Keyring.PrimaryKey(), next) {
			t.Fatalf("after rotation: %+v", s.Keyring)
		}
	})
}

func TestKeyringRefusals(t *testing.T) {
	h := newHarness(t)
	h.mustApply(InstallKey{Key: gkey(1)})
	h.refuse(InstallKey{Key: gkey(1)}, "keyring.key", ErrConflict)
	h.refuse(InstallKey{Key: []byte("short")}, "keyring.key", ErrInvalid)
	h.refuse(UseKey{Fingerprint: KeyFingerprint(gkey(9))}, "keyring.fingerprint", ErrNotFound)
	h.refuse(UseKey{Fingerprint: "zz"}, "keyring.fingerprint", ErrInvalid)
	h.refuse(RemoveKey{Fingerprint: KeyFingerprint(gkey(9))}, "keyring.fingerprint", ErrNotFound)
	for i := 2; i <= MaxGossipKeys; i++ {
		h.mustApply(InstallKey{Key: gkey(byte(i))})
	}
	h.refuse(InstallKey{Key: gkey(99)}, "keyring.key", ErrConflict)
	// A restore of the configuration never replaces the keyring.
	st := NewState()
	st.Keyring = &Keyring{Primary: KeyFingerprint(gkey(7)), Keys: [][]byte{gkey(7)}}
	h.refuse(ReplaceState{State: *st}, "state.keyring", ErrInvalid)
	h.mustApply(ReplaceState{State: *NewState()})
	h.f.Read(func(s *State) {
		if s.Keyring == nil || len(s.Keyring.Keys) != MaxGossipKeys {
			t.Fatalf("a restore dropped the keyring: %+v", s.Keyring)
		}
	})
}

func TestKeyringFirstInstallKeepsTheCurrentKey(t *testing.T) {
	h := newHarness(t)
	file, next := gkey(1), gkey(2)
	h.refuse(InstallKey{Key: file, Current: file}, "keyring.key", ErrConflict)
	h.refuse(InstallKey{Key: next, Current: []byte("short")}, "keyring.current", ErrInvalid)
	h.mustApply(InstallKey{Key: next, Current: file})
	h.f.Read(func(s *State) {
		k := s.Keyring
		if k.Primary != KeyFingerprint(file) || len(k.Keys) != 2 || !bytes.Equal(k.Keys[1], next) {
			t.Fatalf("the key gossip runs with must stay primary: %+v", k)
		}
	})
	// Once the keyring exists, Current changes nothing.
	h.mustApply(InstallKey{Key: gkey(3), Current: gkey(4)})
	h.f.Read(func(s *State) {
		if len(s.Keyring.Keys) != 3 || s.Keyring.find(KeyFingerprint(gkey(4))) >= 0 {
			t.Fatalf("current was used on a replicated keyring: %+v", s.Keyring)
		}
	})
}

func TestKeyringBeforeAnyKey(t *testing.T) {
	h := newHarness(t)
	h.refuse(UseKey{Fingerprint: KeyFingerprint(gkey(1))}, "keyring.fingerprint", ErrNotFound)
	h.refuse(RemoveKey{Fingerprint: KeyFingerprint(gkey(1))}, "keyring.fingerprint", ErrNotFound)
}
