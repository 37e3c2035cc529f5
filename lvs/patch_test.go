package lvs

import (
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/fsm"
)

// patchRig reconciles a lineage of patched tables and checks each result
// against a full conversion of the same state.
type patchRig struct {
	*rig
	st *fsm.State
	d  *Desired
}

func newPatchRig(t *testing.T) *patchRig {
	pr := &patchRig{rig: newRig(t, Options{ResyncInterval: time.Hour}), st: webState()}
	pr.d = mustDesired(t, pr.st)
	pr.fake.Reset()
	if _, err := pr.r.Reconcile(t.Context(), pr.d); err != nil {
		t.Fatal(err)
	}
	return pr
}

func (pr *patchRig) patch(names ...string) {
	pr.t.Helper()
	pr.st.Index++
	d, err := pr.d.Patch(pr.st, names...)
	if err != nil {
		pr.t.Fatalf("Patch: %v", err)
	}
	pr.d = d
}

// reconcileIncremental reconciles pr.d, requires an incremental run, and
// checks the kernel against a from-scratch conversion.
func (pr *patchRig) reconcileIncremental() []Op {
	pr.t.Helper()
	pr.fake.Reset()
	res, err := pr.r.Reconcile(pr.t.Context(), pr.d)
	if err != nil {
		pr.t.Fatalf("Reconcile: %v", err)
	}
	if !res.Incremental || res.Resynced {
		pr.t.Fatalf("result %+v, want an incremental run from the cache", res)
	}
	if list, _ := pr.fake.Calls(); list != 0 {
		pr.t.Fatalf("incremental run listed the table")
	}
	full := mustDesired(pr.t, pr.st)
	requireInSync(pr.t, full, pr.fake)
	if s, d := pr.d.Count(); s != len(full.Services) || d != full.dests {
		pr.t.Errorf("patched table counts %d services, %d dests; full conversion %d, %d", s, d, len(full.Services), full.dests)
	}
	return pr.fake.Ops()
}

func TestPatchWeightChangeIsIncremental(t *testing.T) {
	pr := newPatchRig(t)
	pr.st.Services["web"].Servers["10.1.0.1:8080"].Weight = 55
	pr.patch("web")
	requireOps(t, pr.reconcileIncremental(), "update destination 10.1.0.1:8080 of TCP 10.0.0.1:80")

	// Reconciling the same table again is a no-op without a diff.
	pr.fake.Reset()
	res, err := pr.r.Reconcile(t.Context(), pr.d)
	if err != nil || !res.Incremental || res.Ops.Total() != 0 {
		t.Fatalf("second reconcile: %+v, %v", res, err)
	}
}

func TestPatchAddDeleteAndSeveralGenerations(t *testing.T) {
	pr := newPatchRig(t)
	s := tcpService("api", "v4", 8443)
	addServer(s, "10.1.0.20", 8443, 1)
	pr.st.Services["api"] = s
	pr.patch("api")
	delete(pr.st.Services, "dns")
	pr.patch("dns")
	pr.st.Services["web"].Scheduler = "rr"
	pr.patch("web")
	// Three generations since the last reconcile, compared at once.
	requireOps(t, pr.reconcileIncremental(),
		"add service TCP 10.0.0.1:8443",
		"update service TCP 10.0.0.1:80",
		"add destination 10.1.0.20:8443 to TCP 10.0.0.1:8443",
		"delete service UDP [2001:db8::1]:53",
	)
}

func TestPatchSiblingBranchesAreNotConfused(t *testing.T) {
	pr := newPatchRig(t)
	base := pr.d
	// Branch a changes web and is reconciled; then branch b, from the
	// same base, changes dns.
	pr.st.Services["web"].Servers["10.1.0.1:8080"].Weight = 11
	a, err := base.Patch(pr.st, "web")
	if err != nil {
		t.Fatal(err)
	}
	pr.d = a
	pr.reconcileIncremental()
	pr.st.Services["web"].Servers["10.1.0.1:8080"].Weight = 10
	pr.st.Services["dns"].Scheduler = "wrr"
	b, err := base.Patch(pr.st, "dns")
	if err != nil {
		t.Fatal(err)
	}
	// b does not descend from a: web's weight must go back, which only a
	// whole comparison sees.
	pr.fake.Reset()
	res, err := pr.r.Reconcile(t.Context(), b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Incremental {
		t.Error("a sibling branch was diffed incrementally")
	}
	requireOps(t, pr.fake.Ops(), "update service UDP [2001:db8::1]:53", "update destination 10.1.0.1:8080 of TCP 10.0.0.1:80")
	requireInSync(t, mustDesired(t, pr.st), pr.fake)
}

func TestPatchFallsBackOnConflicts(t *testing.T) {
	pr := newPatchRig(t)
	dup := tcpService("aaa", "v4", 80) // same identity as web, smaller name
	addServer(dup, "10.1.0.30", 8080, 1)
	pr.st.Services["aaa"] = dup
	d, err := pr.d.Patch(pr.st, "aaa")
	if err == nil || !strings.Contains(err.Error(), `services[web]: is the same kernel service (TCP 10.0.0.1:80) as service "aaa"`) {
		t.Fatalf("err = %v", err)
	}
	if d.Services[webKey].Name != "aaa" {
		t.Errorf("the smaller name should win: %q", d.Services[webKey].Name)
	}
	pr.fake.Reset()
	res, err := pr.r.Reconcile(t.Context(), d)
	if err != nil || res.Incremental {
		t.Fatalf("reconcile after a rebuild: %+v, %v", res, err)
	}
}

func TestPatchAfterFailureRereads(t *testing.T) {
	pr := newPatchRig(t)
	pr.st.Services["web"].Servers["10.1.0.1:8080"].Weight = 3
	pr.patch("web")
	pr.fake.FailOps(func(Op) error { return errTest })
	if _, err := pr.r.Reconcile(t.Context(), pr.d); err == nil {
		t.Fatal("no error")
	}
	pr.fake.FailOps(nil)
	pr.fake.Reset()
	res, err := pr.r.Reconcile(t.Context(), pr.d)
	if err != nil || res.Incremental || !res.Resynced || res.Ops.Total() != 1 {
		t.Fatalf("after a failure: %+v, %v", res, err)
	}
}

func TestChangeLogBounds(t *testing.T) {
	l := &changeLog{}
	g := uint64(0)
	for range maxGenerations + 10 {
		g = l.add(g, []ServiceKey{webKey})
	}
	if _, ok := l.since(0, g); ok {
		t.Error("an evicted generation was reported as known")
	}
	keys, ok := l.since(g-3, g)
	if !ok || len(keys) != 3 {
		t.Errorf("since(g-3, g) = %v, %v", keys, ok)
	}
	l.trim(g - 1)
	if len(l.gens) != 1 || len(l.order) != 1 {
		t.Errorf("trim kept %d generations", len(l.gens))
	}
	if _, ok := l.since(g-3, g); ok {
		t.Error("a trimmed generation was reported as known")
	}
}
