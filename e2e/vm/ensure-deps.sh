#!/usr/bin/env bash
# ensure-deps.sh installs what the e2e VM harness needs on the host and caches
# Debian's stock kernel (which, unlike the host kernel, has IPVS and loadable
# modules). The guest's root file system is the host's, shared over 9p, so
# every tool the tests run inside the VM is installed here, on the host.
# The kernel is fetched once; delete the cache directory to pick up a newer one.
#
# Idempotent and non-interactive: safe to run from CI (CI=true) as root on a
# fresh Debian machine. Once the kernel is cached, no network is needed.
#
# Environment:
#   DIRECTORATE_KERNEL_CACHE  cache directory (default: $REPO/.cache/kernel)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${DIRECTORATE_KERNEL_CACHE:-$repo/.cache/kernel}
export DEBIAN_FRONTEND=noninteractive

log() { echo "ensure-deps: $*" >&2; }

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
	sudo_cmd=(sudo -n)
fi

apt_updated=0
apt_update() {
	[ "$apt_updated" = 1 ] && return 0
	log "apt-get update"
	"${sudo_cmd[@]}" apt-get update -qq
	apt_updated=1
}

# Package lists are absent on fresh images; apt-get install and apt-cache
# would then find nothing, so update first in that case only.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
	apt_update
fi

apt_install() {
	local args=(install -y -qq --no-install-recommends "$@")
	if ! "${sudo_cmd[@]}" apt-get "${args[@]}" >/dev/null; then
		# Stale lists give 404s or unknown packages: refresh once and retry.
		apt_update
		"${sudo_cmd[@]}" apt-get "${args[@]}" >/dev/null
	fi
}

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# qemu-system-x86: the VM. busybox-static: the initramfs userland (and
# poweroff in the guest). kmod: depmod here, modprobe in the guest. xz-utils:
# unpacking the kernel image.
# ipvsadm, iproute2, iputils-arping, curl: tools the tests run in the guest.
pkgs=(qemu-system-x86 busybox-static kmod xz-utils ipvsadm iproute2 iputils-arping curl)
missing=()
for p in "${pkgs[@]}"; do
	installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	log "installing ${missing[*]}"
	apt_install "${missing[@]}"
fi

# The cache holds one directory per kernel version and a "current" file naming
# the one to boot. A version directory is complete once it is renamed into
# place, so an interrupted run leaves only a temporary directory behind.
mkdir -p "$cache"
rm -rf "$cache"/.fetch.* # left by an interrupted run
version=""
if [ -f "$cache/current" ]; then
	version=$(cat "$cache/current")
	if [ ! -f "$cache/$version/vmlinuz" ] || [ ! -f "$cache/$version/lib/modules/$version/modules.dep" ]; then
		log "cached kernel $version is incomplete; fetching again"
		version=""
	fi
fi

if [ -z "$version" ]; then
	pkg_of_meta() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
	pkg=$(pkg_of_meta)
	if [ -z "$pkg" ]; then
		apt_update
		pkg=$(pkg_of_meta)
	fi
	[ -n "$pkg" ] || { log "cannot resolve linux-image-amd64"; exit 1; }
	version=${pkg#linux-image-}
	version=${version%-unsigned}

	tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
	# apt-get download drops privileges to _apt and warns if it cannot write.
	chmod 0755 "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	log "downloading $pkg"
	if ! (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg"); then
		apt_update
		(cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg")
	fi
	dpkg -x "$tmp"/*.deb "$tmp/root"

	out="$tmp/$version"
	mkdir -p "$out/lib/modules"
	cp "$tmp/root/boot/vmlinuz-$version" "$out/vmlinuz"
	if [ -f "$tmp/root/boot/config-$version" ]; then
		cp "$tmp/root/boot/config-$version" "$out/config"
	fi
	# Newer Debian ships modules under /usr/lib/modules; normalise so depmod -b
	# and the guest find them in one place.
	for d in "$tmp/root/lib/modules/$version" "$tmp/root/usr/lib/modules/$version"; do
		if [ -d "$d" ] && [ ! -L "$d" ]; then
			mv "$d" "$out/lib/modules/$version"
			break
		fi
	done
	[ -d "$out/lib/modules/$version" ] || { log "no modules in $pkg"; exit 1; }

	# busybox insmod in the initramfs cannot read compressed modules (newer
	# kernels ship .ko.xz or .ko.zst), so store them uncompressed.
	if find "$out/lib/modules/$version" -name '*.ko.xz' -print -quit | grep -q .; then
		command -v xz >/dev/null || apt_install xz-utils
		find "$out/lib/modules/$version" -name '*.ko.xz' -exec xz -d {} +
	fi
	if find "$out/lib/modules/$version" -name '*.ko.zst' -print -quit | grep -q .; then
		command -v zstd >/dev/null || apt_install zstd
		find "$out/lib/modules/$version" -name '*.ko.zst' -exec zstd -q -d --rm {} +
	fi
	depmod -b "$out" "$version"
	[ -f "$out/lib/modules/$version/modules.dep" ] || { log "depmod wrote no modules.dep"; exit 1; }

	rm -rf "${cache:?}/$version"
	mv "$out" "$cache/$version"
	echo "$version" >"$cache/current.tmp"
	mv "$cache/current.tmp" "$cache/current"
	rm -rf "$tmp"
	trap - EXIT
fi

kdir="$cache/$version"

# The compressed bzImage spends about 4 s decompressing itself under TCG.
# Debian's kernel has a PVH entry point, and qemu boots an uncompressed ELF
# vmlinux through it directly, so keep one beside vmlinuz (the harness falls
# back to vmlinuz if this is missing). Done separately from the fetch so
# older caches gain it too.
extract_vmlinux() { # like the kernel's scripts/extract-vmlinux
	local img=$1 out=$2 magic cmd pos
	for pair in '\xFD7zXZ\x00|xz -dcq --single-stream' '\x28\xB5\x2F\xFD|zstd -dcq' '\x1F\x8B\x08|gzip -dcq'; do
		magic=${pair%%|*} cmd=${pair#*|}
		# shellcheck disable=SC2013 # offsets are single words
		for pos in $(LC_ALL=C grep -obUaP "$magic" "$img" | cut -d: -f1); do
			tail -c +$((pos + 1)) "$img" | $cmd >"$out.tmp" 2>/dev/null || true
			if [ "$(head -c 4 "$out.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
				mv "$out.tmp" "$out"
				return 0
			fi
		done
	done
	rm -f "$out.tmp"
	return 1
}
if [ ! -f "$kdir/vmlinux" ]; then
	command -v xz >/dev/null || apt_install xz-utils
	extract_vmlinux "$kdir/vmlinuz" "$kdir/vmlinux" || log "could not extract vmlinux; booting the slower bzImage"
fi
echo "KERNEL_VERSION=$version"
echo "KERNEL_DIR=$kdir"
echo "VMLINUZ=$kdir/vmlinuz"
if [ -f "$kdir/vmlinux" ]; then echo "VMLINUX=$kdir/vmlinux"; fi
echo "MODULES=$kdir/lib/modules/$version"
if [ -f "$kdir/config" ]; then echo "CONFIG=$kdir/config"; fi
echo "QEMU=$(command -v qemu-system-x86_64)"
echo "BUSYBOX=$(command -v busybox)"
