package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleCommands returns one command of every type, with most fields
// set, valid against richState.
func sampleCommands(t testing.TB) []Command {
	t.Helper()
	return []Command{
		AddVIP{VIP: VIP{Name: "v3", Prefix: pfx("198.51.100.7/24"), Interface: "eth1"}},
		DeleteVIP{Name: "v6", Force: true},
		AddService{Service: Service{Name: "new", VIP: "v4", Protocol: UDP, Port: 123, Family: IPv4, Scheduler: "sh",
			SchedFlags: SchedFlags{SHFallback: true, SHPort: true}, Persistence: &Persistence{Timeout: 30, PrefixLen: 16},
			OnePacket: true, Method: DR, Servers: servers(
				RealServer{Address: addr("10.1.0.1"), Port: 123, Weight: 3, UpperThreshold: 9, LowerThreshold: 4, Admin: Drained},
				RealServer{Address: addr("2001:db8:2::1"), Port: 123, Method: TUN, Tunnel: TunnelGUE, TunnelPort: 6081, TunnelChecksum: ChecksumOn})}},
		UpdateService{Name: "web", Patch: ServicePatch{Scheduler: ptr(Scheduler("sh")), SchedFlags: &SchedFlags{SHPort: true},
			Persistence: &Persistence{Timeout: 600, PrefixLen: 16}, Method: ptr(DR)}},
		UpdateService{Name: "dns", Patch: ServicePatch{NoPersistence: true, OnePacket: ptr(false)}},
		DeleteService{Name: "dns"},
		AddServer{Service: "web", Server: RealServer{Address: addr("10.0.0.9"), Port: 8081, Method: NAT, Weight: 4,
			UpperThreshold: 10, LowerThreshold: 2, Admin: Disabled}},
		UpdateServer{Service: "web", Address: addr("2001:db8:1::1"), Port: 80, Patch: ServerPatch{Method: ptr(TUN),
			Tunnel: ptr(TunnelGRE), TunnelPort: ptr(0), TunnelChecksum: ptr(ChecksumNone), Weight: ptr(2),
			UpperThreshold: ptr(20), LowerThreshold: ptr(10), Admin: ptr(Enabled)}},
		DeleteServer{Service: "dns", Address: addr("10.0.0.2"), Port: 53},
		ReplaceState{State: *configState(t)},
		AddService{Service: Service{Name: "chk", VIP: "v4", Protocol: TCP, Port: 8081, Scheduler: "wrr", Method: NAT,
			Check: &CheckConfig{Kind: CheckHTTP, Port: 8082, Interval: Duration(time.Second), Timeout: Duration(300 * time.Millisecond),
				Jitter: Duration(100 * time.Millisecond), Rise: 3, Fall: 2, Path: "/ping", Host: "chk.example", ExpectStatus: "204", BodyRegex: "^$"},
			DownAction: DownRemove, Quorum: 2, QuorumHysteresis: 1, Sorry: &SorryServer{Address: addr("10.2.0.99"), Port: 80},
			Servers: servers(RealServer{Address: addr("10.2.0.1"), Port: 8081, Weight: 2,
				Check: &CheckConfig{Kind: CheckExec, Command: "exit 0", Timeout: Duration(time.Second)}})}},
		UpdateService{Name: "web", Patch: ServicePatch{Check: &CheckConfig{Kind: CheckTCP}, DownAction: ptr(DownQuiesce),
			Quorum: ptr(4), QuorumHysteresis: ptr(1), Sorry: &SorryServer{Address: addr("10.0.0.98"), Port: 8080, Method: NAT}}},
		UpdateService{Name: "dns", Patch: ServicePatch{NoCheck: true, NoSorry: true}},
		UpdateServer{Service: "web", Address: addr("10.0.0.1"), Port: 8080, Patch: ServerPatch{Check: &CheckConfig{Kind: CheckNone}}},
		UpdateServer{Service: "web", Address: addr("2001:db8:1::1"), Port: 80, Patch: ServerPatch{NoCheck: true}},
		SetHealth{Updates: []HealthUpdate{
			{Service: "web", Server: "10.0.0.1:8080", State: HealthUp, Views: map[string]string{"d1": HealthUp, "d2": HealthUnknown}},
			{Service: "fw6", Server: "[2001:db8:1::2]:0", State: HealthDown},
		}},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	f := New()
	if err := f.Restore(bytes.NewReader(mustSnapshot(t, richState(t)))); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range sampleCommands(t) {
		t.Run(string(cmd.Type()), func(t *testing.T) {
			data := mustEncode(t, cmd)
			var env map[string]json.RawMessage
			if err := json.Unmarshal(data, &env); err != nil {
				t.Fatal(err)
			}
			if string(env["v"]) != "1" || string(env["type"]) != `"`+string(cmd.Type())+`"` || len(env) != 3 {
				t.Errorf("envelope %s", data)
			}
			got, err := Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, cmd) {
				t.Errorf("round trip:\n got %#v\nwant %#v", got, cmd)
			}
			// A pointer encodes as the value does.
			p := reflect.New(reflect.TypeOf(cmd))
			p.Elem().Set(reflect.ValueOf(cmd))
			if ptrData := mustEncode(t, p.Interface().(Command)); !bytes.Equal(ptrData, data) {
				t.Errorf("pointer encodes as %s, value as %s", ptrData, data)
			}
			// The samples are valid against the rich state.
			if err := f.Check(cmd); err != nil {
				t.Errorf("sample refused: %v", err)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  Command
		kind error
	}{
		{"nil", nil, ErrInvalid},
		{"nil pointer", (*DeleteVIP)(nil), ErrInvalid},
		{"foreign", foreignCommand{}, ErrUnsupportedCommand},
		{"undecodable prefix", AddVIP{VIP: VIP{Name: "x", Prefix: pfxFrom("192.0.2.1", 40)}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := Encode(tc.cmd)
			if err == nil {
				t.Fatalf("encoded as %s", data)
			}
			if tc.kind != nil && !errors.Is(err, tc.kind) {
				t.Errorf("got %v, want %v", err, tc.kind)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	const vip = `{"name":"a","prefix":"192.0.2.1/32"}`
	for _, tc := range []struct {
		name        string
		data        string
		unsupported bool
		msg         string
	}{
		{"newer version", `{"v":2,"type":"vip.add","payload":{"vip":` + vip + `}}`, true,
			"command version 2 is newer than this director understands (1): upgrade this director"},
		{"newer version of an unknown type", `{"v":3,"type":"vip.frob","payload":{}}`, true, "command version 3 is newer"},
		{"unknown type", `{"v":1,"type":"vip.frob","payload":{}}`, true, `command type "vip.frob" is unknown`},
		{"unknown nested field", `{"v":1,"type":"vip.add","payload":{"vip":{"name":"a","prefix":"192.0.2.1/32","mtu":1500}}}`, true, `unknown field "mtu"`},
		{"unknown payload field", `{"v":1,"type":"vip.delete","payload":{"name":"a","cascade":true}}`, true, `unknown field "cascade"`},
		{"unknown patch field", `{"v":1,"type":"server.update","payload":{"service":"s","address":"10.0.0.1","port":80,"patch":{"weight":1,"drain_timeout":5}}}`, true, `unknown field "drain_timeout"`},
		{"unknown field in a replaced state", `{"v":1,"type":"state.replace","payload":{"state":{"vips":{"a":{"name":"a","prefix":"192.0.2.1/32","owner":"x"}}}}}`, true, `unknown field "owner"`},
		{"unknown envelope field", `{"v":1,"type":"vip.add","payload":{"vip":` + vip + `},"trace":"x"}`, true, `unknown field "trace"`},
		{"malformed", `{"v":1,"type":"vip.add","payload":`, false, "decode command envelope"},
		{"malformed payload", `{"v":1,"type":"vip.add","payload":{"vip":{"name":5}}}`, false, "decode vip.add payload"},
		{"bad prefix", `{"v":1,"type":"vip.add","payload":{"vip":{"name":"a","prefix":"192.0.2.1"}}}`, false, "decode vip.add payload"},
		{"missing version", `{"type":"vip.add","payload":{"vip":` + vip + `}}`, false, "version 0 is not valid"},
		{"negative version", `{"v":-1,"type":"vip.add","payload":{"vip":` + vip + `}}`, false, "version -1 is not valid"},
		{"missing payload", `{"v":1,"type":"vip.add"}`, false, "missing payload"},
		{"trailing data", `{"v":1,"type":"vip.add","payload":{"vip":` + vip + `}} {}`, false, "decode command envelope"},
		{"null", `null`, false, "version 0"},
		{"empty", ``, false, "decode command envelope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, err := Decode([]byte(tc.data))
			if err == nil {
				t.Fatalf("decoded %#v", cmd)
			}
			if errors.Is(err, ErrUnsupportedCommand) != tc.unsupported {
				t.Errorf("errors.Is(%v, ErrUnsupportedCommand) = %v, want %v", err, !tc.unsupported, tc.unsupported)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}

			// Apply panics on it and leaves the state alone.
			h := fixture(t)
			before := snapshotBytes(t, h.f)
			msg := applyPanics(t, h.f, h.idx+1, []byte(tc.data))
			if !strings.Contains(msg, fmt.Sprintf("log entry %d cannot be decoded", h.idx+1)) || !strings.Contains(msg, tc.msg) {
				t.Errorf("panic message %q", msg)
			}
			if after := snapshotBytes(t, h.f); !bytes.Equal(before, after) {
				t.Error("an undecodable entry changed the state")
			}
		})
	}
}

func applyPanics(t *testing.T, f *FSM, index uint64, data []byte) (msg string) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("Apply did not panic")
		}
		msg = fmt.Sprint(r)
	}()
	err := f.Apply(index, data)
	t.Fatalf("Apply returned %v", err)
	return ""
}
