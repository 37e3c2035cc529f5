package vm

import (
	"bytes"
	"fmt"
	"path"
	"strconv"
	"strings"
)

// Markers the guest writes on the status port (and, for the exit status, on
// the console as a fallback). They are whole lines and unlikely in output.
const (
	startMarker = "@@VMRUN-START@@"
	exitPrefix  = "@@VMRUN-EXIT "
	exitSuffix  = "@@"
)

// Names of the virtio serial ports; the guest finds its /dev/vportNpM nodes
// by these names in sysfs because N depends on virtio probe order.
const (
	portStdout = "vmrun.stdout"
	portStderr = "vmrun.stderr"
	portStatus = "vmrun.status"
)

// Mount tags of the 9p shares.
const (
	tagRoot = "hostroot"
	tagOut  = "vmout"
)

// OutMount is where Options.OutDir appears in the guest (it is also mounted
// at its host path, so both names work).
const OutMount = "/out"

// initramfsModules returns the modules stage 1 loads with busybox insmod,
// before any file system but the initramfs exists; they and their
// dependencies go into the initramfs: 9p and overlay to build the root,
// virtio_console for the output ports.
func initramfsModules() []string {
	return []string{"virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_console"}
}

// DefaultModules returns the modules every run tries to load with modprobe.
// crc32c_generic comes before libcrc32c (and so before ip_vs) because
// libcrc32c asks the crypto API for crc32c and fails if no provider is
// loaded yet. softdog is loaded separately with soft_noboot=1.
func DefaultModules() []string {
	return []string{
		"crc32c_generic", "libcrc32c", "nf_conntrack",
		"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_lblc",
		"ip_vs_lblcr", "ip_vs_dh", "ip_vs_sh", "ip_vs_sed", "ip_vs_nq",
		"ip_vs_mh", "ip_vs_fo", "ip_vs_ovf", "ip_vs_twos",
		"veth", "bridge", "ipip", "tun", "dummy", "macvlan", "virtio_rng",
	}
}

// shellQuote quotes s for POSIX sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shellQuoteAll(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// stage1Applets returns the busybox applets stage 1 calls by name.
func stage1Applets() []string {
	return []string{"sh", "mount", "insmod", "modprobe", "mkdir", "ln", "cp", "ip", "hostname", "switch_root", "poweroff"}
}

// guestConfig is what the guest scripts need to know about one run.
type guestConfig struct {
	KernelVersion string
	ModulesDir    string   // host path of the cached modules, symlinks resolved
	LibDir        string   // the host's /lib, symlinks resolved
	Insmod        []string // module files in /modules, in load order
	Modules       []string // modprobe these (all exist in the kernel)
	Missing       []string // requested but not in this kernel: logged
	Busybox       string   // host path of busybox-static, for poweroff -f
	OutDir        string   // host path shared read-write (symlinks resolved), or ""
	Dir           string
	Env           []string
	Command       []string
}

// stage1 is the initramfs /init. It runs as PID 1 under busybox, builds the
// guest root (an overlay of the read-only 9p host root and a tmpfs, so
// everything is writable in the guest and nothing on the host), does all
// remaining setup with busybox applets (already in RAM, unlike host binaries
// that would be read cold over 9p), and hands PID 1 to stage 2 with
// switch_root. switch_root rather than chroot matters: kernel threads share
// PID 1's root, so the kernel's request_module finds the host's
// /sbin/modprobe and modules auto-load as on a normal system; and pivot_root
// works in the guest, which it does not on an initramfs root.
func stage1(c guestConfig) string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
export PATH=/bin
uptime=/proc/uptime
up() { read t _ <$uptime; echo "vmrun: $t $*"; }
note() { echo "vmrun: $*"; }
die() { echo "vmrun: stage 1 failed: $*"; poweroff -f; }
mount -t proc proc /proc || die "mount /proc"
mount -t sysfs sysfs /sys || die "mount /sys"
mount -t devtmpfs devtmpfs /dev || die "mount /dev"
up "initramfs running"
`)
	for _, m := range c.Insmod {
		fmt.Fprintf(&b, "insmod /modules/%[1]s || die \"insmod %[1]s\"\n", path.Base(m))
	}
	fmt.Fprintf(&b, `mkdir -p /lower /rw /host
