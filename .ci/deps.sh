#!/usr/bin/env bash
# Installs what the build and tests need on a fresh Debian machine, and
# nothing when it is already there. Safe to run repeatedly.
set -euo pipefail
need=()
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || { echo "deps: Go is required (https://go.dev/dl); this script does not install toolchains" >&2; exit 1; }
command -v gcc >/dev/null || need+=(gcc)   # the race detector needs cgo
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "deps: please install: ${need[*]} (or run as root)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
