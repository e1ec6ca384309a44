#!/usr/bin/env bash
# Builds the local Debian 12 systemd image that Molecule and the lab boot, without any registry:
# debootstrap a minimal root file system, then `podman import` it.
# The Debian mirror is read from this host's apt sources; K3S_NETPOL_DEBIAN_MIRROR overrides it.
# The image is rebuilt only when this script changes (its hash is stored as an image label).
set -euo pipefail

image=${K3S_NETPOL_IMAGE:-localhost/k3s-netpol-debian12:latest}
suite=bookworm
packages=systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,iptables,ipset,curl,ca-certificates,procps,logrotate,gnupg

script_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
current=$(podman image inspect --format '{{ index .Labels "k3s-netpol.build" }}' "$image" 2>/dev/null || true)
if [[ "$current" == "$script_hash" ]]; then
  exit 0
fi

debian_mirror() {
  if [[ -n "${K3S_NETPOL_DEBIAN_MIRROR:-}" ]]; then
    echo "$K3S_NETPOL_DEBIAN_MIRROR"
    return
  fi
  local sources=/etc/apt/sources.list.d/debian.sources uri=""
  if [[ -f "$sources" ]]; then
    uri=$(awk '/^URIs:/ { print $2; exit }' "$sources")
  fi
  if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
    uri=$(awk '$1 == "deb" && $2 !~ /^\[/ { print $2; exit } $1 == "deb" { print $3; exit }' /etc/apt/sources.list)
  fi
  if [[ -z "$uri" ]]; then
    echo "build-image: no Debian mirror found in the apt sources; set K3S_NETPOL_DEBIAN_MIRROR" >&2
    exit 1
  fi
  echo "$uri"
}

mirror=$(debian_mirror)
rootfs=$(mktemp -d /var/tmp/k3s-netpol-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "==> Building $image from $mirror ($suite)"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >/dev/null
# One identity per container: systemd creates a machine-id at first boot.
: >"$rootfs/etc/machine-id"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import \
  --change 'CMD ["/sbin/init"]' \
  --change 'STOPSIGNAL=SIGRTMIN+3' \
  --change "LABEL k3s-netpol.build=$script_hash" \
  - "$image" >/dev/null
echo "==> Built $image"
