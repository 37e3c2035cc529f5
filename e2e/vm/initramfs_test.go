package vm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

func TestInitramfsContents(t *testing.T) {
	ir := initramfs{
		Busybox: []byte("\x7fELF busybox"),
		Init:    "#!/bin/sh\necho init\n",
		Stage2:  "#!/bin/sh\necho stage2\n",
		Modules: map[string][]byte{"9p.ko": []byte("9p"), "virtio.ko": []byte("virtio")},
	}
	var buf bytes.Buffer
	if err := ir.writeTo(&buf); err != nil {
		t.Fatal(err)
	}

	recs := map[string]cpio.Record{}
	rr := cpio.EOFReader{RecordReader: cpio.Newc.Reader(bytes.NewReader(buf.Bytes()))}
	for {
		r, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		recs[r.Name] = r
	}

	content := func(name string) string {
		r, ok := recs[name]
		if !ok {
			t.Fatalf("initramfs lacks %s; has %v", name, recs)
		}
		b, err := io.ReadAll(io.NewSectionReader(r, 0, int64(r.FileSize)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for name, want := range map[string]string{
		"init":            ir.Init,
		"stage2.sh":       ir.Stage2,
		"bin/busybox":     string(ir.Busybox),
		"modules/9p.ko":   "9p",
		"bin/sh":          "busybox", // symlink target
		"bin/insmod":      "busybox",
		"bin/switch_root": "busybox",
	} {
		if got := content(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	for name, mode := range map[string]uint64{
		"init":        cpio.S_IFREG | 0o755,
		"bin/busybox": cpio.S_IFREG | 0o755,
		"bin/sh":      cpio.S_IFLNK | 0o777,
		"dev":         cpio.S_IFDIR | 0o755,
		"dev/console": cpio.S_IFCHR | 0o600,
	} {
		if got := recs[name].Mode; got != mode {
			t.Errorf("%s mode = %o, want %o", name, got, mode)
		}
	}
	if c := recs["dev/console"]; c.Rmajor != 5 || c.Rminor != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", c.Rmajor, c.Rminor)
	}
	for _, a := range stage1Applets() {
		if _, ok := recs["bin/"+a]; !ok {
			t.Errorf("initramfs lacks applet link bin/%s", a)
		}
	}
}

func TestReadBusyboxRejectsDynamic(t *testing.T) {
	ls, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("no ls")
	}
	if _, err := readBusybox(ls); err == nil {
		t.Errorf("readBusybox(%s) accepted a dynamically linked binary", ls)
	}
	if _, err := readBusybox("initramfs_test.go"); err == nil {
		t.Error("readBusybox accepted a non-ELF file")
	}
}

func TestReadModules(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(dir+"/kernel/fs", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/kernel/fs/9p.ko", []byte("ko"), 0o644); err != nil {
		t.Fatal(err)
	}
	mods, err := readModules(dir, []string{"kernel/fs/9p.ko"})
	if err != nil || string(mods["9p.ko"]) != "ko" {
		t.Errorf("readModules = %v, %v", mods, err)
	}
	if _, err := readModules(dir, []string{"kernel/missing.ko"}); err == nil {
		t.Error("readModules of a missing file succeeded")
	}
}
