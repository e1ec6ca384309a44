#!/usr/bin/env bash
# Idempotent set-up for this checkout, run by `make lab` and `make test`:
#   1. the Debian packages the toolkit and its tests need on the controller;
#   2. .venv with the pinned tool chain (requirements.txt) and this package, editable, with its
#      C field splitter built in place;
#   3. .cache/containers.conf (runc, ulimits that fit this host), used through CONTAINERS_CONF;
#   4. the local Debian 12 systemd image for Molecule and the lab (scripts/build-image.sh).
# Each step is skipped when what it makes is already there and current.
#
# `scripts/setup.sh podman-settings` runs step 3 alone: the Molecule scenarios call it first
# (their dependency step), so `molecule test` works in a shell that exported nothing.
set -euo pipefail

project_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_dir="$project_dir/.cache"
venv_dir="$project_dir/.venv"
mkdir -p "$cache_dir"

apt_packages=(
  podman runc conmon netavark aardvark-dns catatonit slirp4netns uidmap fuse-overlayfs
  debootstrap iptables ipset iproute2 curl make
  python3 python3-venv python3-dev gcc libc6-dev
  chromium chromium-driver
  ulogd2
)
# chromium and chromium-driver: the report page's browser test. ulogd2: the host-namespace
# labs of tests/test_verify_lab.py start their own ulogd per node (the packaged daemon is not used).
# kubectl for tests/test_kubectl_commands.py: Debian's kubernetes-client, unless a kubectl is
# already installed (another package's /usr/bin/kubectl would make its install fail).
command -v kubectl >/dev/null || apt_packages+=(kubernetes-client)

log() { printf '==> %s\n' "$*"; }

install_apt_packages() {
  local missing=() package
  for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$package")
  done
  if ((${#missing[@]})); then
    log "Installing Debian packages: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
      echo "setup: installing Debian packages needs root (missing: ${missing[*]})" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

install_venv() {
  local stamp_file="$venv_dir/.k3s-netpol-stamp" wanted
  wanted=$(sha256sum <"$project_dir/requirements.txt" | cut -d' ' -f1)
  if [[ -x "$venv_dir/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$wanted" ]]; then
    return
  fi
  log "Creating $venv_dir with the pinned tool chain"
  python3 -m venv "$venv_dir"
  "$venv_dir/bin/pip" install -q --upgrade pip
  "$venv_dir/bin/pip" install -q -r "$project_dir/requirements.txt"
  rm -f "$venv_dir/.k3s-netpol-package-stamp"
  echo "$wanted" >"$stamp_file"
}

# The package, editable, with its C field splitter built in place (src/k3s_netpol/_logemu*.so);
# rebuilt when the build files or the C source change.
install_package() {
  local stamp_file="$venv_dir/.k3s-netpol-package-stamp" wanted
  wanted=$(cd "$project_dir" && cat pyproject.toml setup.py src/k3s_netpol/_logemu.c | sha256sum | cut -d' ' -f1)
  if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$wanted" ]] \
    && "$venv_dir/bin/python" -c 'import k3s_netpol._logemu' 2>/dev/null; then
    return
  fi
  log "Installing k3s-netpol (editable) and building its C field splitter"
  "$venv_dir/bin/pip" install -q --no-deps --no-build-isolation -e "$project_dir"
  if ! "$venv_dir/bin/python" -c 'import k3s_netpol._logemu'; then
    echo "setup: the C field splitter (src/k3s_netpol/_logemu.c) did not build; see the" \
      "compiler's messages above (gcc and python3-dev are needed)" >&2
    exit 1
  fi
  echo "$wanted" >"$stamp_file"
}

# podman's default ulimits for a container (nofile 1048576, nproc 4194304) are above the hard
# limits of some hosts, and runc cannot raise them there ("error setting rlimit type 7"); crun
# fails on cgroup v1 hybrid hosts. This file keeps both within what the host allows. The
# project's plays and Molecule scenarios point CONTAINERS_CONF at it themselves.
write_containers_conf() {
  local nofile nproc conf="$cache_dir/containers.conf" text
  nofile=$(ulimit -Hn)
  [[ "$nofile" == unlimited ]] && nofile=1048576
  nproc=$(ulimit -Hu)
  [[ "$nproc" == unlimited || "$nproc" -gt 32768 ]] && nproc=32768
  text=$(printf '%s\n' \
    '# Written by scripts/setup.sh; selected with CONTAINERS_CONF. Nothing in /etc is changed.' \
    '[containers]' \
    "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]" \
    '' \
    '[engine]' \
    'runtime = "runc"')
  if [[ ! -f "$conf" || "$(cat "$conf")" != "$text" ]]; then
    log "Writing $conf"
    printf '%s\n' "$text" >"$conf"
  fi
}

case "${1:-all}" in
  podman-settings)
    write_containers_conf
    ;;
  all)
    install_apt_packages
    install_venv
    install_package
    write_containers_conf
    CONTAINERS_CONF="$cache_dir/containers.conf" "$project_dir/scripts/build-image.sh"
    ;;
  *)
    echo "usage: scripts/setup.sh [all|podman-settings]" >&2
    exit 2
    ;;
esac
