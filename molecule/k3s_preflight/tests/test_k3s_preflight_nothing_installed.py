"""After every bad-input case failed, the nodes hold nothing of K3s they did not hold before."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

INSTALLED = "k3s-netpol-k3s-preflight-installed"

# What prepare.yml left on the installed node, which the failed cases must not have changed.
INSTALLED_FILES = {
    "/var/lib/rancher/k3s/server/token": (
        b"K10aa6d34fbd8e6b7b1e9b3e2f2d0c4e1a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f"
        b"::server:cluster-secret\n"
    ),
    "/usr/local/bin/k3s": (
        b"#!/bin/sh\n"
        b"# Stand-in for an installed K3s binary in the k3s_preflight scenario: prints the\n"
        b"# version only; it is never started.\n"
        b"echo 'k3s version v1.31.12+k3s1 (0123abcd)'\n"
        b"echo 'go version go1.23.11'\n"
    ),
}


def is_installed_node(host: Any) -> bool:
    return str(host.backend.get_hostname()) == INSTALLED


@pytest.mark.parametrize(
    "path",
    [
        "/usr/local/bin/k3s",
        "/usr/local/bin/kubectl",
        "/etc/systemd/system/k3s.service",
        "/etc/systemd/system/k3s.service.env",
        "/etc/systemd/system/k3s-agent.service",
        "/etc/systemd/system/k3s-agent.service.env",
        "/etc/rancher",
        "/var/lib/rancher",
    ],
)
def test_nothing_of_k3s_was_written(host: Any, path: str) -> None:
    if is_installed_node(host) and any(known.startswith(path) for known in INSTALLED_FILES):
        pytest.skip(f"{path} was put there by prepare.yml")
    assert not host.file(path).exists, f"{path} exists after a failed preflight"


@pytest.mark.parametrize("path", sorted(INSTALLED_FILES))
def test_what_was_installed_is_unchanged(host: Any, path: str) -> None:
    if not is_installed_node(host):
        pytest.skip("installed node only")
    assert host.file(path).sha256sum == hashlib.sha256(INSTALLED_FILES[path]).hexdigest()


def test_no_k3s_service_is_known_to_systemd(host: Any) -> None:
    listing = host.run("systemctl list-unit-files --no-legend 'k3s*'")
    assert listing.stdout.strip() == "", listing.stdout
