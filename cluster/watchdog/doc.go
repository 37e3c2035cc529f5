// Package watchdog guards a hung Raft leader, the way Heartbeat's
// `watchdog /dev/watchdog` guards a hung Heartbeat.
//
// Two mechanisms work together:
//
//   - A kernel watchdog device. The leader arms it when it takes leadership
//     (Watchdog.Arm) and pets it from its control loop only while it is
//     healthy (Watchdog.PetIfHealthy with a Health): the loop is responsive,
//     the raft lease holds and no VIP operation is stuck. On a clean
//     step-down, after the VIPs are released, it disarms the device with the
//     magic close (Watchdog.Disarm). A process that dies or hangs while
//     armed stops petting, and the kernel reboots the machine.
//   - An in-process StallDetector. The control loop calls Beat every
//     iteration; a monitor goroutine calls OnStall once when no beat has
//     arrived within a bound, so the caller can release the VIPs and step
//     down long before the kernel acts, and OnRecover when beats resume.
//
// # Bounds
//
// Let P be the control-loop period, S the stall bound and T the watchdog
// timeout (whole seconds; the kernel counts seconds).
//
//   - A leader whose control loop hangs is rebooted within T of the hang:
//     the last pet happened no later than the hang began, and the kernel
//     fires T after the last pet. The same holds when clusterd crashes or is
//     SIGKILLed while armed, since closing the device without the magic
//     character leaves it armed.
//   - The stall detector calls OnStall between S and S plus its check
//     interval (S/4 by default) after the last beat.
//   - T must be at least 3·P (Validate) so that one slow iteration never
//     reboots a healthy leader, and S should lie between 2·P and T so that
//     the in-process detector releases the VIPs gracefully before the kernel
//     reboots the machine.
//
// The VIPs' kernel lifetime (package vip) fences a hung leader first; the
// watchdog is the second line.
//
// # Devices
//
// Opening /dev/watchdog arms it. Drivers built with nowayout (or
// CONFIG_WATCHDOG_NOWAYOUT) ignore the magic close and stay armed; nothing
// in user space can tell, so such a director reboots after T even on a
// clean step-down. The device path is configurable: tests and hosts without
// a watchdog may point it at a plain file or a FIFO read by a supervisor,
// which accept the writes but not the timeout ioctl (ErrTimeoutUnsupported,
// which Arm logs and tolerates).
package watchdog
