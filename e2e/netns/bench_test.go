package netns

import (
	"flag"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

var kills = flag.Int("kills", 20, "BenchmarkFailover: leader kills per timing profile")

// BenchmarkFailover measures the client-observed failover after a leader's
// clusterd is SIGKILLed, for each timing profile with the default VIP
// settings (fence none, 3 s lifetime): the time from the kill until the
// client's TCP probe of the VIP is first answered by another director.
// Between kills the killed director is restarted and the cluster allowed to
// become whole again. It reports the p50, p99 and maximum over -kills
// kills.
func BenchmarkFailover(b *testing.B) {
	for _, profile := range []string{"default", "fast"} {
		b.Run(profile, func(b *testing.B) {
			skipUnlessLab(b)
			if *kills < 1 {
				b.Fatalf("-kills: must be at least 1, got %d", *kills)
			}
			c, leader := newCluster(b, settings{profile: profile, fence: "none", lifetime: 3 * time.Second})
			var (
				samples []time.Duration
				log     []string
			)
			for range b.N {
				for range *kills {
					next, d, _ := c.killLeader(leader, 20*time.Second)
					samples = append(samples, d)
					log = append(log, fmt.Sprintf("%s→%s %s", leader.id, next.id, ms(d)))
					c.start(leader)
					c.waitSettled(next, 30*time.Second)
					leader = next
				}
			}
			slices.Sort(samples)
			p50, p99, worst := percentile(samples, 0.50), percentile(samples, 0.99), samples[len(samples)-1]
			b.ReportMetric(msFloat(p50), "p50-ms")
			b.ReportMetric(msFloat(p99), "p99-ms")
			b.ReportMetric(msFloat(worst), "max-ms")
			// One line: the benchmark output keeps only a few log lines.
			b.Logf("%s profile, %d kills: p50 %s, p99 %s, max %s; in order: %s", profile, len(samples),
				ms(p50), ms(p99), ms(worst), strings.Join(log, ", "))
		})
	}
}

// percentile returns the nearest-rank percentile of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func msFloat(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
