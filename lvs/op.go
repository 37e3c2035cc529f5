package lvs

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/cloudflare/ipvs"
)

// OpKind is one of the six changes a Backend applies.
type OpKind uint8

// Operation kinds, one per IPVS netlink command that changes the table.
const (
	AddService    OpKind = iota + 1 // IPVS_CMD_NEW_SERVICE
	UpdateService                   // IPVS_CMD_SET_SERVICE
	DeleteService                   // IPVS_CMD_DEL_SERVICE
	AddDest                         // IPVS_CMD_NEW_DEST
	UpdateDest                      // IPVS_CMD_SET_DEST
	DeleteDest                      // IPVS_CMD_DEL_DEST
)

// String names the kind as logs and metrics do.
func (k OpKind) String() string {
	switch k {
	case AddService:
		return "add-service"
	case UpdateService:
		return "update-service"
	case DeleteService:
		return "delete-service"
	case AddDest:
		return "add-dest"
	case UpdateDest:
		return "update-dest"
	case DeleteDest:
		return "delete-dest"
	}
	return fmt.Sprintf("op-%d", uint8(k))
}

// IsDest reports whether the kind changes a destination.
func (k OpKind) IsDest() bool { return k >= AddDest && k <= DeleteDest }

// Op is one change to the kernel table. Service carries the full settings
// for AddService and UpdateService and the identity otherwise; Dest is
// set for the destination kinds (full settings for add and update).
type Op struct {
	Kind    OpKind
	Service ipvs.Service
	Dest    ipvs.Destination
}

// String describes the op for errors and logs: "add destination
// 10.0.0.2:80 to TCP 10.0.0.1:80".
func (o Op) String() string {
	svc := KeyOf(o.Service).String()
	dst := netip.AddrPortFrom(o.Dest.Address, o.Dest.Port).String()
	switch o.Kind {
	case AddService:
		return "add service " + svc
	case UpdateService:
		return "update service " + svc
	case DeleteService:
		return "delete service " + svc
	case AddDest:
		return "add destination " + dst + " to " + svc
	case UpdateDest:
		return "update destination " + dst + " of " + svc
	case DeleteDest:
		return "delete destination " + dst + " from " + svc
	}
	return o.Kind.String() + " " + svc
}

// OpError is the failure of one op in a batch.
type OpError struct {
	Op Op
	// Index is the op's position in the batch.
	Index int
	Err   error
}

// Error names the op and gives the kernel's answer.
func (e *OpError) Error() string {
	msg := e.Op.String() + ": " + e.Err.Error()
	// The kernel answers EINVAL for a destination it cannot route to,
	// which reads as a malformed request unless said.
	if (e.Op.Kind == AddDest || e.Op.Kind == UpdateDest) && errors.Is(e.Err, syscall.EINVAL) {
		msg += " (the kernel also says this when it cannot route to the real server: the director needs an address up in its network namespace, and the real server's address must be unicast)"
	}
	return msg
}

// Unwrap returns the cause, so errors.Is sees the errno.
func (e *OpError) Unwrap() error { return e.Err }

// OpErrors returns the *OpError values joined into err, in batch order.
func OpErrors(err error) []*OpError {
	var out []*OpError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if oe, ok := e.(*OpError); ok {
			out = append(out, oe)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		walk(errors.Unwrap(e))
	}
	walk(err)
	return out
}

// OpCounts counts ops by kind.
type OpCounts struct {
	AddService    int `json:"add_service"`
	UpdateService int `json:"update_service"`
	DeleteService int `json:"delete_service"`
	AddDest       int `json:"add_dest"`
	UpdateDest    int `json:"update_dest"`
	DeleteDest    int `json:"delete_dest"`
}

// Count adds one op of kind k.
func (c *OpCounts) Count(k OpKind) {
	switch k {
	case AddService:
		c.AddService++
	case UpdateService:
		c.UpdateService++
	case DeleteService:
		c.DeleteService++
	case AddDest:
		c.AddDest++
	case UpdateDest:
		c.UpdateDest++
	case DeleteDest:
		c.DeleteDest++
	}
}

// Total returns the number of ops counted.
func (c OpCounts) Total() int {
	return c.AddService + c.UpdateService + c.DeleteService + c.AddDest + c.UpdateDest + c.DeleteDest
}

// Services counts the ops that change a service itself.
func (c OpCounts) Services() int { return c.AddService + c.UpdateService + c.DeleteService }

// Dests counts the ops that change a destination.
func (c OpCounts) Dests() int { return c.AddDest + c.UpdateDest + c.DeleteDest }
