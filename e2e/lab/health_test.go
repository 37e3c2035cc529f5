//go:build linux

package lab

import (
	"encoding/json"
	"fmt"
	"testing"
)

// TestSnapshotDesired holds the health-aware desired table to the rules
// of docs/health.md: quiesce gives a down server weight 0, remove drops it
// unless it is drained, a lost quorum puts every server at 0 and the sorry
// server in at weight 1.
func TestSnapshotDesired(t *testing.T) {
	const raw = `{"index":30,"vips":{"web":{"prefix":"10.0.0.100/24"}},
"services":{
 "q":{"vip":"web","protocol":"tcp","port":80,"scheduler":"rr","method":"dr","servers":{
   "10.0.0.11:80":{"address":"10.0.0.11","port":80,"method":"dr","weight":2,"admin":"enabled","health":{"state":"down","index":12}},
   "10.0.0.12:80":{"address":"10.0.0.12","port":80,"method":"dr","weight":3,"admin":"enabled","health":{"state":"up","index":9}},
   "10.0.0.13:80":{"address":"10.0.0.13","port":80,"method":"dr","weight":4,"admin":"enabled"}}},
 "r":{"vip":"web","protocol":"tcp","port":81,"scheduler":"rr","method":"nat","down_action":"remove","servers":{
   "10.1.0.21:8080":{"address":"10.1.0.21","port":8080,"method":"nat","weight":1,"admin":"enabled","health":{"state":"down","index":12}},
   "10.1.0.22:8080":{"address":"10.1.0.22","port":8080,"method":"nat","weight":1,"admin":"drained","health":{"state":"down","index":12}}}},
 "s":{"vip":"web","protocol":"tcp","port":82,"scheduler":"rr","method":"dr","quorum_lost":true,
   "sorry":{"address":"10.0.0.90","port":82,"method":""},"servers":{
   "10.0.0.11:82":{"address":"10.0.0.11","port":82,"method":"dr","weight":1,"admin":"enabled","health":{"state":"down","index":12}},
   "10.0.0.12:82":{"address":"10.0.0.12","port":82,"method":"dr","weight":1,"admin":"disabled"}}}}}`
	var s Snapshot
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatal(err)
	}
	want := IPVSTable{
		"dst tcp 10.0.0.100:80 10.0.0.11:80 dr 0",
		"dst tcp 10.0.0.100:80 10.0.0.12:80 dr 3",
		"dst tcp 10.0.0.100:80 10.0.0.13:80 dr 4",
		"dst tcp 10.0.0.100:81 10.1.0.22:8080 nat 0",
		"dst tcp 10.0.0.100:82 10.0.0.11:82 dr 0",
		"dst tcp 10.0.0.100:82 10.0.0.90:82 dr 1",
		"svc tcp 10.0.0.100:80 rr",
		"svc tcp 10.0.0.100:81 rr",
		"svc tcp 10.0.0.100:82 rr",
	}
	got := s.Desired()
	if got.String() != want.String() {
		t.Fatalf("desired table\n%s\nwant\n%s", got, want)
	}
	w := got.Weights("tcp 10.0.0.100:82")
	if fmt.Sprint(w) != "map[10.0.0.11:82:0 10.0.0.90:82:1]" {
		t.Fatalf("weights of :82: %v", w)
	}
	if st := s.Services["q"].Servers["10.0.0.13:80"].State(); st != "-" {
		t.Fatalf("a server never checked is %q, want -", st)
	}
}
