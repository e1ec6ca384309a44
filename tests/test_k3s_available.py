"""molecule/k3s/available: when the `k3s` scenario can run, and exactly what it says is missing."""

from __future__ import annotations

import hashlib
import http.server
import os
import platform
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "molecule" / "k3s" / "available"
ARCH, BINARY = {
    "x86_64": ("amd64", "k3s"),
    "aarch64": ("arm64", "k3s-arm64"),
    "armv7l": ("arm", "k3s-armhf"),
}.get(platform.machine(), ("unknown", "unknown"))
VERSION = "v1.31.12+k3s1"

pytestmark = pytest.mark.skipif(ARCH == "unknown", reason="no K3s release for this machine")


def run_available(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("K3S_NETPOL_")
    }
    environment["K3S_NETPOL_K3S_VERSION"] = VERSION
    environment.update(env)
    return subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def write_airgap(
    directory: Path, *, images_suffix: str | None = "zst", listed: bool = True
) -> Path:
    directory.mkdir(exist_ok=True)
    binary = directory / BINARY
    binary.write_bytes(b"arbitrary bytes standing for the binary")
    lines = [f"{hashlib.sha256(binary.read_bytes()).hexdigest()}  {BINARY}"] if listed else []
    if images_suffix:
        (directory / f"k3s-airgap-images-{ARCH}.tar.{images_suffix}").write_bytes(b"images")
    (directory / f"sha256sum-{ARCH}.txt").write_text("\n".join(lines) + "\n")
    return directory


class _Handler(http.server.BaseHTTPRequestHandler):
    status_by_path: ClassVar[dict[str, int]] = {}
    requests: ClassVar[list[tuple[str, str]]] = []

    def do_HEAD(self) -> None:
        self.requests.append((self.command, self.path))
        self.send_response(self.status_by_path.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def release_server() -> Iterator[str]:
    """A loopback HTTP server answering HEAD: 302 for the pinned release's checksum file."""
    _Handler.requests = []
    _Handler.status_by_path = {f"/releases/v1.31.12%2Bk3s1/sha256sum-{ARCH}.txt": 302}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/releases"
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/releases"


def test_complete_airgap_dir_is_available(tmp_path: Path) -> None:
    directory = write_airgap(tmp_path / "airgap")
    result = run_available(K3S_NETPOL_AIRGAP_DIR=str(directory))
    assert result.returncode == 0, result.stdout
    assert f"found in K3S_NETPOL_AIRGAP_DIR={directory}" in result.stdout


def test_gz_images_are_accepted(tmp_path: Path) -> None:
    directory = write_airgap(tmp_path / "airgap", images_suffix="gz")
    assert run_available(K3S_NETPOL_AIRGAP_DIR=str(directory)).returncode == 0


def test_plain_tar_images_are_accepted(tmp_path: Path) -> None:
    directory = write_airgap(tmp_path / "airgap", images_suffix=None)
    (directory / f"k3s-airgap-images-{ARCH}.tar").write_bytes(b"images")
    assert run_available(K3S_NETPOL_AIRGAP_DIR=str(directory)).returncode == 0


def test_missing_images_are_named_with_every_suffix(tmp_path: Path) -> None:
    directory = write_airgap(tmp_path / "airgap", images_suffix=None)
    result = run_available(K3S_NETPOL_AIRGAP_DIR=str(directory))
    assert result.returncode == 1
    images = directory / f"k3s-airgap-images-{ARCH}.tar"
    assert f"lacks: {images}.zst or {images}.gz or {images}." in result.stdout
    assert VERSION in result.stdout


def test_every_missing_file_is_named(tmp_path: Path) -> None:
    directory = tmp_path / "empty"
    directory.mkdir()
    result = run_available(K3S_NETPOL_AIRGAP_DIR=str(directory))
    assert result.returncode == 1
    assert f"{directory / BINARY}; {directory / f'sha256sum-{ARCH}.txt'}; " in result.stdout


def test_checksum_file_without_the_binary_is_refused(tmp_path: Path) -> None:
    directory = write_airgap(tmp_path / "airgap", listed=False)
    result = run_available(K3S_NETPOL_AIRGAP_DIR=str(directory))
    assert result.returncode == 1
    assert f"a line for {BINARY} in {directory / f'sha256sum-{ARCH}.txt'}" in result.stdout


def test_airgap_dir_that_is_not_a_directory(tmp_path: Path) -> None:
    result = run_available(K3S_NETPOL_AIRGAP_DIR=str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert f"{tmp_path / 'nowhere'} (not a directory)" in result.stdout


def test_reachable_release_url_is_available(release_server: str) -> None:
    result = run_available(K3S_NETPOL_K3S_RELEASE_BASE_URL=release_server)
    assert result.returncode == 0, result.stdout
    assert "HTTP 302" in result.stdout
    assert _Handler.requests == [("HEAD", f"/releases/v1.31.12%2Bk3s1/sha256sum-{ARCH}.txt")]


def test_release_url_answering_404_is_not_available(release_server: str) -> None:
    result = run_available(
        K3S_NETPOL_K3S_RELEASE_BASE_URL=release_server, K3S_NETPOL_K3S_VERSION="v0.0.0+k3s9"
    )
    assert result.returncode == 1
    assert "did not answer (HTTP 404)" in result.stdout
    assert "Set K3S_NETPOL_AIRGAP_DIR" in result.stdout


def test_unreachable_release_url_names_the_variable_to_set(closed_port_url: str) -> None:
    result = run_available(K3S_NETPOL_K3S_RELEASE_BASE_URL=closed_port_url)
    assert result.returncode == 1
    assert "K3s artifacts are not available: K3S_NETPOL_AIRGAP_DIR is not set" in result.stdout
    assert f"{closed_port_url}/v1.31.12%2Bk3s1/sha256sum-{ARCH}.txt" in result.stdout
    assert "Connection refused" in result.stdout
