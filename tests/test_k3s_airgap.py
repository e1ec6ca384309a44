"""roles/k3s tasks/preflight-airgap.yml for several hosts on the controller: each file's SHA-256
is computed once for the play (hosts sharing an air-gap directory share the sums), and each host
is judged on its own directory."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml
from ansible_localhost import ANSIBLE_PLAYBOOK, run_playbook

pytestmark = pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook is not in the venv"
)


def write_release(directory: Path, binary: bytes, listed_binary: bytes) -> Path:
    directory.mkdir(parents=True)
    (directory / "k3s").write_bytes(binary)
    (directory / "k3s-airgap-images-amd64.tar").write_bytes(b"images tarball bytes")
    sums = {
        "k3s": hashlib.sha256(listed_binary).hexdigest(),
        "k3s-airgap-images-amd64.tar": hashlib.sha256(b"images tarball bytes").hexdigest(),
    }
    (directory / "sha256sum-amd64.txt").write_text(
        "".join(f"{digest}  {name}\n" for name, digest in sums.items())
    )
    return directory


def test_sums_are_computed_once_per_file_and_each_host_is_judged_on_its_files(
    tmp_path: Path,
) -> None:
    good = write_release(tmp_path / "good", b"binary", b"binary")
    damaged = write_release(tmp_path / "damaged", b"damaged binary", b"binary")
    hosts = {"node-1": good, "node-2": damaged, "node-3": good}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {
                        name: {"k3s_airgap_dir": str(path), "ansible_connection": "local"}
                        for name, path in hosts.items()
                    },
                    "vars": {
                        "ansible_python_interpreter": sys.executable,
                        "k3s_host_architecture": "x86_64",
                    },
                }
            }
        )
    )
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Check the air-gap directories",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Run the air-gap preflight",
                            "ansible.builtin.include_role": {
                                "name": "k3s",
                                "tasks_from": "preflight-airgap",
                            },
                        }
                    ],
                }
            ]
        )
    )
    run = run_playbook(playbook, tmp_path / "artifacts", inventory=str(inventory))
    stat_lines = [line for line in run.stdout.splitlines() if "-> localhost] => (item=" in line]
    stat_items = [line.split("(item=")[1].rstrip(")") for line in stat_lines]
    assert sorted(stat_items) == sorted(set(stat_items)), "a file's sum was computed twice"
    assert str(good / "k3s") in stat_items
    assert str(damaged / "k3s") in stat_items
    assert run.failed == 1
    assert (
        f"{damaged}/k3s: sha256 {hashlib.sha256(b'damaged binary').hexdigest()} does not match"
        in (run.stdout)
    )
    assert "fatal: [node-2]" in run.stdout
