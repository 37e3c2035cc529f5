package cluster

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkProposeLoopback measures a committed write on the production
// path (three directors over TCP on loopback, bolt with fsync, memberlist):
// Propose returns once a quorum stored the entry and the leader applied it.
// It reports p50 and p99 next to the mean; DESIGN.md's target is p99 ≤ 10 ms.
func BenchmarkProposeLoopback(b *testing.B) { benchmarkPropose(b, nil) }

// BenchmarkProposeLoopbackTLS is BenchmarkProposeLoopback in secure mode:
// raft over mutual TLS 1.3 and encrypted gossip, as clusterd runs by
// default.
func BenchmarkProposeLoopbackTLS(b *testing.B) {
	ca := newTestCA(b, "bench CA")
	ring := WithGossipKeyring(GossipKeyring{Primary: gossipKey(1), Keys: [][]byte{gossipKey(1)}})
	benchmarkPropose(b, func(id string) []Option { return []Option{ca.raftTLSFor(b, id), ring} })
}

func benchmarkPropose(b *testing.B, secure func(id string) []Option) {
	logs := newLogSink(b)
	base := b.TempDir()
	var nodes []*realNode
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("b%d", i)
		cfg := Config{
			NodeID: id, DataDir: filepath.Join(base, id),
			RaftBind: "127.0.0.1:0", GossipBind: "127.0.0.1:0",
			BootstrapExpect: 3, Timing: TimingConfig{Profile: ProfileDefault},
		}
		if i > 1 {
			cfg.Join = []string{nodes[0].n.GossipAddress()}
		}
		var opts []Option
		if secure != nil {
			opts = secure(id)
		}
		nodes = append(nodes, startReal(b, logs, cfg, opts...))
	}
	var leader *realNode
	eventually(b, 30*time.Second, "leader", func() error {
		for _, rn := range nodes {
			if rn.n.IsLeader() {
				leader = rn
				return nil
			}
		}
		return errors.New("no leader")
	})
	ctx := ctxT(b, time.Hour)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := leader.n.Propose(ctx, addVIP(i)); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
