"""`k3s-netpol logs`: output modes, filters, exit codes, stderr report, --inventory."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from k3s_netpol.cli import main

DATA = Path(__file__).parent / "data" / "logs"
LOG = str(DATA / "syslogemu.log")
SNAPSHOT = ["--snapshot", str(DATA / "pods.json"), "--snapshot", str(DATA / "policies.yaml")]


def run(*args: str):
    return CliRunner().invoke(main, ["logs", *args])


def test_json_prints_one_object_per_drop_event_with_pods_and_expectation():
    result = run(LOG, "--json", *SNAPSHOT)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 4
    blocked = next(event for event in events if event["lines"] == 3)
    assert blocked["policy"] == "tenant-b/deny-by-default"
    assert blocked["real"] is True
    assert (blocked["source_pod"], blocked["destination_pod"]) == (
        "tenant-a/client",
        "tenant-b/web",
    )
    flagged = [event for event in events if event["flagged"]]
    assert [event["source_pod"] for event in flagged] == ["monitoring/prometheus"]
    assert "2 garbled" in result.stderr


def test_default_table_and_summary():
    table = run(LOG, *SNAPSHOT)
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].startswith("TIME")
    assert "false drop (model allows)" in table.stdout
    summary = run(LOG, "--summary", "--top", "1", *SNAPSHOT)
    rows = summary.stdout.splitlines()
    assert rows[0].split()[:3] == ["EVENTS", "REAL", "FALSE"]
    assert len(rows) == 2
    assert "tenant-a/client" in rows[1]
    assert rows[1].split()[0] == "2"


def test_summary_as_json():
    result = run(LOG, "--summary", "--json")
    flows = [json.loads(line) for line in result.stdout.splitlines()]
    assert flows[0]["events"] == 2
    assert flows[0]["destination"] == "10.42.0.20"


def test_filters_narrow_the_events():
    result = run(LOG, "--json", "--policy", "tenant-b/allow-monitoring")
    assert [json.loads(line)["lines"] for line in result.stdout.splitlines()] == [3]
    result = run(LOG, "--json", "--namespace", "monitoring", *SNAPSHOT)
    assert len(result.stdout.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "name at least one log FILE"),
        (("/nonexistent/syslogemu.log",), "/nonexistent/syslogemu.log"),
        ((LOG, "--since", "yesterday"), "yesterday"),
        ((LOG, "--pod", "tenant-a/client"), "--snapshot"),
        ((LOG, "--follow", "--summary"), "--follow"),
        ((LOG, "--top", "0"), "--top"),
        ((LOG, "--summary", "--jobs", "0"), "--jobs"),
        ((LOG, "--snapshot", str(DATA / "README.md")), "README.md"),
    ],
)
def test_usage_errors_exit_2_and_say_what_is_wrong(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_inventory_gathers_every_node_through_ansible(tmp_path):
    node_logs = tmp_path / "node-a-logs"
    node_logs.mkdir()
    (node_logs / "syslogemu.log").write_text((DATA / "syslogemu.log").read_text())
    (node_logs / "other.log").write_text("not gathered\n")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "k3s_cluster:\n  hosts:\n    node-a:\n      ansible_connection: local\n"
        "      ansible_become: false\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
        f"      gather_logs_dir: {node_logs}\n"
    )
    os.environ.setdefault("ANSIBLE_CONFIG", str(Path(__file__).parent.parent / "ansible.cfg"))
    result = run("--inventory", str(inventory), "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 4
    assert all("/node-a/syslogemu.log:" in event["origins"][0] for event in events)
    assert "in 1 files" in result.stderr


def test_a_failed_gather_exits_3(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "k3s_cluster:\n  hosts:\n    node-a:\n      ansible_connection: local\n"
        f"      ansible_become: false\n      ansible_python_interpreter: {sys.executable}\n"
        "      gather_logs_patterns: not-a-list\n"
    )
    result = run("--inventory", str(inventory))
    assert result.exit_code == 3
    assert "gathering logs" in result.output
