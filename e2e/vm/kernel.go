package vm

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// KernelCacheEnv names the environment variable that overrides the kernel
// cache directory; ensure-deps.sh honours the same variable.
const KernelCacheEnv = "DIRECTORATE_KERNEL_CACHE"

// Kernel is a Debian kernel package unpacked by ensure-deps.sh: Dir holds
// vmlinuz and lib/modules/<Version> with a depmod-generated modules.dep.
type Kernel struct {
	Dir     string
	Version string
}

// Vmlinuz returns the path of the compressed kernel image.
func (k Kernel) Vmlinuz() string { return filepath.Join(k.Dir, "vmlinuz") }

// Image returns the kernel image to boot: the uncompressed vmlinux that
// ensure-deps.sh extracts, if it has a PVH entry point, else vmlinuz. Under
// TCG the bzImage spends about 4 s decompressing itself; qemu loads a PVH
// ELF directly.
func (k Kernel) Image() string {
	vmlinux := filepath.Join(k.Dir, "vmlinux")
	if hasPVHNote(vmlinux) {
		return vmlinux
	}
	return k.Vmlinuz()
}

// hasPVHNote reports whether the ELF file at path carries the Xen
// PHYS32_ENTRY note that qemu needs to boot it as a PVH kernel.
func hasPVHNote(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	const xenElfnotePhys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data, err := io.ReadAll(p.Open())
		if err != nil {
			return false
		}
		// Each note: namesz, descsz, type (4 bytes each), then name and
		// desc, each padded to 4 bytes.
		for len(data) >= 12 {
			namesz := int(binary.LittleEndian.Uint32(data[0:]))
			descsz := int(binary.LittleEndian.Uint32(data[4:]))
			typ := binary.LittleEndian.Uint32(data[8:])
			nameEnd := 12 + (namesz+3)&^3
			end := nameEnd + (descsz+3)&^3
			if end > len(data) || namesz == 0 {
				break
			}
			if typ == xenElfnotePhys32Entry && string(data[12:12+namesz-1]) == "Xen" {
				return true
			}
			data = data[end:]
		}
	}
	return false
}

// ModulesDir returns the kernel's module directory, the guest's
// /lib/modules/<Version>.
func (k Kernel) ModulesDir() string { return filepath.Join(k.Dir, "lib", "modules", k.Version) }

// FindKernel locates the cached kernel. dir may be a version directory, a
// cache directory containing a "current" file, or empty: then
// $DIRECTORATE_KERNEL_CACHE or <repo>/.cache/kernel is used, where <repo> is
// the nearest ancestor of the working directory that has a go.mod.
func FindKernel(dir string) (Kernel, error) {
	if dir == "" {
		dir = os.Getenv(KernelCacheEnv)
	}
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return Kernel{}, err
		}
		dir = filepath.Join(root, ".cache", "kernel")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel dir: %w", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "current")); err == nil {
		dir = filepath.Join(dir, strings.TrimSpace(string(b)))
	}
	ents, err := os.ReadDir(filepath.Join(dir, "lib", "modules"))
	if err != nil || len(ents) != 1 {
		return Kernel{}, fmt.Errorf("no cached kernel in %s (run e2e/vm/ensure-deps.sh): want exactly one lib/modules/<version>", dir)
	}
	k := Kernel{Dir: dir, Version: ents[0].Name()}
	for _, p := range []string{k.Vmlinuz(), filepath.Join(k.ModulesDir(), "modules.dep")} {
		if _, err := os.Stat(p); err != nil {
			return Kernel{}, fmt.Errorf("incomplete kernel cache (run e2e/vm/ensure-deps.sh): %w", err)
		}
	}
	return k, nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("locating repository: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("locating repository: no go.mod above the working directory; set " + KernelCacheEnv)
		}
		dir = parent
	}
}

// moduleIndex is what the harness needs from modules.dep and modules.builtin.
type moduleIndex struct {
	path    map[string]string   // module name -> path relative to the modules dir
	deps    map[string][]string // module name -> names of all its dependencies
	builtin map[string]bool
}

// moduleName turns "kernel/drivers/char/hw_random/virtio-rng.ko" into
// "virtio_rng", the name modprobe and lsmod use.
func moduleName(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

func loadModuleIndex(modDir string) (*moduleIndex, error) {
	idx := &moduleIndex{path: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}}
	err := eachLine(filepath.Join(modDir, "modules.dep"), func(line string) error {
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("malformed line %q", line)
		}
		name := moduleName(mod)
		idx.path[name] = mod
		for _, d := range strings.Fields(deps) {
			idx.deps[name] = append(idx.deps[name], moduleName(d))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// modules.builtin is optional: without it, builtins just look missing.
	err = eachLine(filepath.Join(modDir, "modules.builtin"), func(line string) error {
		idx.builtin[moduleName(line)] = true
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return idx, nil
}

func eachLine(path string, fn func(string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			if err := fn(line); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}

// exists reports whether modprobe can satisfy name, as a module or built in.
func (idx *moduleIndex) exists(name string) bool {
	name = moduleName(name)
	_, ok := idx.path[name]
	return ok || idx.builtin[name]
}

// loadOrder returns the module files (relative paths) needed to load names
// with a plain insmod, dependencies first and each once. Built-in modules
// need no file and are skipped; unknown ones are an error because the
// initramfs cannot work without them.
func (idx *moduleIndex) loadOrder(names []string) ([]string, error) {
	var order []string
	seen := map[string]bool{}
	var visit func(string) error
	visit = func(name string) error {
		if seen[name] {
			return nil
		}
		seen[name] = true
		path, ok := idx.path[name]
		if !ok {
			if idx.builtin[name] {
				return nil
			}
			return fmt.Errorf("module %s is neither in modules.dep nor built in", name)
		}
		for _, d := range idx.deps[name] {
			if err := visit(d); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		order = append(order, path)
		return nil
	}
	for _, n := range names {
		if err := visit(moduleName(n)); err != nil {
			return nil, err
		}
	}
	return order, nil
}
