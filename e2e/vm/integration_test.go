package vm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runVM boots a VM for one command; it needs the cache and tools that
// ensure-deps.sh installs, so it runs only with DIRECTORATE_VM_TEST=1.
func runVM(t *testing.T, opts Options) (Result, string, string) {
	t.Helper()
	if os.Getenv("DIRECTORATE_VM_TEST") != "1" {
		t.Skip("boots a VM; set DIRECTORATE_VM_TEST=1 (after e2e/vm/ensure-deps.sh)")
	}
	var stdout, stderr, console bytes.Buffer
	opts.Stdout, opts.Stderr, opts.Console = &stdout, &stderr, &console
	opts.KVM = os.Getenv("DIRECTORATE_VM_KVM") == "1"
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	res, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("Run: %v\nconsole:\n%s", err, console.String())
	}
	t.Logf("boot %s, total %s, exit %d", res.Boot.Round(time.Millisecond), res.Total.Round(time.Millisecond), res.ExitCode)
	return res, stdout.String(), stderr.String()
}

func TestBootAndIPVS(t *testing.T) {
	res, out, errOut := runVM(t, Options{Command: []string{"sh", "-c",
		"ipvsadm -A -t 10.0.0.1:80 -s rr && ipvsadm -Ln && cat /proc/net/ip_vs"}})
	if res.ExitCode != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", res.ExitCode, out, errOut)
	}
	for _, want := range []string{
		"TCP  10.0.0.1:80 rr",   // ipvsadm -Ln
		"TCP  0A000001:0050 rr", // /proc/net/ip_vs
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if res.Boot <= 0 || res.Boot > res.Total {
		t.Errorf("implausible timings: %+v", res)
	}
}

func TestExitStatusAndStreams(t *testing.T) {
	res, out, errOut := runVM(t, Options{
		Command: []string{"sh", "-c", `echo "out $X $(pwd)"; echo err >&2; exit 7`},
		Env:     []string{"X=it's"},
		Dir:     "/usr",
	})
	if res.ExitCode != 7 {
		t.Errorf("exit %d, want 7", res.ExitCode)
	}
	if out != "out it's /usr\n" || errOut != "err\n" {
		t.Errorf("stdout %q, stderr %q", out, errOut)
	}
}

// TestGuestEnvironment checks what the project's tests rely on: network
// namespaces, the softdog watchdog, module auto-loading through the host's
// modprobe, a writable root, and the read-write out share.
func TestGuestEnvironment(t *testing.T) {
	outDir := t.TempDir()
	res, out, errOut := runVM(t, Options{
		OutDir: outDir,
		Command: []string{"sh", "-ec", `
ip netns add x
ip -n x link show lo
ls /dev/watchdog
ip link add vx0 type vxlan id 1 dstport 4789 dev lo
grep -q '^vxlan ' /proc/modules
mkdir -p /var/lib/directorate
echo hello >"$DIRECTORATE_VM_OUT/from-guest"
echo done
`},
	})
	if res.ExitCode != 0 || !strings.HasSuffix(out, "done\n") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", res.ExitCode, out, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(outDir, "from-guest")); err != nil || string(b) != "hello\n" {
		t.Errorf("out share: %q, %v", b, err)
	}
}
