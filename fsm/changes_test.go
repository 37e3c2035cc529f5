package fsm

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

func changedSince(f *FSM, since uint64) (services []string, full bool, index uint64) {
	f.ReadChanges(since, func(st *State, s []string, fl bool) { services, full, index = s, fl, st.Index })
	return
}

func TestReadChanges(t *testing.T) {
	h := newHarness(t)
	h.mustApply(AddVIP{VIP: VIP{Name: "v", Prefix: pfx("192.0.2.10/24")}}) // 1
	h.mustApply(
		AddService{Service: Service{Name: "a", VIP: "v", Protocol: TCP, Port: 80, Scheduler: "rr", Method: NAT}}, // 2
		AddService{Service: Service{Name: "b", VIP: "v", Protocol: TCP, Port: 81, Scheduler: "rr", Method: NAT}}, // 3
		AddServer{Service: "b", Server: RealServer{Address: addr("10.0.0.1"), Port: 80, Weight: 1}},              // 4
	)
	if err := h.apply(AddServer{Service: "nope", Server: RealServer{Address: addr("10.0.0.1"), Port: 80}}); err == nil { // 5, refused
		t.Fatal("a server of an unknown service was accepted")
	}
	h.mustApply(UpdateService{Name: "a", Patch: ServicePatch{Scheduler: ptr(Scheduler("wrr"))}}) // 6
	cases := []struct {
		since    uint64
		services []string
		full     bool
	}{
		{0, nil, true}, // entry 1 changed VIPs
		{1, []string{"a", "b"}, false},
		{3, []string{"a", "b"}, false}, // entry 4 touched b; 6 touched a
		{4, []string{"a"}, false},      // the refused entry 5 changed nothing
		{6, nil, false},
	}
	for _, tc := range cases {
		got, full, idx := changedSince(h.f, tc.since)
		if idx != 6 || full != tc.full || !slices.Equal(got, tc.services) {
			t.Errorf("since %d: got %v full=%t at %d, want %v full=%t at 6", tc.since, got, full, idx, tc.services, tc.full)
		}
	}

	h.mustApply(DeleteVIP{Name: "v", Force: true}) // 7
	if _, full, _ := changedSince(h.f, 6); !full {
		t.Error("deleting a VIP must be a full change")
	}

	var snap bytes.Buffer
	if err := h.f.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	if err := h.f.Restore(&snap); err != nil {
		t.Fatal(err)
	}
	if _, full, _ := changedSince(h.f, 6); !full {
		t.Error("a reader from before a restore must rebuild")
	}
	if got, full, _ := changedSince(h.f, 7); full || len(got) != 0 {
		t.Errorf("a reader at the restored index has nothing to do: got %v full=%t", got, full)
	}
}

func TestReadChangesForgetsOldEntries(t *testing.T) {
	h := newHarness(t)
	h.mustApply(AddVIP{VIP: VIP{Name: "v", Prefix: pfx("192.0.2.10/24")}},
		AddService{Service: Service{Name: "s", VIP: "v", Protocol: TCP, Port: 80, Scheduler: "rr", Method: NAT}})
	for i := range changeLogSize + 10 {
		h.mustApply(AddServer{Service: "s", Server: RealServer{Address: addr(fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)), Port: 80, Weight: 1}})
	}
	if _, full, _ := changedSince(h.f, 2); !full {
		t.Error("a reader older than the remembered changes must rebuild")
	}
	if got, full, _ := changedSince(h.f, h.idx-1); full || !slices.Equal(got, []string{"s"}) {
		t.Errorf("recent reader: got %v full=%t", got, full)
	}
}
