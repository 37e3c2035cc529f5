package lvs

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/directorate/directorate/fsm"
)

// The scale of the IPVS sync target: 10,000 services × 10 real servers.
const (
	benchServices = 10000
	benchServers  = 10
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// countOps returns the ops a fake saw since the last Reset, and resets.
func countOps(f *Fake) int {
	n := f.Counts().Total()
	f.Reset()
	return n
}

func BenchmarkDesiredFromState(b *testing.B) {
	st := bigState(benchServices, benchServers)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DesiredFromState(st); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkConvergeFromEmpty(b *testing.B) {
	d := mustDesired(b, bigState(benchServices, benchServers))
	ctx := context.Background()
	want := benchServices * (1 + benchServers)
	ops := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fake := NewFake()
		fake.DisableJournal()
		r := NewReconciler(fake, discardLogger(), Options{})
		b.StartTimer()
		if _, err := r.Reconcile(ctx, d); err != nil {
			b.Fatal(err)
		}
		n := countOps(fake)
		if n != want {
			b.Fatalf("converge took %d backend ops, want %d", n, want)
		}
		ops += n
	}
	b.ReportMetric(float64(ops)/float64(b.N), "backend-ops/op")
}

// benchConverged returns a reconciler already converged to d.
func benchConverged(b *testing.B, d *Desired, opts Options) (*Reconciler, *Fake) {
	fake := NewFake()
	fake.DisableJournal()
	r := NewReconciler(fake, discardLogger(), opts)
	if _, err := r.Reconcile(context.Background(), d); err != nil {
		b.Fatal(err)
	}
	fake.Reset()
	return r, fake
}

// BenchmarkNoOpReconcile reconciles a converged table again:
//   - same-table: the table last reconciled (nothing to compare);
//   - full-diff: an equal table built separately, compared whole against
//     the cache;
//   - resync: the same, reading the whole kernel table first.
func BenchmarkNoOpReconcile(b *testing.B) {
	st := bigState(benchServices, benchServers)
	d := mustDesired(b, st)
	other := mustDesired(b, st)
	for _, tc := range []struct {
		name   string
		resync bool
		tables []*Desired
	}{
		{"same-table", false, []*Desired{d}},
		{"full-diff", false, []*Desired{other, d}},
		{"resync", true, []*Desired{d}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			opts := Options{}
			if tc.resync {
				opts.ResyncInterval = -1 // List the whole table each time
			}
			r, fake := benchConverged(b, d, opts)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := r.Reconcile(ctx, tc.tables[i%len(tc.tables)]); err != nil {
					b.Fatal(err)
				}
				if n := countOps(fake); n != 0 {
					b.Fatalf("no-op reconcile made %d backend ops", n)
				}
			}
			b.ReportMetric(0, "backend-ops/op")
		})
	}
}

func BenchmarkOneWeightChange(b *testing.B) {
	st := bigState(benchServices, benchServers)
	rs := st.Services["svc5000"].Servers["10.1.195.85:8080"] // server 5 of service 5000
	if rs == nil {
		b.Fatal("test server missing")
	}
	ctx := context.Background()

	// full-diff: two desired tables, built separately, that differ in one
	// weight; the reconciler compares them whole.
	b.Run("full-diff", func(b *testing.B) {
		d1 := mustDesired(b, st)
		rs.Weight++
		d2 := mustDesired(b, st)
		rs.Weight--
		r, fake := benchConverged(b, d1, Options{})
		ops := 0
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			d := d2
			if i%2 == 1 {
				d = d1
			}
			if _, err := r.Reconcile(ctx, d); err != nil {
				b.Fatal(err)
			}
			n := countOps(fake)
			if n != 1 {
				b.Fatalf("one weight change made %d backend ops", n)
			}
			ops += n
		}
		b.ReportMetric(float64(ops)/float64(b.N), "backend-ops/op")
	})

	// patch: what a director does on a commit that changes one real
	// server: Desired.Patch of that service, then an incremental
	// reconcile.
	b.Run("patch", func(b *testing.B) {
		d := mustDesired(b, st)
		r, fake := benchConverged(b, d, Options{ResyncInterval: time.Hour})
		base := rs.Weight
		ops := 0
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rs.Weight = base + 1
			if i%2 == 1 {
				rs.Weight = base
			}
			nd, err := d.Patch(st, "svc5000")
			if err != nil {
				b.Fatal(err)
			}
			d = nd
			res, err := r.Reconcile(ctx, d)
			if err != nil {
				b.Fatal(err)
			}
			if n := countOps(fake); n != 1 || !res.Incremental {
				b.Fatalf("one weight change made %d backend ops (incremental %v)", n, res.Incremental)
			}
			ops++
		}
		rs.Weight = base
		b.ReportMetric(float64(ops)/float64(b.N), "backend-ops/op")
	})

	// rebuild: the same commit handled by converting the whole state.
	b.Run("rebuild", func(b *testing.B) {
		r, fake := benchConverged(b, mustDesired(b, st), Options{})
		base := rs.Weight
		ops := 0
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rs.Weight = base + 1
			if i%2 == 1 {
				rs.Weight = base
			}
			d, err := DesiredFromState(st)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := r.Reconcile(ctx, d); err != nil {
				b.Fatal(err)
			}
			n := countOps(fake)
			if n != 1 {
				b.Fatalf("one weight change made %d backend ops", n)
			}
			ops += n
		}
		rs.Weight = base
		b.ReportMetric(float64(ops)/float64(b.N), "backend-ops/op")
	})
}

// BenchmarkHealthBatch is a committed health.set of 100 transitions (one
// server in each of 100 services) reaching the kernel table: the patch of
// those services and an incremental reconcile of 100 weight changes, on
// the 10,000 × 10 table. It is the director's share of the time from a
// failure to weight 0, after the commit.
func BenchmarkHealthBatch(b *testing.B) {
	st := bigState(benchServices, benchServers)
	check := &fsm.CheckConfig{Kind: fsm.CheckTCP}
	names := make([]string, 0, 100)
	var servers []*fsm.RealServer
	for i := 0; i < benchServices; i += benchServices / 100 {
		svc := st.Services[fmt.Sprintf("svc%d", i)]
		svc.Check = check
		for _, rs := range svc.Servers {
			servers = append(servers, rs)
			break
		}
		names = append(names, svc.Name)
	}
	ctx := context.Background()
	d := mustDesired(b, st)
	r, fake := benchConverged(b, d, Options{ResyncInterval: time.Hour})
	down := &fsm.Health{State: fsm.HealthDown}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for _, rs := range servers {
			rs.Health = nil
			if i%2 == 0 {
				rs.Health = down
			}
		}
		nd, err := d.Patch(st, names...)
		if err != nil {
			b.Fatal(err)
		}
		d = nd
		res, err := r.Reconcile(ctx, d)
		if err != nil {
			b.Fatal(err)
		}
		if n := countOps(fake); n != len(servers) || !res.Incremental {
			b.Fatalf("100 transitions made %d backend ops (incremental %v)", n, res.Incremental)
		}
	}
}
