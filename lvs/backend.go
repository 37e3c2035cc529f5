package lvs

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"syscall"

	"github.com/cloudflare/ipvs"

	"github.com/directorate/directorate/fsm"
)

// Backend reads and changes a kernel IPVS table. Implementations: Kernel
// (generic netlink), DryRun (in memory, for hosts without IPVS) and Fake
// (tests).
type Backend interface {
	// Name says which backend this is: "kernel", "dry-run" or "fake".
	Name() string
	// List returns the whole table, every service with its destinations,
	// foreign ones included. The caller owns the result.
	List(ctx context.Context) (Table, error)
	// ListService returns one service with its destinations and their
	// connection counters, or an error wrapping ErrServiceNotFound. It
	// costs one service's worth of reading, so it can be polled (as
	// `clusterctl server drain --wait` does) on a big table.
	ListService(ctx context.Context, key ServiceKey) (*Service, error)
	// Apply performs ops in order. A failed op does not stop the ones
	// after it. The error is nil when every op succeeded, and otherwise
	// joins one *OpError per failed op (see OpErrors), plus the cause if
	// the batch could not be completed, in which case the state of the
	// ops not reported is unknown.
	Apply(ctx context.Context, ops []Op) error
	// Close releases the backend's resources.
	Close() error
}

// applyOp changes t as the kernel would change its table for op, with the
// kernel's errors: ESRCH for a missing service, ENOENT for a missing
// destination or an unknown scheduler, EEXIST for a duplicate.
func applyOp(t Table, op Op) error {
	key := KeyOf(op.Service)
	svc := t[key]
	switch op.Kind {
	case AddService:
		if svc != nil {
			return syscall.EEXIST
		}
		if !knownScheduler(op.Service.Scheduler) {
			return syscall.ENOENT
		}
		s := op.Service
		s.Flags |= ipvs.ServiceHashed
		t[key] = &Service{Service: s}
		return nil
	case UpdateService:
		if svc == nil {
			return syscall.ESRCH
		}
		if !knownScheduler(op.Service.Scheduler) {
			return syscall.ENOENT
		}
		svc.Scheduler = op.Service.Scheduler
		svc.Flags = op.Service.Flags | ipvs.ServiceHashed
		svc.Timeout = op.Service.Timeout
		svc.Netmask = op.Service.Netmask
		return nil
	case DeleteService:
		if svc == nil {
			return syscall.ESRCH
		}
		delete(t, key)
		return nil
	}
	if svc == nil {
		return syscall.ESRCH
	}
	addr := netip.AddrPortFrom(op.Dest.Address, op.Dest.Port)
	i, found := svc.find(addr)
	switch op.Kind {
	case AddDest:
		if found {
			return syscall.EEXIST
		}
		svc.Dests = slices.Insert(svc.Dests, i, Destination{Destination: op.Dest})
	case UpdateDest:
		if !found {
			return syscall.ENOENT
		}
		// The kernel keeps a destination's connections, and so its
		// counters, across an edit.
		svc.Dests[i].Destination = op.Dest
	case DeleteDest:
		if !found {
			return syscall.ENOENT
		}
		svc.Dests = slices.Delete(svc.Dests, i, i+1)
	default:
		return syscall.EINVAL
	}
	return nil
}

// listService returns a copy of the service key in t, for the in-memory
// backends' ListService.
func listService(t Table, key ServiceKey) (*Service, error) {
	svc := t[key]
	if svc == nil {
		return nil, fmt.Errorf("list %s: %w", key, ErrServiceNotFound)
	}
	return svc.Clone(), nil
}

func knownScheduler(name string) bool {
	return slices.Contains(fsm.Schedulers(), fsm.Scheduler(name))
}
