// Package vm runs a command inside a qemu VM that boots Debian's stock
// kernel, so tests can use kernel features the host kernel lacks (IPVS,
// loadable modules, softdog). The guest's root file system is the host's,
// shared read-only over 9p under a tmpfs overlay: host paths and host
// binaries work unchanged in the guest, and the guest cannot modify the host
// except through Options.OutDir.
//
// ensure-deps.sh in this directory installs qemu and friends and caches the
// kernel; Run only reads that cache.
package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configures one Run.
type Options struct {
	// Command is the argv to run in the guest; Command[0] is looked up in
	// the guest's PATH (the host's /usr/sbin:/usr/bin:... ).
	Command []string
	// Env is added to a minimal environment (PATH, HOME, DIRECTORATE_IN_VM=1);
	// the host's environment is not passed through.
	Env []string
	// Dir is the working directory in the guest (default "/").
	Dir string
	// Memory is the guest RAM in MiB (default 2048); CPUs the vCPU count
	// (default 2).
	Memory, CPUs int
	// Timeout bounds the whole run, boot included (0: only ctx bounds it).
	Timeout time.Duration
	// Stdout and Stderr receive the command's output as it is produced
	// (default: discarded).
	Stdout, Stderr io.Writer
	// Console receives the serial console: kernel messages and the
	// harness's own setup log (default: kept only for error messages).
	Console io.Writer
	// KernelDir selects the cached kernel; see FindKernel.
	KernelDir string
	// KVM uses hardware virtualisation. Off by default: /dev/kvm exists on
	// the development machines but hangs there.
	KVM bool
	// Modules are loaded in addition to DefaultModules.
	Modules []string
	// OutDir is a host directory (created if missing) shared read-write;
	// the guest sees it at OutMount and at its own host path.
	OutDir string
	// KernelArgs are appended to the kernel command line.
	KernelArgs []string
}

// Result describes a finished run.
type Result struct {
	// ExitCode is the command's exit status as the guest shell reports it
	// (128+n for death by signal n, 127 for command not found).
	ExitCode int
	// Boot is the time from starting qemu to the command starting.
	Boot time.Duration
	// Total is the time from starting qemu to qemu exiting.
	Total time.Duration
}

// consoleTail is how much of the console an error message quotes.
const consoleTail = 4096

// Run boots a VM, runs opts.Command in it and returns its exit status. A
// command that fails is not an error; a guest that never reports an exit
// status (setup failure, panic, timeout) is. Runs are independent and may
// go on concurrently.
func Run(ctx context.Context, opts Options) (Result, error) {
	if len(opts.Command) == 0 {
		return Result{}, errors.New("vm: no command")
	}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	k, err := FindKernel(opts.KernelDir)
	if err != nil {
		return Result{}, fmt.Errorf("vm: %w", err)
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return Result{}, fmt.Errorf("vm: %w (run e2e/vm/ensure-deps.sh)", err)
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return Result{}, fmt.Errorf("vm: %w (run e2e/vm/ensure-deps.sh)", err)
	}
	if opts.OutDir != "" {
		if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
			return Result{}, fmt.Errorf("vm: out dir: %w", err)
		}
		if opts.OutDir, err = filepath.Abs(opts.OutDir); err != nil {
			return Result{}, fmt.Errorf("vm: out dir: %w", err)
		}
	}

	runDir, err := os.MkdirTemp("", "vmrun-")
	if err != nil {
		return Result{}, fmt.Errorf("vm: %w", err)
	}
	defer os.RemoveAll(runDir)
	initrd := filepath.Join(runDir, "initramfs.cpio")
	if err := buildInitramfs(initrd, k, busybox, opts); err != nil {
		return Result{}, fmt.Errorf("vm: %w", err)
	}
	return boot(ctx, qemu, qemuArgs(k, initrd, opts), opts)
}

func buildInitramfs(dst string, k Kernel, busybox string, opts Options) error {
	idx, err := loadModuleIndex(k.ModulesDir())
	if err != nil {
		return err
	}
	// Stage 1 resolves these paths in the initramfs, where the host's
	// absolute symlinks would point to the wrong place.
	c := guestConfig{
		KernelVersion: k.Version,
		Busybox:       busybox,
		Dir:           opts.Dir,
		Env:           guestEnv(opts),
		Command:       opts.Command,
	}
	if c.ModulesDir, err = filepath.EvalSymlinks(k.ModulesDir()); err != nil {
		return fmt.Errorf("resolving modules dir: %w", err)
	}
	if c.LibDir, err = filepath.EvalSymlinks("/lib"); err != nil {
		return fmt.Errorf("resolving /lib: %w", err)
	}
	if opts.OutDir != "" {
		if c.OutDir, err = filepath.EvalSymlinks(opts.OutDir); err != nil {
			return fmt.Errorf("out dir: %w", err)
		}
	}
	if c.Dir == "" {
		c.Dir = "/"
	}
	if c.Insmod, err = idx.loadOrder(initramfsModules()); err != nil {
		return err
	}
	for _, m := range append(DefaultModules(), opts.Modules...) {
		if idx.exists(m) {
			c.Modules = append(c.Modules, m)
		} else {
			c.Missing = append(c.Missing, m)
		}
	}
	ir := initramfs{Init: stage1(c), Stage2: stage2(c)}
	if ir.Modules, err = readModules(k.ModulesDir(), c.Insmod); err != nil {
		return err
	}
	if ir.Busybox, err = readBusybox(busybox); err != nil {
		return err
	}

	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("creating initramfs: %w", err)
	}
	w := bufio.NewWriter(f)
	if err := ir.writeTo(w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing initramfs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing initramfs: %w", err)
	}
	return nil
}

