package watchdog

import (
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// petByte is any byte but the magic 'V': writing it pets the device and, as
// the kernel clears the release flag on every write, also cancels a magic
// character written earlier.
const (
	petByte   = '.'
	magicByte = 'V'
)

// OSDevice opens real watchdog devices, or files and FIFOs standing in for
// them. It opens non-blocking so that neither opening a FIFO without a
// supervisor nor petting one whose supervisor stopped reading can hang the
// control loop: both fail at once instead (ENXIO, EAGAIN).
type OSDevice struct{}

var _ Device = OSDevice{}

// Open opens path write-only. The file must exist; Open never creates one.
func (OSDevice) Open(path string) (Handle, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open watchdog device: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close() // nothing was written, nothing to disarm
		return nil, fmt.Errorf("open watchdog device %s: %w", path, err)
	}
	return &osHandle{f: f, rc: rc}, nil
}

// osHandle is not safe for concurrent use; Watchdog serializes it.
type osHandle struct {
	f      *os.File
	rc     syscall.RawConn
	closed bool
}

// write issues one write(2) and never waits for the fd to become writable:
// f.Write would park on a full FIFO, and f.Fd would switch it to blocking.
func (h *osHandle) write(b byte) error {
	var werr error
	err := h.rc.Write(func(fd uintptr) bool {
		for {
			_, werr = unix.Write(int(fd), []byte{b})
			if werr != unix.EINTR {
				return true
			}
		}
	})
	if err != nil {
		return err
	}
	return werr
}

func (h *osHandle) Pet() error {
	if err := h.write(petByte); err != nil {
		return fmt.Errorf("write keepalive to %s: %w", h.f.Name(), err)
	}
	return nil
}

func (h *osHandle) SetTimeout(d time.Duration) (time.Duration, error) {
	secs := int32((d + time.Second - 1) / time.Second)
	var errno syscall.Errno
	err := h.rc.Control(func(fd uintptr) {
		// WDIOC_SETTIMEOUT reads the timeout and writes back the one the
		// driver settled on; unix.IoctlSetPointerInt would discard that.
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, unix.WDIOC_SETTIMEOUT, uintptr(unsafe.Pointer(&secs)))
	})
	if err != nil {
		return 0, fmt.Errorf("set timeout on %s: %w", h.f.Name(), err)
	}
	switch {
	case errno == unix.ENOTTY:
		return 0, fmt.Errorf("set timeout on %s: %w (%w)", h.f.Name(), ErrTimeoutUnsupported, errno)
	case errno != 0:
		return 0, fmt.Errorf("set timeout %ds on %s: %w", (d+time.Second-1)/time.Second, h.f.Name(), errno)
	}
	return time.Duration(secs) * time.Second, nil
}

func (h *osHandle) MagicClose() error {
	if h.closed {
		// Linux releases the fd even when close(2) reports an error, and
		// the release path is where the driver checks for the magic
		// character: a retry has nothing left to do.
		return nil
	}
	if err := h.write(magicByte); err != nil {
		return fmt.Errorf("write magic close to %s: %w", h.f.Name(), err)
	}
	h.closed = true
	if err := h.f.Close(); err != nil {
		return fmt.Errorf("close %s after magic close: %w", h.f.Name(), err)
	}
	return nil
}

func (h *osHandle) Close() error {
	if h.closed {
		return nil
	}
	h.closed = true
	if err := h.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", h.f.Name(), err)
	}
	return nil
}
