//go:build !linux

package lvs

import (
	"fmt"
	"runtime"
)

func dialIPVS(int, int) (nlConn, uint16, error) {
	return nil, 0, fmt.Errorf("the kernel IPVS backend needs Linux, not %s: set lvs.backend: dry-run", runtime.GOOS)
}
