package lvs

import (
	"net/netip"
	"slices"

	"github.com/cloudflare/ipvs"
)

// plan returns the ops that take the managed part of actual to d, in the
// order the kernel needs and traffic prefers:
//
//  1. new services, then in-place service changes (SET_SERVICE);
//  2. new destinations, then in-place destination changes (SET_DEST);
//  3. removed destinations of services that stay;
//  4. removed services.
//
// A destination is added before an old one is removed, so a service whose
// real servers are all replaced never has none. A removed service is one
// DEL_SERVICE: the kernel removes its destinations with it.
//
// candidates calls check with every service key the plan should compare.
// Only services that differ are sorted, so a reconcile with nothing or
// little to do costs one pass and no sorting.
func plan(d *Desired, actual Table, managed func(ServiceKey) bool, candidates func(check func(ServiceKey))) []Op {
	var touched, gone []ServiceKey
	check := func(k ServiceKey) {
		if _, held := d.Held[k]; held {
			return
		}
		want, got := d.Services[k], actual[k]
		switch {
		case want == nil:
			if got != nil && managed(k) {
				gone = append(gone, k)
			}
		case got == nil || !sameServiceAttrs(&want.Service, &got.Service) || !sameDests(want.Dests, got.Dests):
			touched = append(touched, k)
		}
	}
	candidates(check)
	if len(touched) == 0 && len(gone) == 0 {
		return nil
	}
	slices.SortFunc(touched, ServiceKey.Compare)
	slices.SortFunc(gone, ServiceKey.Compare)

	// One slice per kind keeps each kind in key order without sorting ops.
	var byKind [DeleteDest + 1][]Op
	for _, k := range touched {
		want, got := d.Services[k], actual[k]
		var have []Destination
		switch {
		case got == nil:
			byKind[AddService] = append(byKind[AddService], Op{Kind: AddService, Service: want.Service})
		case !sameServiceAttrs(&want.Service, &got.Service):
			byKind[UpdateService] = append(byKind[UpdateService], Op{Kind: UpdateService, Service: want.Service})
			have = got.Dests
		default:
			have = got.Dests
		}
		id := identity(want.Service)
		walkDests(want.Dests, have, func(w, g *Destination) {
			switch {
			case g == nil:
				byKind[AddDest] = append(byKind[AddDest], Op{Kind: AddDest, Service: id, Dest: w.Destination})
			case w == nil:
				byKind[DeleteDest] = append(byKind[DeleteDest], Op{Kind: DeleteDest, Service: id, Dest: g.Destination})
			case !sameDestAttrs(&w.Destination, &g.Destination):
				byKind[UpdateDest] = append(byKind[UpdateDest], Op{Kind: UpdateDest, Service: id, Dest: w.Destination})
			}
		})
	}
	for _, k := range gone {
		byKind[DeleteService] = append(byKind[DeleteService], Op{Kind: DeleteService, Service: identity(actual[k].Service)})
	}
	n := 0
	for _, ops := range byKind {
		n += len(ops)
	}
	ops := make([]Op, 0, n)
	for _, kind := range []OpKind{AddService, UpdateService, AddDest, UpdateDest, DeleteDest, DeleteService} {
		ops = append(ops, byKind[kind]...)
	}
	return ops
}

// planAll compares the whole tables.
func planAll(d *Desired, actual Table, managed func(ServiceKey) bool) []Op {
	return plan(d, actual, managed, func(check func(ServiceKey)) {
		for k := range d.Services {
			check(k)
		}
		for k := range actual {
			if _, ok := d.Services[k]; !ok {
				check(k)
			}
		}
	})
}

// planKeys compares only the services in keys, which must include every
// service that may differ between the tables.
func planKeys(d *Desired, actual Table, managed func(ServiceKey) bool, keys []ServiceKey) []Op {
	return plan(d, actual, managed, func(check func(ServiceKey)) {
		seen := make(map[ServiceKey]struct{}, len(keys))
		for _, k := range keys {
			if _, dup := seen[k]; !dup {
				seen[k] = struct{}{}
				check(k)
			}
		}
	})
}

// identity strips a service to the fields that name it, which is all a
// destination op or a delete sends.
func identity(s ipvs.Service) ipvs.Service {
	return ipvs.Service{Family: s.Family, Protocol: s.Protocol, Address: s.Address, Port: s.Port, FWMark: s.FWMark}
}

// sameDests reports whether two sorted destination lists match.
func sameDests(want, got []Destination) bool {
	if len(want) != len(got) {
		return false
	}
	for i := range want {
		if want[i].Address != got[i].Address || want[i].Port != got[i].Port ||
			!sameDestAttrs(&want[i].Destination, &got[i].Destination) {
			return false
		}
	}
	return true
}

