// Command vmrun runs a command inside a VM that boots Debian's stock kernel
// (see package e2e/vm) and exits with the command's exit status.
//
//	go run ./e2e/cmd/vmrun [-timeout 10m] [-mem 2048] [-cpus 2] [-e K=V]... [-out DIR] [-v] -- CMD ARGS...
//
// The host's root file system is the guest's, so host paths and binaries work
// unchanged; the working directory defaults to the current one.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/directorate/directorate/e2e/vm"
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	os.Exit(run())
}

func run() int {
	var env, mods, kargs stringList
	wd, _ := os.Getwd()
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on the whole run, boot included")
	mem := flag.Int("mem", 2048, "guest memory in MiB")
	cpus := flag.Int("cpus", 2, "guest vCPUs")
	dir := flag.String("dir", wd, "working directory in the guest")
	out := flag.String("out", "", "host directory shared read-write (at "+vm.OutMount+" and its own path in the guest)")
	kernel := flag.String("kernel", "", "kernel cache or version directory (default $"+vm.KernelCacheEnv+" or <repo>/.cache/kernel)")
	kvm := flag.Bool("kvm", os.Getenv("DIRECTORATE_VM_KVM") == "1", "use KVM instead of TCG (default from DIRECTORATE_VM_KVM=1)")
	verbose := flag.Bool("v", false, "copy the serial console (kernel and setup log) to stderr, and print timings")
	flag.Var(&env, "e", "`K=V` added to the command's environment (repeatable)")
	flag.Var(&mods, "modprobe", "extra `module` to load (repeatable)")
	flag.Var(&kargs, "kernel-arg", "`arg` appended to the kernel command line, e.g. loglevel=7 (repeatable)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: vmrun [flags] -- CMD ARGS...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := vm.Options{
		Command:    flag.Args(),
		Env:        env,
		Dir:        *dir,
		Memory:     *mem,
		CPUs:       *cpus,
		Timeout:    *timeout,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		KernelDir:  *kernel,
		KVM:        *kvm,
		Modules:    mods,
		OutDir:     *out,
		KernelArgs: kargs,
	}
	if *verbose {
		opts.Console = os.Stderr
	}
	res, err := vm.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		return 125
	}
	if *verbose {
		fmt.Fprintf(os.Stderr, "vmrun: boot %s, total %s, exit %d\n",
			res.Boot.Round(time.Millisecond), res.Total.Round(time.Millisecond), res.ExitCode)
	}
	return res.ExitCode
}
