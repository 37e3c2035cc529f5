//go:build linux

package lab

import (
	"encoding/json"
	"testing"
	"time"
)

// TestIPVSSaveAgainstSnapshot checks the two readers the scenarios compare:
// ipvsadm's save format and the replicated state's desired table.
func TestIPVSSaveAgainstSnapshot(t *testing.T) {
	save := `-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 10.0.0.11:80 -g -w 1
-a -t 10.0.0.100:80 -r 10.0.0.12:80 -g -w 0
-A -t 10.0.0.101:80 -s wlc
-a -t 10.0.0.101:80 -r 10.1.0.21:8080 -m -w 3
`
	got, err := parseIPVSSave(save)
	if err != nil {
		t.Fatal(err)
	}
	var s Snapshot
	raw := `{"index":9,"vips":{"web":{"prefix":"10.0.0.100/24"},"nat":{"prefix":"10.0.0.101/24"}},
"services":{
 "web":{"vip":"web","protocol":"tcp","port":80,"scheduler":"rr","servers":{
   "10.0.0.11:80":{"address":"10.0.0.11","port":80,"method":"dr","weight":1,"admin":"enabled"},
   "10.0.0.12:80":{"address":"10.0.0.12","port":80,"method":"dr","weight":5,"admin":"drained"},
   "10.0.0.13:80":{"address":"10.0.0.13","port":80,"method":"dr","weight":5,"admin":"disabled"}}},
 "nat":{"vip":"nat","protocol":"tcp","port":80,"scheduler":"wlc","servers":{
   "10.1.0.21:8080":{"address":"10.1.0.21","port":8080,"method":"nat","weight":3,"admin":"enabled"}}}}}`
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatal(err)
	}
	want := s.Desired()
	if got.String() != want.String() {
		t.Fatalf("ipvsadm table\n%s\ndiffers from the desired\n%s", got, want)
	}
	if _, err := parseIPVSSave("IP Virtual Server version 1.2.1\n"); err == nil {
		t.Fatal("parseIPVSSave accepted a line that is not -A or -a")
	}
}

// TestOutageSince checks the outage is the longest stretch without an
// answer, not the time until the last failure.
func TestOutageSince(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	c := &Client{samples: []Sample{
		{At: at(-20), Who: "rs1"},
		{At: at(0), Err: "timeout"},
		{At: at(20), Err: "timeout"},
		{At: at(1000), Who: "rs2", RTT: 5 * time.Millisecond},
		{At: at(5000), Err: "stall"},
		{At: at(5020), Who: "rs3", RTT: 5 * time.Millisecond},
		{At: at(6000), Err: "pending"},
	}}
	o, ok := c.OutageSince(t0, at(5500))
	if !ok || o.Duration != 1005*time.Millisecond || o.Failed != 3 || o.Answered != 2 {
		t.Fatalf("OutageSince = %+v, %t; want 1.005s, 3 failed, 2 answered, true", o, ok)
	}
	if _, ok := c.OutageSince(t0, at(7000)); ok {
		t.Fatal("a failed run with no answer after it counted as recovered")
	}
}
