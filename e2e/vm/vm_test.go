package vm

import (
	"slices"
	"strings"
	"testing"
)

// argAfter returns the values that follow each occurrence of flag in args.
func argAfter(args []string, flag string) []string {
	var vals []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			vals = append(vals, args[i+1])
		}
	}
	return vals
}

func TestQEMUArgs(t *testing.T) {
	k := Kernel{Dir: "/cache/v", Version: "v"}
	args := qemuArgs(k, "/tmp/initrd", Options{})
	for flag, want := range map[string]string{
		"-accel": "tcg", "-cpu": "max", "-m": "2048", "-smp": "2",
		"-kernel": "/cache/v/vmlinuz", "-initrd": "/tmp/initrd", "-serial": "stdio",
	} {
		if got := argAfter(args, flag); !slices.Equal(got, []string{want}) {
			t.Errorf("%s = %v, want %s", flag, got, want)
		}
	}
	if !slices.Contains(args, "-no-reboot") {
		t.Error("missing -no-reboot: a guest panic would reboot forever")
	}
	if got := argAfter(args, "-virtfs"); !slices.Equal(got, []string{"local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"}) {
		t.Errorf("-virtfs = %v", got)
	}
	if cmdline := argAfter(args, "-append")[0]; !strings.Contains(cmdline, "panic=-1") || !strings.Contains(cmdline, "console=ttyS0") {
		t.Errorf("-append %q lacks panic=-1 or console=ttyS0", cmdline)
	}
	// Port i is fed to the host through fd 3+i.
	chardevs := argAfter(args, "-chardev")
	devices := strings.Join(argAfter(args, "-device"), " ")
	for i, name := range ports() {
		if !strings.Contains(chardevs[i], "path=/dev/fd/"+string(rune('3'+i))) {
			t.Errorf("chardev %d = %s", i, chardevs[i])
		}
		if !strings.Contains(devices, "name="+name) {
			t.Errorf("no virtserialport named %s in %s", name, devices)
		}
	}

	args = qemuArgs(k, "/tmp/initrd", Options{KVM: true, Memory: 512, CPUs: 1, OutDir: "/a,b", KernelArgs: []string{"loglevel=7"}})
	for flag, want := range map[string]string{"-accel": "kvm", "-cpu": "host", "-m": "512", "-smp": "1"} {
		if got := argAfter(args, flag); !slices.Equal(got, []string{want}) {
			t.Errorf("%s = %v, want %s", flag, got, want)
		}
	}
	if got := argAfter(args, "-virtfs"); len(got) != 2 || !strings.HasPrefix(got[1], "local,path=/a,,b,mount_tag=vmout,") {
		t.Errorf("-virtfs = %v, want a second, rw share with the comma escaped", got)
	}
	if cmdline := argAfter(args, "-append")[0]; !strings.HasSuffix(cmdline, " loglevel=7") {
		t.Errorf("-append %q lacks the extra kernel args", cmdline)
	}
}

func TestGuestEnv(t *testing.T) {
	env := guestEnv(Options{Env: []string{"PATH=/x", "A=b"}, OutDir: "/o"})
	// User entries come last so that env(1) lets them override defaults.
	if !slices.Equal(env[len(env)-2:], []string{"PATH=/x", "A=b"}) {
		t.Errorf("guestEnv = %v", env)
	}
	for _, want := range []string{"DIRECTORATE_IN_VM=1", "DIRECTORATE_VM_OUT=" + OutMount, "HOME=/root"} {
		if !slices.Contains(env, want) {
			t.Errorf("guestEnv = %v lacks %s", env, want)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 5}
	for _, s := range []string{"ab", "cdef", "g"} {
		if n, err := tb.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if got := string(tb.Bytes()); got != "cdefg" {
		t.Errorf("tail = %q, want %q", got, "cdefg")
	}
}
