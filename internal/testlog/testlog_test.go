package testlog

import "testing"

func TestFindAndCount(t *testing.T) {
	log, sink := New(t)
	log.Info("VIP claimed", "vip", "web")
	log.Warn("VIP released", "vip", "api")
	log.Debug("lease confirmed")
	if got := sink.Count("VIP"); got != 2 {
		t.Errorf("Count(VIP) = %d, want 2", got)
	}
	if got := sink.Find("VIP", "vip=api"); len(got) != 1 || got[0] == "" {
		t.Errorf("Find(VIP, vip=api) = %q", got)
	}
	if got := sink.Count("lease", "level=DEBUG"); got != 1 {
		t.Errorf("debug lines are kept: Count = %d", got)
	}
	if got := sink.Count("nothing"); got != 0 {
		t.Errorf("Count(nothing) = %d", got)
	}
}
