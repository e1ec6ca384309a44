"""K3s after the whole chain: both nodes up, the policy controller on, the report ok."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

SERVER = "k3s-netpol-k3s-server"
AGENT = "k3s-netpol-k3s-agent"
ARTIFACTS = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "artifacts"


def node_name(host: Any) -> str:
    return str(host.backend.get_hostname())


def unit_of(host: Any) -> str:
    return "k3s" if node_name(host) == SERVER else "k3s-agent"


def test_binary_is_installed(host: Any) -> None:
    binary = host.file("/usr/local/bin/k3s")
    assert binary.is_file
    assert binary.mode == 0o755
    assert host.file("/usr/local/bin/kubectl").linked_to == "/usr/local/bin/k3s"


@pytest.mark.parametrize("path", ["/etc/rancher/k3s/config.yaml"])
def test_config_is_private(host: Any, path: str) -> None:
    assert host.file(path).mode == 0o600


def test_environment_file_is_private(host: Any) -> None:
    assert host.file(f"/etc/systemd/system/{unit_of(host)}.service.env").mode == 0o600


def test_service_runs_and_is_enabled(host: Any) -> None:
    service = host.service(unit_of(host))
    assert service.is_running
    assert service.is_enabled


def test_agent_joins_the_server(host: Any) -> None:
    if node_name(host) != AGENT:
        pytest.skip("agent only")
    config = yaml.safe_load(host.file("/etc/rancher/k3s/config.yaml").content_string)
    assert config["server"].startswith("https://")
    assert config["server"].endswith(":6443")


def test_network_policy_controller_chains_exist(host: Any) -> None:
    rules = host.check_output("iptables-save -t filter")
    for chain in ("KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT"):
        assert f":{chain} " in rules


def test_ulogd2_listens(host: Any) -> None:
    assert host.service("ulogd2").is_running


def test_both_nodes_are_ready(host: Any) -> None:
    if node_name(host) != SERVER:
        pytest.skip("server only")
    nodes = json.loads(host.check_output("k3s kubectl get nodes -o json"))["items"]
    ready = {
        node["metadata"]["name"]: next(
            c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"
        )
        for node in nodes
    }
    assert ready == {SERVER: "True", AGENT: "True"}


def test_kubeconfig_on_the_controller_points_at_the_server() -> None:
    kubeconfig = ARTIFACTS / "kubeconfig"
    assert kubeconfig.stat().st_mode & 0o777 == 0o600
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    assert server.startswith("https://")
    assert "127.0.0.1" not in server


def test_verify_report_is_ok() -> None:
    report = json.loads((ARTIFACTS / "report.json").read_text())
    assert report["ok"] is True
