"""Run a playbook, or a list of tasks (typically a role's task file through include_role), on
localhost with the project's ansible-playbook, roles and configuration; return the run and its
recap."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", re.M)


@dataclass(frozen=True)
class Run:
    stdout: str
    stderr: str
    changed: int
    failed: int


def run_tasks(
    work: Path, tasks: list[dict[str, Any]], extra_vars: dict[str, Any], *options: str
) -> Run:
    """Write the tasks as a one-play playbook in `work` and run it on localhost."""
    playbook = work / "playbook.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Run a role's tasks on localhost",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": tasks,
                }
            ]
        )
    )
    variables = work / "vars.json"
    # The venv's Python for modules, not whatever `python3` interpreter discovery finds first.
    variables.write_text(json.dumps({"ansible_python_interpreter": sys.executable, **extra_vars}))
    return run_playbook(playbook, work / "artifacts", "-e", f"@{variables}", *options)


def run_playbook(
    playbook: Path, artifacts: Path, *options: str, inventory: str = "localhost,"
) -> Run:
    """Run a playbook (on localhost unless `inventory` says otherwise), its controller-side
    files going to `artifacts`; `changed` and `failed` are summed over the hosts."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "K3S_NETPOL_ARTIFACTS_DIR": str(artifacts),
    }
    completed = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", inventory, "-c", "local", str(playbook), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    recap = RECAP.findall(completed.stdout)
    assert recap, completed.stdout + completed.stderr
    changed = sum(int(host_changed) for _, host_changed, _ in recap)
    failed = sum(int(host_failed) for _, _, host_failed in recap)
    return Run(completed.stdout, completed.stderr, changed, failed)


def include_role(name: str, tasks_from: str | None = None) -> dict[str, Any]:
    arguments = {"name": name} | ({"tasks_from": tasks_from} if tasks_from else {})
    return {"name": f"Run role {name}", "ansible.builtin.include_role": arguments}
