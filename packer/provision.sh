#!/usr/bin/env bash
# Bakes a node image: run as root on the build instance (Packer) or inside the test
# harness's Debian root filesystem. Same script, same result.
#
#   provision.sh [STAGE...]      stages: os agent seal (default: all three, in order)
#
#   os     the OS packages every node needs (packages.txt, plus NODEWRIGHT_EXTRA_PACKAGES)
#   agent  the nodewright binary, its units (nodewright.service enabled, the watch unit
#          installed disabled), /etc/nodewright/image-release, and `nodewright prebake`
#          when NODEWRIGHT_PREBAKE_SPEC names a node spec
#   seal   removes this machine's identity so every instance starts as a first boot:
#          machine-id, SSH host keys, cloud-init state, logs, random seed, nodewright's
#          run record
#
# Inputs (environment):
#   NODEWRIGHT_BINARY         the binary to install (default: ./nodewright beside this script)
#   NODEWRIGHT_PREBAKE_SPEC   node spec URL (s3://, https://, file://) to prebake; empty: skip
#   NODEWRIGHT_PREBAKE_ARGS   extra arguments for `nodewright prebake` (e.g. --sha256 HEX)
#   NODEWRIGHT_EXTRA_PACKAGES more OS packages, space-separated (e.g. "containerd runc")
#   KUBERNETES_VERSION        recorded in /etc/nodewright/image-release
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
binary=${NODEWRIGHT_BINARY:-$here/nodewright}
prebake_spec=${NODEWRIGHT_PREBAKE_SPEC:-}
extra_packages=${NODEWRIGHT_EXTRA_PACKAGES:-}
kubernetes_version=${KUBERNETES_VERSION:-}

log() { printf 'provision: %s\n' "$*"; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

# Package names from packages.txt (comments and blank lines dropped).
package_list() {
  sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$here/packages.txt"
}

install_with_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "OS packages already installed: $*"
    return
  fi
  log "installing OS packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # On a fresh cloud instance, cloud-init may hold the package lock for a while.
  local apt=(apt-get -q -o DPkg::Lock::Timeout=600)
  "${apt[@]}" update
  "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
}

install_with_dnf() {
  local names=()
  for p in "$@"; do
    case $p in
      conntrack) names+=(conntrack-tools) ;;
      *) names+=("$p") ;;
    esac
  done
  log "installing OS packages: ${names[*]}"
  dnf install -y -q "${names[@]}"
}

stage_os() {
  if command -v cloud-init >/dev/null; then
    log "waiting for cloud-init to finish"
    cloud-init status --wait >/dev/null || true
  fi
  local packages
  mapfile -t packages < <(package_list)
  # shellcheck disable=SC2206 # a space-separated list, split on purpose
  packages+=($extra_packages)
  if command -v apt-get >/dev/null; then
    install_with_apt "${packages[@]}"
  elif command -v dnf >/dev/null; then
    install_with_dnf "${packages[@]}"
  else
    die "no apt-get or dnf: cannot install ${packages[*]}"
  fi
  # The extra packages' own services (containerd, etcd...) stay off until nodewright
  # has written their configuration and starts them from the node spec.
  local unit
  for p in $extra_packages; do
    for unit in $(package_units "$p"); do
      log "disabling $unit from $p (nodewright starts it when the node spec says)"
      if [ -d /run/systemd/system ]; then
        systemctl stop "$unit" >/dev/null 2>&1 || true
      fi
      systemctl disable "$unit" >/dev/null 2>&1 || true
    done
  done
}

# The service and socket units a package ships.
package_units() {
  if command -v dpkg-query >/dev/null; then
    dpkg-query -L "$1" 2>/dev/null
  else
    rpm -ql "$1" 2>/dev/null
  fi | grep -E '^(/usr)?/lib/systemd/system/[^/@]+[.](service|socket)$' | xargs -r -n1 basename
}

