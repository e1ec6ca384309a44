"""After playbooks/reset.yml: nothing of K3s is left, and nothing else was taken."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize(
    "path",
    [
        "/etc/systemd/system/k3s.service",
        "/etc/systemd/system/k3s.service.env",
        "/usr/local/bin/kubectl",
        "/etc/rancher",
        "/var/lib/rancher",
        "/var/lib/cni",
        "/run/k3s",
        "/etc/cni/net.d/10-flannel.conflist",
    ],
)
def test_k3s_files_are_gone(host: Any, path: str) -> None:
    assert not host.file(path).exists, path


def test_service_is_gone(host: Any) -> None:
    assert not host.service("k3s").is_running
    listing = host.run("systemctl list-unit-files --no-legend 'k3s*'")
    assert listing.stdout.strip() == ""
    assert host.run("pgrep -x sleep").rc == 1


def test_nothing_is_mounted_under_k3s_paths(host: Any) -> None:
    mounts = host.file("/proc/self/mounts").content_string
    for prefix in (" /run/k3s", " /var/lib/kubelet/", " /var/lib/rancher"):
        assert prefix not in mounts


def test_a_data_directory_on_its_own_mount_is_emptied_and_stays_mounted(host: Any) -> None:
    assert " /var/lib/kubelet " in host.file("/proc/self/mounts").content_string
    assert host.file("/var/lib/kubelet").is_directory
    assert host.check_output("ls -A /var/lib/kubelet") == ""


def test_interfaces_and_pod_namespace_are_gone(host: Any) -> None:
    links = host.check_output("ip -o link show")
    for name in ("cni0", "flannel.1", "veth0a1b2c3d"):
        assert f": {name}:" not in links
        assert f": {name}@" not in links
    assert "cni-" not in host.check_output("ip netns list")


def test_only_k3s_rules_were_removed(host: Any) -> None:
    rules = host.check_output("iptables-save")
    for pattern in ("KUBE-", "CNI-", "flannel"):
        assert pattern not in rules
    assert "--comment keep-me -j ACCEPT" in rules


def test_only_kube_router_ipsets_were_destroyed(host: Any) -> None:
    assert host.check_output("ipset list -n").split() == ["keep-me"]


def test_a_file_that_is_not_a_link_to_k3s_is_kept(host: Any) -> None:
    crictl = host.file("/usr/local/bin/crictl")
    assert crictl.is_file
    assert not crictl.is_symlink
