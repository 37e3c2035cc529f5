package lvs

import (
	"context"
	"errors"
	"log/slog"
	"sync"
)

// DryRun is the Backend for hosts without IPVS (lvs.backend: dry-run). It
// keeps in memory the table it would program, logs every op, and lists
// that table, so `clusterctl ipvs show` shows what a kernel would hold.
type DryRun struct {
	log   *slog.Logger
	mu    sync.Mutex
	table Table
}

// NewDryRun returns an empty DryRun that logs to log.
func NewDryRun(log *slog.Logger) *DryRun {
	return &DryRun{log: log.With("backend", "dry-run"), table: make(Table)}
}

// Name implements Backend.
func (d *DryRun) Name() string { return "dry-run" }

// List implements Backend.
func (d *DryRun) List(ctx context.Context) (Table, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.table.Clone(), nil
}

// ListService implements Backend.
func (d *DryRun) ListService(ctx context.Context, key ServiceKey) (*Service, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return listService(d.table, key)
}

// Apply implements Backend. Each op is logged at debug level and the
// batch at info level; an op the kernel would refuse (a duplicate, a
// missing service) fails here too.
func (d *DryRun) Apply(ctx context.Context, ops []Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	var counts OpCounts
	debug := d.log.Enabled(ctx, slog.LevelDebug)
	for i, op := range ops {
		counts.Count(op.Kind)
		if debug {
			d.log.DebugContext(ctx, "would apply", "op", op.String())
		}
		if err := applyOp(d.table, op); err != nil {
			errs = append(errs, &OpError{Op: op, Index: i, Err: err})
		}
	}
	if len(ops) > 0 {
		d.log.InfoContext(ctx, "would apply IPVS changes", "ops", len(ops), "failed", len(errs),
			"add_service", counts.AddService, "update_service", counts.UpdateService, "delete_service", counts.DeleteService,
			"add_dest", counts.AddDest, "update_dest", counts.UpdateDest, "delete_dest", counts.DeleteDest)
	}
	return errors.Join(errs...)
}

// Close implements Backend.
func (d *DryRun) Close() error { return nil }
