package vm

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeKernel writes a minimal kernel cache layout and returns its root.
func fakeKernel(t *testing.T, version, modulesDep, builtin string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, version)
	mods := filepath.Join(dir, "lib", "modules", version)
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		filepath.Join(root, "current"):         version + "\n",
		filepath.Join(dir, "vmlinuz"):          "not a kernel",
		filepath.Join(mods, "modules.dep"):     modulesDep,
		filepath.Join(mods, "modules.builtin"): builtin,
	}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// An excerpt of Debian 6.1's modules.dep.
const testModulesDep = `kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/9p/9pnet.ko:
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
`

func TestFindKernel(t *testing.T) {
	root := fakeKernel(t, "6.1.0-9-amd64", testModulesDep, "")
	for _, dir := range []string{root, filepath.Join(root, "6.1.0-9-amd64")} {
		k, err := FindKernel(dir)
		if err != nil {
			t.Fatalf("FindKernel(%s): %v", dir, err)
		}
		if k.Version != "6.1.0-9-amd64" || k.Dir != filepath.Join(root, "6.1.0-9-amd64") {
			t.Errorf("FindKernel(%s) = %+v", dir, k)
		}
		// vmlinux is absent, so the compressed image is booted.
		if k.Image() != k.Vmlinuz() {
			t.Errorf("Image() = %s, want %s", k.Image(), k.Vmlinuz())
		}
	}
	if _, err := FindKernel(t.TempDir()); err == nil || !strings.Contains(err.Error(), "ensure-deps.sh") {
		t.Errorf("FindKernel(empty dir) error = %v, want a hint to run ensure-deps.sh", err)
	}
}

func TestHasPVHNote(t *testing.T) {
	// Not an ELF file, and an ELF file without the note.
	for _, p := range []string{"kernel_test.go", os.Args[0]} {
		if hasPVHNote(p) {
			t.Errorf("hasPVHNote(%s) = true", p)
		}
	}
	// Debian's kernel, if ensure-deps.sh has cached it.
	k, err := FindKernel("")
	if err != nil {
		t.Skipf("no cached kernel: %v", err)
	}
	vmlinux := filepath.Join(k.Dir, "vmlinux")
	if _, err := os.Stat(vmlinux); err != nil {
		t.Skipf("no vmlinux: %v", err)
	}
	if !hasPVHNote(vmlinux) || k.Image() != vmlinux {
		t.Errorf("%s: no PVH note found; Image() = %s", vmlinux, k.Image())
	}
}

func TestModuleLoadOrder(t *testing.T) {
	idx := loadTestIndex(t)
	got, err := idx.loadOrder([]string{"virtio_pci", "9pnet_virtio", "9p", "crc32c_intel"})
	if err != nil {
		t.Fatal(err)
	}
	// Every module appears once, after all of its dependencies.
	pos := map[string]int{}
	for i, p := range got {
		name := moduleName(p)
		if _, dup := pos[name]; dup {
			t.Fatalf("%s loaded twice: %v", name, got)
		}
		pos[name] = i
	}
	for name := range pos {
		for _, d := range idx.deps[name] {
			if pos[d] > pos[name] {
				t.Errorf("%s loaded before its dependency %s: %v", name, d, got)
			}
		}
	}
	want := []string{"virtio_pci", "virtio", "virtio_ring", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "9pnet", "9pnet_virtio", "netfs", "fscache", "9p"}
	for _, w := range want {
		if _, ok := pos[w]; !ok {
			t.Errorf("load order %v lacks %s", got, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("load order %v, want the %d modules %v (built-ins need no file)", got, len(want), want)
	}

	if _, err := idx.loadOrder([]string{"no_such_module"}); err == nil {
		t.Error("loadOrder of an unknown module succeeded")
	}
}

func TestModuleExists(t *testing.T) {
	idx := loadTestIndex(t)
	for name, want := range map[string]bool{
		"9p": true, "virtio_rng": true, "virtio-rng": true, "crc32c_intel": true, "ip_vs_twos": false,
	} {
		if got := idx.exists(name); got != want {
			t.Errorf("exists(%s) = %v, want %v", name, got, want)
		}
	}
}

func loadTestIndex(t *testing.T) *moduleIndex {
	t.Helper()
	root := fakeKernel(t, "v", testModulesDep, "kernel/arch/x86/crypto/crc32c-intel.ko\n")
	idx, err := loadModuleIndex(filepath.Join(root, "v", "lib", "modules", "v"))
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func TestDefaultModulesOrder(t *testing.T) {
	// libcrc32c needs a crc32c provider already loaded; see DefaultModules.
	m := DefaultModules()
	if slices.Index(m, "crc32c_generic") > slices.Index(m, "libcrc32c") || slices.Index(m, "libcrc32c") > slices.Index(m, "ip_vs") {
		t.Errorf("DefaultModules() = %v: want crc32c_generic, libcrc32c, ip_vs in that order", m)
	}
}
