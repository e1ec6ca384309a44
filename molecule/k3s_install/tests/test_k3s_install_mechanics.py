"""What the k3s role installed and wrote, stopping before K3s starts (k3s_start_service: false).

The binaries are k3s-stand-in (molecule/k3s_install/files/k3s-stand-in.j2), which only prints
a version: these tests check download, checksums, architecture, air-gap copy, upgrade and the
rendered files, never that K3s runs.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

SERVER = "k3s-netpol-k3s-install-server"
AGENT = "k3s-netpol-k3s-install-agent"
IMAGES_DIR = "/var/lib/rancher/k3s/agent/images"


def name_of(host: Any) -> str:
    return str(host.backend.get_hostname())


def unit_of(host: Any) -> str:
    return "k3s" if name_of(host) == SERVER else "k3s-agent"


def test_the_binary_is_the_release_file_for_the_architecture(host: Any) -> None:
    binary = host.file("/usr/local/bin/k3s")
    assert binary.mode == 0o755
    expected = "k3s" if name_of(host) == SERVER else "k3s-arm64"
    version = host.check_output("/usr/local/bin/k3s --version")
    # The server was upgraded from v1.31.11+k3s1 (prepare.yml); tampered v1.31.13+k3s1 refused.
    assert version.splitlines()[0] == f"k3s version v1.31.12+k3s1 (k3s-stand-in for {expected})"


def test_the_command_links_point_at_the_binary(host: Any) -> None:
    for link in ("kubectl", "crictl", "ctr"):
        assert host.file(f"/usr/local/bin/{link}").linked_to == "/usr/local/bin/k3s"


def test_only_this_release_s_images_tarball_is_left(host: Any) -> None:
    wanted = (
        "k3s-airgap-images-amd64.tar.zst"
        if name_of(host) == SERVER
        else "k3s-airgap-images-arm64.tar"
    )
    assert host.check_output(f"ls {IMAGES_DIR}").split() == [wanted]
    images = host.file(f"{IMAGES_DIR}/{wanted}")
    assert images.content_string == "Stand-in bytes for the v1.31.12+k3s1 images tarball.\n"
    assert images.mode == 0o644


def test_the_service_is_written_but_neither_enabled_nor_started(host: Any) -> None:
    unit = host.file(f"/etc/systemd/system/{unit_of(host)}.service")
    assert unit.mode == 0o644
    role = "server" if name_of(host) == SERVER else "agent"
    assert f"ExecStart=/usr/local/bin/k3s {role} $K3S_EXTRA_ARGS\n" in unit.content_string
    assert "kubelet-arg" not in unit.content_string
    service = host.service(unit_of(host))
    assert not service.is_enabled
    assert not service.is_running


def test_the_environment_file_holds_the_token_and_extra_arguments(host: Any) -> None:
    env = host.file(f"/etc/systemd/system/{unit_of(host)}.service.env")
    assert env.mode == 0o600
    assert "K3S_TOKEN=install-scenario-token\n" in env.content_string
    if name_of(host) == SERVER:
        assert "K3S_EXTRA_ARGS=--kubelet-arg=max-pods=50\n" in env.content_string


def test_the_config_has_the_api_port_and_registration_address(host: Any) -> None:
    config_file = host.file("/etc/rancher/k3s/config.yaml")
    assert config_file.mode == 0o600
    config = yaml.safe_load(config_file.content_string)
    if name_of(host) == SERVER:
        assert config == {
            "node-label": ["tier=control"],
            "https-listen-port": 18080,
            "tls-san": ["127.0.0.1"],
        }
    else:
        assert config == {"server": "https://127.0.0.1:18080"}


def test_registries_yaml_is_private_and_from_the_variable(host: Any) -> None:
    registries = host.file("/etc/rancher/k3s/registries.yaml")
    if name_of(host) != SERVER:
        assert not registries.exists
        return
    assert registries.mode == 0o600
    assert yaml.safe_load(registries.content_string) == {
        "mirrors": {"docker.io": {"endpoint": ["https://registry.example.internal:5000"]}},
        "configs": {
            "registry.example.internal:5000": {
                "auth": {"username": "puller", "password": "registry-secret"}
            }
        },
    }


@pytest.mark.parametrize("path", ["/etc/rancher/k3s/k3s.yaml", "/var/lib/rancher/k3s/server"])
def test_nothing_k3s_writes_when_it_runs_exists(host: Any, path: str) -> None:
    assert not host.file(path).exists