# cache=loose: the share is read-only and lives as long as the VM, so the
# page cache is safe and makes repeated execs of host binaries cheap.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose %[1]s /lower || die "mount 9p %[1]s"
mount -t tmpfs -o mode=0755 tmpfs /rw && mkdir /rw/upper /rw/work || die "mount /rw"
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /host || die "mount overlay"
up "root mounted"
`, tagRoot)

	// The host has no modules for this kernel: point /lib/modules/<version>
	// at the cache, here for busybox modprobe and in the overlay for the
	// host's modprobe (the kernel's request_module, tests).
	fmt.Fprintf(&b, "mkdir -p /lib/modules /host%[3]s/modules\nln -s /lower%[1]s /lib/modules/%[2]s && ln -sfn %[1]s /host%[3]s/modules/%[2]s || die \"linking modules\"\n",
		shellQuote(c.ModulesDir), shellQuote(c.KernelVersion), shellQuote(c.LibDir))
	if len(c.Modules) > 0 {
		mods := shellQuoteAll(c.Modules)
		fmt.Fprintf(&b, "modprobe -a %s 2>/dev/null || for m in %s; do modprobe \"$m\" || note \"modprobe $m failed\"; done\n", mods, mods)
	}
	b.WriteString("modprobe softdog soft_noboot=1 || note \"modprobe softdog failed\"\n")
	if len(c.Missing) > 0 {
		fmt.Fprintf(&b, "note %s\n", shellQuote("not in kernel "+c.KernelVersion+", skipped: "+strings.Join(c.Missing, " ")))
	}
	b.WriteString(`up "modules loaded"
for d in proc sys dev; do mount --move /$d /host/$d || die "move /$d"; done
uptime=/host/proc/uptime
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts || note "mount devpts failed"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /host/dev/shm || note "mount /dev/shm failed"
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup || note "mount cgroup2 failed"
# A fresh /run: the host's (pid files, sockets, /run/netns) would only
# mislead programs in the guest. /tmp stays the host's, writable through the
# overlay, so host temp paths (test binaries, fixtures) work in the guest.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /host/run || die "mount /run"
mkdir -p /host/run/vmrun && cp /stage2.sh /host/run/vmrun/stage2.sh || die "copy stage 2"
hostname vm
ip link set lo up || note "lo up failed"
`)
	if c.OutDir != "" {
		fmt.Fprintf(&b, "mkdir -p /host%[2]s && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 %[1]s /host%[2]s && mount --bind /host%[2]s /host%[3]s || die \"mounting out dir\"\n",
			tagOut, OutMount, shellQuote(c.OutDir))
	}
	b.WriteString(`up "guest ready"
exec switch_root /host /bin/sh /run/vmrun/stage2.sh
`)
	return b.String()
}

// stage2 runs as PID 1 in the guest root under the host's /bin/sh. It runs
// the command with stdout and stderr on their own virtio ports, reports the
// exit status on the status port (and the console), and powers off. It uses
// shell builtins only, so the first host binary read over 9p is the
// command's.
func stage2(c guestConfig) string {
	return fmt.Sprintf(`#!/bin/sh
port() {
	for d in /sys/class/virtio-ports/*; do
		read n <"$d/name" && [ "$n" = "$1" ] && { echo "/dev/${d##*/}"; return; }
	done
	echo /dev/console
}
out=$(port %s) err=$(port %s) st=$(port %s)
echo %s >"$st"
(cd %s || exit 125; exec /usr/bin/env -i %s %s) </dev/null >"$out" 2>"$err"
code=$?
echo "%s$code%s" >"$st"
echo "%s$code%s"
%s poweroff -f
echo o >/proc/sysrq-trigger
`, portStdout, portStderr, portStatus,
		startMarker,
		shellQuote(c.Dir), shellQuoteAll(c.Env), shellQuoteAll(c.Command),
		exitPrefix, exitSuffix, exitPrefix, exitSuffix,
		shellQuote(c.Busybox))
}

// parseExit returns the exit status in the last well-formed exit marker in
// data. The marker may sit amid other output, e.g. kernel messages on the
// console, and a marker cut short (by a truncated log) is skipped.
func parseExit(data []byte) (int, bool) {
	for end := len(data); ; {
		i := bytes.LastIndex(data[:end], []byte(exitPrefix))
		if i < 0 {
			return 0, false
		}
		end = i
		rest := data[i+len(exitPrefix):]
		digits, _, ok := bytes.Cut(rest, []byte(exitSuffix))
		if !ok || len(digits) == 0 || len(digits) > 3 {
			continue
		}
		code, err := strconv.Atoi(string(digits))
		if err != nil || code < 0 {
			continue
		}
		return code, true
	}
}
