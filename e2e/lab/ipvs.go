//go:build linux

package lab

import (
	"fmt"
	"slices"
	"strings"
)

// IPVSTable is a kernel IPVS table as Debian's ipvsadm reads it, one
// normalised line per service ("svc tcp 10.0.0.100:80 rr") and per
// destination ("dst tcp 10.0.0.100:80 10.0.0.11:80 dr 1"), sorted.
type IPVSTable []string

// ReadIPVS reads n's kernel table with `ipvsadm -Sn`: the independent
// reader that the scenarios hold clusterd's reconciler to.
func (n *Node) ReadIPVS() (IPVSTable, error) {
	out, err := n.Run("ipvsadm", "-Sn")
	if err != nil {
		return nil, err
	}
	t, err := parseIPVSSave(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	return t, nil
}

// IPVSList is `ipvsadm -Ln` of n, for failure reports.
func (n *Node) IPVSList() string {
	out, err := n.Run("ipvsadm", "-Ln")
	if err != nil {
		return err.Error()
	}
	return out
}

// parseIPVSSave parses `ipvsadm -Sn` output.
func parseIPVSSave(out string) (IPVSTable, error) {
	var t IPVSTable
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		var proto, svc, sched, rs, method, weight string
		for i := 0; i < len(f); i++ {
			arg := func() string {
				if i+1 < len(f) {
					i++
					return f[i]
				}
				return ""
			}
			switch f[i] {
			case "-t":
				proto, svc = "tcp", arg()
			case "-u":
				proto, svc = "udp", arg()
			case "--sctp-service":
				proto, svc = "sctp", arg()
			case "-s":
				sched = arg()
			case "-r":
				rs = arg()
			case "-g":
				method = "dr"
			case "-m":
				method = "nat"
			case "-i":
				method = "tun"
			case "-w":
				weight = arg()
			}
		}
		switch f[0] {
		case "-A":
			t = append(t, fmt.Sprintf("svc %s %s %s", proto, svc, sched))
		case "-a":
			t = append(t, fmt.Sprintf("dst %s %s %s %s %s", proto, svc, rs, method, weight))
		default:
			return nil, fmt.Errorf("ipvsadm -Sn: unexpected line %q", line)
		}
	}
	slices.Sort(t)
	return t, nil
}

// String shows t one line per entry.
func (t IPVSTable) String() string { return strings.Join(t, "\n") }