func guestEnv(opts Options) []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"DIRECTORATE_IN_VM=1",
	}
	if opts.OutDir != "" {
		env = append(env, "DIRECTORATE_VM_OUT="+OutMount)
	}
	return append(env, opts.Env...)
}

// ports lists the virtio serial ports in the order of their host pipes: qemu
// opens /dev/fd/<3+i> for ports()[i] (exec.Cmd.ExtraFiles start at fd 3).
func ports() []string { return []string{portStdout, portStderr, portStatus} }

// qemuEscape escapes a value for qemu's comma-separated option syntax.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func qemuArgs(k Kernel, initrd string, opts Options) []string {
	mem, cpus := opts.Memory, opts.CPUs
	if mem <= 0 {
		mem = 2048
	}
	if cpus <= 0 {
		cpus = 2
	}
	// -cpu max under TCG exposes RDRAND (fast CRNG init, so getrandom does
	// not block) and SSE4.2.
	accel, cpu := "tcg", "max"
	if opts.KVM {
		accel, cpu = "kvm", "host"
	}
	// quiet: every console byte is an emulated UART write under TCG.
	// mitigations=off: the guest is a throwaway test box. The clocksource
	// stays the kernel's choice (hpet, about 1.5 µs per clock read):
	// KernelArgs "clocksource=tsc tsc=reliable" make clock reads 7x cheaper
	// (vDSO) but made boots erratic on a loaded host (33 s against 14 s).
	cmdline := append([]string{
		"console=ttyS0", "quiet", "loglevel=3", "panic=-1",
		"mitigations=off", "random.trust_cpu=on",
	}, opts.KernelArgs...)
	args := []string{
		// q35: virtio-pci devices get MSI-X there, which spares the slow
		// ACPI interrupt-link setup of the default pc machine (~0.5 s).
		"-machine", "q35", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-accel", accel, "-cpu", cpu,
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-kernel", k.Image(), "-initrd", initrd,
		"-append", strings.Join(cmdline, " "),
		"-serial", "stdio",
		"-virtfs", "local,path=/,mount_tag=" + tagRoot + ",security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-rng-pci",
		"-device", "virtio-serial-pci,id=vser",
	}
	if opts.OutDir != "" {
		args = append(args, "-virtfs", "local,path="+qemuEscape(opts.OutDir)+",mount_tag="+tagOut+",security_model=none,multidevs=remap")
	}
	for i, name := range ports() {
		args = append(args,
			"-chardev", fmt.Sprintf("file,id=port%d,path=/dev/fd/%d", i, 3+i),
			"-device", fmt.Sprintf("virtserialport,bus=vser.0,nr=%d,chardev=port%d,name=%s", i+1, i, name))
	}
	return args
}

// boot runs qemu and collects the guest's output until qemu exits.
func boot(ctx context.Context, qemu string, args []string, opts Options) (Result, error) {
	names := ports()
	readers := make([]*os.File, len(names))
	writers := make([]*os.File, len(names))
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			if f != nil {
				f.Close()
			}
		}
	}
	defer closeAll(readers)
	defer closeAll(writers)
	for i := range names {
		r, w, err := os.Pipe()
		if err != nil {
			return Result{}, fmt.Errorf("vm: %w", err)
		}
		readers[i], writers[i] = r, w
	}

	console := &tailBuffer{max: consoleTail}
	var consoleW io.Writer = console
	if opts.Console != nil {
		consoleW = io.MultiWriter(console, opts.Console)
	}
	var qemuErr bytes.Buffer
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdout = consoleW
	cmd.Stderr = &qemuErr
	cmd.ExtraFiles = writers
	cmd.WaitDelay = 5 * time.Second

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("vm: starting qemu: %w", err)
	}
	// qemu holds its own copies; ours would keep the readers from seeing EOF.
	closeAll(writers)
	clear(writers)

	var (
		wg      sync.WaitGroup
		booted  time.Time
		status  bytes.Buffer
		copyErr = make([]error, 2)
	)
	for i, w := range []io.Writer{opts.Stdout, opts.Stderr} {
		if w == nil {
			w = io.Discard
		}
		wg.Go(func() { _, copyErr[i] = io.Copy(w, readers[i]) })
	}
	wg.Go(func() {
		sc := bufio.NewScanner(readers[2])
		for sc.Scan() {
			if sc.Text() == startMarker && booted.IsZero() {
				booted = time.Now()
			}
			status.Write(sc.Bytes())
			status.WriteByte('\n')
		}
	})

	waitErr := cmd.Wait()
	wg.Wait()
	res := Result{Total: time.Since(start)}
	if !booted.IsZero() {
		res.Boot = booted.Sub(start)
	}
	code, ok := parseExit(status.Bytes())
	if !ok {
		// The status port is authoritative; the console copy covers a
		// guest whose port setup failed.
		code, ok = parseExit(console.Bytes())
	}
	if !ok {
		if ctx.Err() != nil {
			return res, fmt.Errorf("vm: %w after %s; console tail:\n%s", ctx.Err(), res.Total.Round(time.Millisecond), console.Bytes())
		}
		return res, fmt.Errorf("vm: guest reported no exit status (qemu: %v: %s); console tail:\n%s",
			waitErr, bytes.TrimSpace(qemuErr.Bytes()), console.Bytes())
	}
	res.ExitCode = code
	if err := errors.Join(copyErr...); err != nil {
		return res, fmt.Errorf("vm: copying guest output: %w", err)
	}
	return res, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.buf)
}
