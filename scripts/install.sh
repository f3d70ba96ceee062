#!/usr/bin/env bash
# Installs what pykata needs on Debian 12 (run as root), installs pykata itself, and builds
# the guest image (cached: a no-op when nothing changed). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu-system-arm/-misc/-ppc: tests/e2e/test_other_arch.py boots pykata's aarch64, s390x and
# ppc64le argv under TCG (it skips without them). nftables: CRI port-forward's redirect in the
# pod's network namespace. containernetworking-plugins: the CRI end-to-end tests' pod network.
# e2fsprogs: mkfs.ext4 writes the DAX guest image. prometheus: tests/e2e/test_monitor.py
# scrapes `pykata monitor` with it.
APT_PACKAGES=(qemu-system-x86 qemu-system-common busybox-static crun runc zstd protobuf-compiler
              iproute2 util-linux containerd qemu-system-arm qemu-system-misc qemu-system-ppc
              nftables containernetworking-plugins e2fsprogs prometheus)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
pykata image build