stage_agent() {
  [ -f "$binary" ] || die "the nodewright binary is missing: $binary (set NODEWRIGHT_BINARY)"
  log "installing $binary as /usr/local/bin/nodewright"
  install -D -m 0755 -o root -g root "$binary" /usr/local/bin/nodewright.new
  mv -f /usr/local/bin/nodewright.new /usr/local/bin/nodewright
  local version
  version=$(/usr/local/bin/nodewright version) || die "the installed binary does not run: /usr/local/bin/nodewright version"
  log "installed $version"

  install -d -m 0755 /usr/lib/systemd/system
  for unit in nodewright.service nodewright-watch.service; do
    install -m 0644 "$here/units/$unit" "/usr/lib/systemd/system/$unit"
  done
  # Offline enable (no running systemd needed): the boot unit runs at every boot; the
  # watch unit is for control-plane nodes, whose node spec turns it on.
  systemctl enable nodewright.service
  systemctl disable nodewright-watch.service >/dev/null 2>&1 || true

  # The state directory exists from the start, so that even a first boot that fails
  # (bad user data, say) is recorded for `nodewright status`.
  install -d -m 0700 /var/lib/nodewright
  install -d -m 0755 /etc/nodewright
  {
    echo "# Written by packer/provision.sh when this image was baked."
    echo "NODEWRIGHT_IMAGE_AGENT=\"$version\""
    echo "NODEWRIGHT_IMAGE_KUBERNETES_VERSION=\"$kubernetes_version\""
    echo "NODEWRIGHT_IMAGE_PREBAKE_SPEC=\"$prebake_spec\""
    echo "NODEWRIGHT_IMAGE_BUILT=\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
  } > /etc/nodewright/image-release

  if [ -z "$prebake_spec" ]; then
    log "no NODEWRIGHT_PREBAKE_SPEC: nothing to prebake"
    return
  fi
  if ! /usr/local/bin/nodewright prebake --help >/dev/null 2>&1; then
    die "asked to prebake $prebake_spec, but $version has no prebake command"
  fi
  log "prebaking $prebake_spec"
  # shellcheck disable=SC2086 # extra arguments, split on purpose
  /usr/local/bin/nodewright prebake --spec "$prebake_spec" ${NODEWRIGHT_PREBAKE_ARGS:-}
}

stage_seal() {
  log "removing this machine's identity"
  # An empty machine-id means "not yet initialised": systemd generates a fresh one at
  # the first boot of each instance (and ConditionFirstBoot= holds there).
  rm -f /etc/machine-id /var/lib/dbus/machine-id
  : > /etc/machine-id
  chmod 0444 /etc/machine-id
  # cloud-init (on EC2) sets the hostname from the instance's metadata.
  rm -f /etc/hostname
  rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
  if command -v cloud-init >/dev/null; then
    cloud-init clean --logs --seed
  else
    rm -rf /var/lib/cloud
  fi
  # The build's temporary SSH key; cloud-init installs the instance's key at launch.
  rm -f /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys
  rm -f /root/.bash_history /home/*/.bash_history
  rm -f /var/lib/systemd/random-seed /var/lib/systemd/credential.secret
  rm -rf /var/lib/dhcp/* /var/lib/systemd/network/*
  # nodewright's run record belongs to one instance; its asset cache and whatever
  # prebake recorded stay.
  rm -f /var/lib/nodewright/state.json /var/lib/nodewright/*.tmp
  # Logs: the files go, the directories stay (a persistent journal needs its own).
  find /var/log -type f -delete
  find /var/log/journal -mindepth 1 -delete 2>/dev/null || true
  rm -rf /var/tmp/*
  if command -v apt-get >/dev/null; then
    apt-get clean
  fi
  sync
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(os agent seal)
for stage in "${stages[@]}"; do
  case $stage in
    os) stage_os ;;
    agent) stage_agent ;;
    seal) stage_seal ;;
    *) die "unknown stage: $stage (stages: os agent seal)" ;;
  esac
done
log "done: ${stages[*]}"
