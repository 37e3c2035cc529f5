package vm

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func testConfig() guestConfig {
	return guestConfig{
		KernelVersion: "6.1.0-9-amd64",
		ModulesDir:    "/repo/.cache/kernel/6.1.0-9-amd64/lib/modules/6.1.0-9-amd64",
		LibDir:        "/usr/lib",
		Insmod:        []string{"kernel/drivers/virtio/virtio.ko", "kernel/fs/9p/9p.ko"},
		Modules:       []string{"crc32c_generic", "ip_vs"},
		Missing:       []string{"ip_vs_twos"},
		Busybox:       "/usr/bin/busybox",
		OutDir:        "/work/out dir",
		Dir:           "/work/it's here",
		Env:           []string{"PATH=/usr/bin:/bin", "X=a b"},
		Command:       []string{"sh", "-c", `echo "$X" 'quoted'; exit 3`},
	}
}

func TestShellQuote(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	args := []string{"", "plain", "it's", `"double"`, "$HOME `id` \\ \n ;|&", "'"}
	out, err := exec.Command(sh, "-c", "printf '%s\\0' "+shellQuoteAll(args)).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if !slices.Equal(got, args) {
		t.Errorf("round trip through sh = %q, want %q", got, args)
	}
}

// checkSyntax parses script with the given shell without running it.
func checkSyntax(t *testing.T, script string, shell ...string) {
	t.Helper()
	path, err := exec.LookPath(shell[0])
	if err != nil {
		t.Skipf("no %s", shell[0])
	}
	cmd := exec.Command(path, append(shell[1:], "-n")...)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%v -n: %v\n%s\nscript:\n%s", shell, err, out, script)
	}
}

func TestStage1(t *testing.T) {
	c := testConfig()
	s := stage1(c)
	// Stage 1 runs under the initramfs's busybox.
	checkSyntax(t, s, "busybox", "sh")
	for _, want := range []string{
		"insmod /modules/virtio.ko",
		"mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /lower",
		"ln -s /lower'" + c.ModulesDir + "' /lib/modules/'6.1.0-9-amd64'",
		"ln -sfn '" + c.ModulesDir + "' /host'/usr/lib'/modules/'6.1.0-9-amd64'",
		"modprobe -a 'crc32c_generic' 'ip_vs'",
		"modprobe softdog soft_noboot=1",
		"skipped: ip_vs_twos",
		"vmout /host/out && mount --bind /host/out /host'/work/out dir'",
		"exec switch_root /host /bin/sh /run/vmrun/stage2.sh",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("stage 1 lacks %q:\n%s", want, s)
		}
	}
	// Dependencies first: insmod lines keep Insmod's order.
	if strings.Index(s, "virtio.ko") > strings.Index(s, "9p.ko") {
		t.Errorf("stage 1 reorders modules:\n%s", s)
	}

	c.OutDir, c.Missing, c.Modules = "", nil, nil
	s = stage1(c)
	checkSyntax(t, s, "busybox", "sh")
	for _, unwanted := range []string{"vmout", "skipped", "modprobe -a"} {
		if strings.Contains(s, unwanted) {
			t.Errorf("stage 1 without out dir, missing or extra modules has %q:\n%s", unwanted, s)
		}
	}
}

func TestStage2(t *testing.T) {
	s := stage2(testConfig())
	// Stage 2 runs under the host's /bin/sh.
	checkSyntax(t, s, "sh")
	for _, want := range []string{
		`(cd '/work/it'\''s here' || exit 125; exec /usr/bin/env -i 'PATH=/usr/bin:/bin' 'X=a b' 'sh' '-c' 'echo "$X" '\''quoted'\''; exit 3')`,
		`echo @@VMRUN-START@@ >"$st"`,
		`echo "@@VMRUN-EXIT $code@@" >"$st"`,
		"'/usr/bin/busybox' poweroff -f",
		"$(port vmrun.stdout)",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("stage 2 lacks %q:\n%s", want, s)
		}
	}
}

func TestParseExit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code int
		ok   bool
	}{
		{"", 0, false},
		{"@@VMRUN-START@@\n@@VMRUN-EXIT 0@@\n", 0, true},
		{"@@VMRUN-EXIT 137@@", 137, true},
		// Kernel messages around and before the marker.
		{"[    8.1] reboot: Power down\r\nfoo@@VMRUN-EXIT 3@@\r\n[    8.8] reboot: Power down\r\n", 3, true},
		// The last marker wins; a cut-off one is skipped.
		{"@@VMRUN-EXIT 1@@\n@@VMRUN-EXIT 2@@\n@@VMRUN-EXIT 4", 2, true},
		{"@@VMRUN-EXIT x@@", 0, false},
		{"@@VMRUN-EXIT @@", 0, false},
		{"@@VMRUN-EXIT -1@@", 0, false},
		{"@@VMRUN-EXIT 99999999999999999999@@", 0, false},
	} {
		code, ok := parseExit([]byte(tc.in))
		if code != tc.code || ok != tc.ok {
			t.Errorf("parseExit(%q) = %d, %v; want %d, %v", tc.in, code, ok, tc.code, tc.ok)
		}
	}
}
