"""Bad role variables fail before anything changes, and the error names the variable.

One ansible-playbook run of the project's playbook covers every case: each case is an inventory
alias of the scenario's container carrying one bad variable as a host variable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[3]
NODE = "k3s-netpol-ulogd"
WATCHED = "/etc/ulogd.conf /etc/logrotate.d/ulogd2 /etc/systemd/system/ulogd2.service.d/*"

BAD_VARIABLES: dict[str, dict[str, Any]] = {
    "group-too-big": {"ulogd2_nflog_group": 65536},
    "group-negative": {"ulogd2_nflog_group": -1},
    "group-not-int": {"ulogd2_nflog_group": "one hundred"},
    "unknown-output": {"ulogd2_outputs": ["logemu", "pcap"]},
    "no-output": {"ulogd2_outputs": []},
    "relative-file": {"ulogd2_logemu_file": "var/log/ulog/syslogemu.log"},
    "relative-dir": {"ulogd2_log_dir": "ulog"},
    "bad-rotate-size": {"ulogd2_logrotate_size": "lots"},
}
VALIDATION_TASKS = ("Validating arguments against arg spec", "Check ")


def node_state(host) -> str:
    """Checksums of the files the role writes, and the config backups that exist."""
    checksums = host.check_output(f"sha256sum {WATCHED}")
    backups = host.check_output("find /etc -maxdepth 1 -name 'ulogd.conf*' | sort")
    return f"{checksums}\n{backups}"


@pytest.fixture(scope="module")
def bad_runs(host, tmp_path_factory) -> dict[str, Any]:
    """Run playbooks/ulogd.yml once for all cases; return node state before/after and the report."""
    work = tmp_path_factory.mktemp("bad-variables")
    hosts = {
        case: {
            "ansible_host": NODE,
            "ansible_connection": "containers.podman.podman",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,
            **variables,
        }
        for case, variables in BAD_VARIABLES.items()
    }
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps({"lab": {"hosts": hosts}}))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_FORKS": str(len(hosts)),
    }
    before = node_state(host)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            str(inventory),
            str(PROJECT / "playbooks" / "ulogd.yml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    return {
        "before": before,
        "after": node_state(host),
        "report": json.loads(result.stdout),
    }


def first_failure(report: dict[str, Any], case: str) -> tuple[str, dict[str, Any]]:
    for play in report["plays"]:
        for task in play["tasks"]:
            outcome = task["hosts"].get(case)
            if outcome and outcome.get("failed"):
                return task["task"]["name"], outcome
    pytest.fail(f"{case}: no task failed")


@pytest.mark.parametrize("case", list(BAD_VARIABLES))
def test_bad_variable_fails_in_validation_naming_it(bad_runs, case):
    report = bad_runs["report"]
    task_name, outcome = first_failure(report, case)
    assert any(marker in task_name for marker in VALIDATION_TASKS), task_name
    (variable,) = BAD_VARIABLES[case]
    messages = [outcome.get("msg", "")] + [
        item.get("msg", "") for item in outcome.get("results", []) if item.get("failed")
    ]
    assert any(variable in str(message) for message in messages), outcome
    assert report["stats"][case]["changed"] == 0


def test_bad_variables_leave_the_node_unchanged(bad_runs):
    assert bad_runs["after"] == bad_runs["before"]
