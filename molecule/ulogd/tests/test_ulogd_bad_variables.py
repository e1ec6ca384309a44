"""Bad role variables fail before anything changes, and the error names the variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[3]
NODE = "k3s-netpol-ulogd"
WATCHED = "/etc/ulogd.conf /etc/logrotate.d/ulogd2 /etc/systemd/system/ulogd2.service.d/*"


def node_state(host) -> str:
    """Checksums of the files the role writes, and the list of config backups."""
    checksums = host.check_output(f"sha256sum {WATCHED}")
    backups = host.check_output("ls -1 /etc | grep -c '^ulogd.conf' || true")
    return f"{checksums}\n{backups}"


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"ulogd2_nflog_group": 65536}, "ulogd2_nflog_group"),
        ({"ulogd2_nflog_group": -1}, "ulogd2_nflog_group"),
        ({"ulogd2_nflog_group": "one hundred"}, "ulogd2_nflog_group"),
        ({"ulogd2_outputs": ["logemu", "pcap"]}, "ulogd2_outputs"),
        ({"ulogd2_logemu_file": "var/log/ulog/syslogemu.log"}, "ulogd2_logemu_file"),
        ({"ulogd2_log_dir": "ulog"}, "ulogd2_log_dir"),
    ],
    ids=[
        "group-too-big",
        "group-negative",
        "group-not-int",
        "unknown-output",
        "relative-file",
        "relative-dir",
    ],
)
def test_bad_variable_fails_early_naming_it(host, tmp_path, variables, named):
    inventory = tmp_path / "inventory.json"
    inventory.write_text(
        json.dumps(
            {
                "lab": {
                    "hosts": {
                        NODE: {
                            "ansible_connection": "containers.podman.podman",
                            "ansible_python_interpreter": "/usr/bin/python3",
                            "ansible_become": False,
                        }
                    }
                }
            }
        )
    )
    extra_vars = tmp_path / "bad.json"
    extra_vars.write_text(json.dumps(variables))
    before = node_state(host)
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
    }
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            str(inventory),
            "-e",
            f"@{extra_vars}",
            str(PROJECT / "playbooks" / "ulogd.yml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert named in output, output
    assert "changed=0" in output, output
    assert node_state(host) == before
