package vm

import (
	"debug/elf"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"

	"github.com/u-root/u-root/pkg/cpio"
)

// initramfs is the content of the guest's initramfs. It is small (busybox
// and a few modules, about 3 MB) and written per run: hashing it to cache it
// would cost as much as writing it.
type initramfs struct {
	Busybox []byte            // a static busybox binary
	Init    string            // stage 1 script
	Stage2  string            // stage 2 script, copied into the guest root
	Modules map[string][]byte // file name -> contents, under /modules
}

// readBusybox reads the host's busybox and checks that it is static: the
// initramfs has no libc.
func readBusybox(p string) ([]byte, error) {
	f, err := elf.Open(p)
	if err != nil {
		return nil, fmt.Errorf("busybox %s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("busybox %s is dynamically linked; install busybox-static", p)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("reading busybox: %w", err)
	}
	return b, nil
}

// readModules reads the given module files (relative to modDir), keyed by
// base name as stage 1 expects them.
func readModules(modDir string, files []string) (map[string][]byte, error) {
	mods := make(map[string][]byte, len(files))
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(modDir, f))
		if err != nil {
			return nil, fmt.Errorf("reading module: %w", err)
		}
		mods[path.Base(f)] = b
	}
	return mods, nil
}

// writeTo writes the initramfs as a newc cpio archive, the format the
// kernel unpacks.
func (ir initramfs) writeTo(w io.Writer) error {
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.Directory("dev", 0o755),
		// The kernel opens /dev/console for init's stdio before init can
		// mount devtmpfs, so the node must be in the archive.
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.Directory("proc", 0o755),
		cpio.Directory("sys", 0o755),
		cpio.Directory("modules", 0o755),
		cpio.StaticRecord(ir.Busybox, cpio.Info{Name: "bin/busybox", Mode: cpio.S_IFREG | 0o755}),
		cpio.StaticFile("init", ir.Init, 0o755),
		cpio.StaticFile("stage2.sh", ir.Stage2, 0o755),
	}
	for _, a := range stage1Applets() {
		recs = append(recs, cpio.Symlink("bin/"+a, "busybox"))
	}
	for _, name := range slices.Sorted(maps.Keys(ir.Modules)) {
		recs = append(recs, cpio.StaticRecord(ir.Modules[name], cpio.Info{Name: "modules/" + name, Mode: cpio.S_IFREG | 0o644}))
	}
	rw := cpio.Newc.Writer(w)
	for _, r := range recs {
		if err := rw.WriteRecord(cpio.MakeReproducible(r)); err != nil {
			return fmt.Errorf("writing initramfs record %s: %w", r.Name, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("writing initramfs trailer: %w", err)
	}
	return nil
}
