"""The three ways in, typed as a user types them, in a shell that activated the virtualenv and
exported nothing else: no CONTAINERS_CONF, ANSIBLE_* or K3S_NETPOL_* variables.

`ansible-playbook site.yml` and `playbooks/lab_down.yml`, `k3s-netpol lab up/verify/down`,
`k3s_netpol.runner.run_playbook("site.yml")` and a plain `ansible_runner.run(...)` on the
project's playbook, as the README shows them. (`molecule test` and `molecule test -s NAME` run
the same way in scripts/molecule-all.sh, which `make test` calls.) The tests run in file order:
the first brings the lab up from nothing, the Python ones run on it, then it is taken down and
brought up again through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
LAB_LABEL = "app.kubernetes.io/part-of=k3s-netpol-lab"
IMAGE = "localhost/k3s-netpol-debian12:latest"
# A lab run takes one to three minutes; a hung one fails the test instead of the CI run.
RUN_TIMEOUT_SECONDS = 900


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (privileged podman containers)"
    if shutil.which("podman") is None:
        return "podman is not installed: run scripts/setup.sh"
    if subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode != 0:
        return f"the image {IMAGE} is missing: run scripts/setup.sh"
    if not (ROOT / ".cache" / "containers.conf").is_file():
        return "the podman settings (.cache/containers.conf) are missing: run scripts/setup.sh"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=f"SKIPPED: {_missing()}")


def user_environment() -> dict[str, str]:
    """What `source .venv/bin/activate` gives a fresh root shell, and nothing else."""
    return {
        "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "VIRTUAL_ENV": str(VENV_BIN.parent),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }


def run(command: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        cwd=cwd,
        env=user_environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}\n"
        f"--- stdout (tail)\n{result.stdout[-4000:]}\n--- stderr (tail)\n{result.stderr[-4000:]}"
    )
    return result


def lab_containers(state: str = "running") -> set[str]:
    listing = subprocess.run(
        ["podman", "ps", "-a", "--filter", f"label={LAB_LABEL}", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        container["Names"][0]
        for container in json.loads(listing.stdout or "[]")
        if container.get("State") == state or state == "any"
    }


REPORT = ROOT / "artifacts" / "report.json"


@pytest.fixture
def fresh_report() -> Path:
    """The report every entry point writes by default (artifacts/ beside site.yml), removed
    first so that the test sees the one its run wrote."""
    REPORT.unlink(missing_ok=True)
    return REPORT


def check_report(report_path: Path) -> None:
    report = json.loads(report_path.read_text())
    assert report["ok"] is True, report["summary"]
    assert report["rows"], "the report holds no probes"


def test_ansible_playbook_site_yml_brings_up_and_verifies_the_lab(fresh_report: Path) -> None:
    run(["ansible-playbook", "playbooks/lab_down.yml"])
    assert not lab_containers("any")
    run(["ansible-playbook", "site.yml"])
    assert lab_containers()
    check_report(fresh_report)


def test_run_playbook_from_python(tmp_path: Path, fresh_report: Path) -> None:
    script = textwrap.dedent(
        """
        from k3s_netpol.runner import run_playbook

        result = run_playbook("site.yml")
        print(result.summary())
        raise SystemExit(0 if result.ok else 1)
        """
    )
    run([sys.executable, "-c", script], cwd=tmp_path)
    check_report(fresh_report)


def test_plain_ansible_runner_run(tmp_path: Path, fresh_report: Path) -> None:
    script = textwrap.dedent(
        f"""
        import tempfile

        import ansible_runner

        result = ansible_runner.run(
            private_data_dir=tempfile.mkdtemp(prefix="k3s-netpol-runner-"),
            project_dir={str(ROOT)!r},
            playbook="site.yml",
            quiet=True,
        )
        print(result.status, result.rc)
        raise SystemExit(0 if result.status == "successful" else 1)
        """
    )
    run([sys.executable, "-c", script], cwd=tmp_path)
    check_report(fresh_report)


def test_ansible_playbook_lab_down_removes_the_lab() -> None:
    assert lab_containers()
    run(["ansible-playbook", "playbooks/lab_down.yml"])
    assert not lab_containers("any")


def test_cli_lab_up_verify_down(tmp_path: Path, fresh_report: Path) -> None:
    try:
        run(["k3s-netpol", "lab", "up"], cwd=tmp_path)
        assert lab_containers()
        run(["k3s-netpol", "lab", "verify"], cwd=tmp_path)
        check_report(fresh_report)
    finally:
        run(["k3s-netpol", "lab", "down"], cwd=tmp_path)
    assert not lab_containers("any")
