"""roles/k3s tasks/kubeconfig.yml on localhost: the fetched kubeconfig is renamed, points at the
registration address, and is merged into a controller kubeconfig without losing its entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_localhost import ANSIBLE_PLAYBOOK, Run, include_role, run_tasks

pytestmark = pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook is not in the venv"
)

# /etc/rancher/k3s/k3s.yaml as K3s writes it (certificate data shortened).
K3S_YAML = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJkekNDQVIyZ0F3SUJBZ0lCQURB
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJrVENDQVRlZ0F3SUJBZ0lJ
    client-key-data: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVFSUFC
"""

OTHER = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "other", "cluster": {"server": "https://192.0.2.50:6443"}}],
    "users": [{"name": "other", "user": {"token": "other-token"}}],
    "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
    "current-context": "other",
}


def fetch(tmp_path: Path, merge_path: Path) -> Run:
    config_dir = tmp_path / "etc"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "k3s.yaml").write_text(K3S_YAML)
    return run_tasks(
        tmp_path,
        [include_role("k3s", "kubeconfig")],
        {
            "__k3s_config_dir": str(config_dir),
            "k3s_server_address": "k3s-api.example.internal",
            "k3s_api_port": 7443,
            "k3s_kubeconfig_path": str(tmp_path / "artifacts" / "kubeconfig"),
            "k3s_kubeconfig_name": "lab",
            "k3s_kubeconfig_merge_path": str(merge_path),
        },
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_the_kubeconfig_is_renamed_and_points_at_the_registration_address(tmp_path: Path) -> None:
    run = fetch(tmp_path, tmp_path / "home" / "config")
    assert run.failed == 0, run.stdout + run.stderr
    path = tmp_path / "artifacts" / "kubeconfig"
    kubeconfig = load(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [c["name"] for c in kubeconfig["clusters"]] == ["lab"]
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://k3s-api.example.internal:7443"
    assert kubeconfig["contexts"] == [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}]
    assert kubeconfig["current-context"] == "lab"
    assert kubeconfig["users"][0]["user"]["client-key-data"].startswith("LS0t")
    assert "client-key-data" not in run.stdout


def test_the_merge_keeps_other_entries_and_is_idempotent(tmp_path: Path) -> None:
    merge_path = tmp_path / "home" / "config"
    merge_path.parent.mkdir()
    merge_path.write_text(yaml.safe_dump(OTHER))
    first = fetch(tmp_path, merge_path)
    assert first.failed == 0, first.stdout + first.stderr
    merged = load(merge_path)
    assert [c["name"] for c in merged["contexts"]] == ["other", "lab"]
    assert [c["name"] for c in merged["clusters"]] == ["other", "lab"]
    assert merged["current-context"] == "other"
    assert merge_path.stat().st_mode & 0o777 == 0o600
    again = fetch(tmp_path, merge_path)
    assert (again.changed, again.failed) == (0, 0), again.stdout


def test_a_merge_path_that_is_a_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    merge_path = tmp_path / "home" / "config"
    merge_path.mkdir(parents=True)
    run = fetch(tmp_path, merge_path)
    assert run.failed == 1
    assert f"k3s_kubeconfig_merge_path: {merge_path} exists and is not a regular file" in run.stdout
    assert list(merge_path.iterdir()) == []


def test_a_merge_path_that_is_not_a_kubeconfig_is_refused_and_left_alone(tmp_path: Path) -> None:
    merge_path = tmp_path / "home" / "config"
    merge_path.parent.mkdir()
    merge_path.write_text("just a line of text\n")
    run = fetch(tmp_path, merge_path)
    assert run.failed == 1
    assert f"k3s_kubeconfig_merge_path: {merge_path} is not a kubeconfig" in run.stdout
    assert merge_path.read_text() == "just a line of text\n"
