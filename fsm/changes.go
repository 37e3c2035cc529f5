package fsm

import (
	"slices"
)

// changeLogSize bounds how many applied changes the FSM remembers for
// ReadChanges. A reader that falls further behind rebuilds from the whole
// state, which is always correct, only slower.
const changeLogSize = 4096

// change records which services one applied entry touched. It is derived
// from the command alone, so it is as deterministic as Apply, but it is
// not part of the replicated state: a restarted director starts with an
// empty log and rebuilds.
type change struct {
	index    uint64
	services []string
	full     bool
}

// changeLog is the FSM's memory of recent changes. Every successful change
// with an index above floor has a record.
type changeLog struct {
	floor   uint64
	records []change
}

// touched names the services cmd changes. VIP commands and whole-state
// replacement are full changes: they alter which kernel services are
// Directorate's, not just one service's settings.
func touched(cmd Command) (services []string, full bool) {
	switch c := cmd.(type) {
	case AddService:
		return []string{c.Service.Name}, false
	case UpdateService:
		return []string{c.Name}, false
	case DeleteService:
		return []string{c.Name}, false
	case AddServer:
		return []string{c.Service}, false
	case UpdateServer:
		return []string{c.Service}, false
	case DeleteServer:
		return []string{c.Service}, false
	case InstallKey, UseKey, RemoveKey:
		// The keyring is not part of the IPVS table.
		return nil, false
	case SetHealth:
		services = make([]string, 0, len(c.Updates))
		for _, u := range c.Updates {
			services = append(services, u.Service)
		}
		slices.Sort(services)
		return slices.Compact(services), false
	}
	return nil, true
}

func (l *changeLog) record(index uint64, cmd Command) {
	services, full := touched(cmd)
	l.records = append(l.records, change{index: index, services: services, full: full})
	if n := len(l.records) - changeLogSize; n > 0 {
		l.floor = l.records[n-1].index
		l.records = slices.Delete(l.records, 0, n)
	}
}

// reset forgets everything up to index, as after a snapshot restore.
func (l *changeLog) reset(index uint64) {
	l.floor, l.records = index, nil
}

// since returns the services changed by entries after index, sorted and
// without repeats, or full when a full change happened or the log no longer
// reaches back that far.
func (l *changeLog) since(index uint64) (services []string, full bool) {
	if index < l.floor {
		return nil, true
	}
	i, _ := slices.BinarySearchFunc(l.records, index, func(c change, idx uint64) int {
		switch {
		case c.index <= idx:
			return -1
		default:
			return 1
		}
	})
	for _, c := range l.records[i:] {
		if c.full {
			return nil, true
		}
		services = append(services, c.services...)
	}
	slices.Sort(services)
	return slices.Compact(services), false
}

// ReadChanges calls fn under the read lock with the current state and the
// services that entries applied after index since changed. full is true
// when VIPs or the whole state changed, or when since is older than the
// changes the FSM remembers: the caller must then rebuild from the whole
// state instead of patching the named services. The same rules as Read
// apply to fn.
func (f *FSM) ReadChanges(since uint64, fn func(st *State, services []string, full bool)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	services, full := f.changes.since(since)
	fn(f.s.state, services, full)
}