// walkDests calls fn for every address in either sorted list, with nil
// for the side that lacks it.
func walkDests(want, got []Destination, fn func(w, g *Destination)) {
	i, j := 0, 0
	for i < len(want) || j < len(got) {
		var c int
		switch {
		case j >= len(got):
			c = -1
		case i >= len(want):
			c = 1
		default:
			c = want[i].Key().Compare(got[j].Key())
		}
		switch {
		case c < 0:
			fn(&want[i], nil)
			i++
		case c > 0:
			fn(nil, &got[j])
			j++
		default:
			fn(&want[i], &got[j])
			i++
			j++
		}
	}
}

// DiffState flags one service or destination in a Report.
type DiffState string

// Diff states. The empty state means in sync.
const (
	InSync DiffState = ""
	// Missing: desired, absent from the kernel.
	Missing DiffState = "missing"
	// Extra: in the kernel, Directorate's, no longer desired.
	Extra DiffState = "extra"
	// Changed: in both, with different settings.
	Changed DiffState = "changed"
	// Foreign: in the kernel and not Directorate's; never touched.
	Foreign DiffState = "foreign"
	// Held: in the state, but lvs cannot express it (Desired.Held); the
	// kernel entry, if any, is left alone.
	Held DiffState = "held"
	// Retiring: a destination no longer desired, kept at weight 0 until
	// its connections end or its grace period does (see
	// Options.RemoveGrace). It is a planned step, so it leaves the
	// report in sync.
	Retiring DiffState = "retiring"
)

// Report sets a kernel table beside the desired one, for `clusterctl
// ipvs show`.
type Report struct {
	Services []ServiceDiff
	// InSync is true when nothing but foreign services and retiring
	// destinations differs.
	InSync bool
}

// settle recomputes InSync from the states.
func (r *Report) settle() {
	r.InSync = true
	for _, sd := range r.Services {
		if sd.State != InSync && sd.State != Foreign {
			r.InSync = false
		}
		for _, dd := range sd.Dests {
			if dd.State != InSync && dd.State != Retiring {
				r.InSync = false
			}
		}
	}
}

// ServiceDiff is one service, desired and actual.
type ServiceDiff struct {
	Key ServiceKey
	// Name is the Directorate service; empty when it is not desired.
	Name    string
	Desired *ipvs.Service
	Actual  *ipvs.Service
	State   DiffState
	// Reason says why a Held service could not be expressed.
	Reason string
	Dests  []DestDiff
}

// DestDiff is one destination, desired and actual.
type DestDiff struct {
	Addr    netip.AddrPort
	Desired *Destination
	Actual  *Destination
	State   DiffState
}

// Diff compares d with the table actual. managed says which kernel
// services are Directorate's (the reconciler's rule, see Reconciler.Report);
// nil means d.Claims.
func Diff(d *Desired, actual Table, managed func(ServiceKey) bool) Report {
	if managed == nil {
		managed = d.Claims
	}
	keys := make([]ServiceKey, 0, len(d.Services)+len(actual))
	for k := range d.Services {
		keys = append(keys, k)
	}
	for k := range actual {
		if _, ok := d.Services[k]; !ok {
			keys = append(keys, k)
		}
	}
	for k := range d.Held {
		if _, ok := actual[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, ServiceKey.Compare)

	r := Report{InSync: true, Services: make([]ServiceDiff, 0, len(keys))}
	for _, k := range keys {
		want, got := d.Services[k], actual[k]
		sd := ServiceDiff{Key: k}
		var wantDests, gotDests []Destination
		if want != nil {
			sd.Name = want.Name
			sd.Desired = &want.Service
			wantDests = want.Dests
		}
		if got != nil {
			sd.Actual = &got.Service
			gotDests = got.Dests
		}
		reason, held := d.Held[k]
		switch {
		case held:
			sd.State = Held
			sd.Reason = reason.Error()
		case got == nil:
			sd.State = Missing
		case want == nil && managed(k):
			sd.State = Extra
		case want == nil:
			sd.State = Foreign
		case !sameServiceAttrs(&want.Service, &got.Service):
			sd.State = Changed
		}
		sd.Dests = make([]DestDiff, 0, max(len(wantDests), len(gotDests)))
		walkDests(wantDests, gotDests, func(w, g *Destination) {
			dd := DestDiff{Desired: w, Actual: g}
			if w != nil {
				dd.Addr = w.Key()
			} else {
				dd.Addr = g.Key()
			}
			if sd.State != Foreign && sd.State != Held {
				switch {
				case g == nil:
					dd.State = Missing
				case w == nil:
					dd.State = Extra
				case !sameDestAttrs(&w.Destination, &g.Destination):
					dd.State = Changed
				}
			}
			if dd.State != InSync {
				r.InSync = false
			}
			sd.Dests = append(sd.Dests, dd)
		})
		if sd.State != InSync && sd.State != Foreign {
			r.InSync = false
		}
		r.Services = append(r.Services, sd)
	}
	return r
}
