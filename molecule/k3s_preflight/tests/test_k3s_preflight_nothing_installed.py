"""After every bad-input case failed, the node must hold nothing of K3s."""

from __future__ import annotations

from typing import Any

import pytest


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
    assert not host.file(path).exists, f"{path} exists after a failed preflight"


def test_no_k3s_service_is_known_to_systemd(host: Any) -> None:
    listing = host.run("systemctl list-unit-files --no-legend 'k3s*'")
    assert listing.stdout.strip() == "", listing.stdout
