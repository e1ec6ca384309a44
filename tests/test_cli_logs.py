"""`k3s-netpol logs`: output modes, filters, exit codes, stderr report, --inventory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
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
        ((LOG, "--since", "999999d"), "too far back"),
        ((LOG, "--since", "2026-11-27T10:00", "--until", "2026-11-27T09:00"), "is after --until"),
        ((LOG, "--pod", "foo", *SNAPSHOT), "expected NAMESPACE/POD"),
        ((LOG, "--pod", "a/b/c", *SNAPSHOT), "expected NAMESPACE/POD"),
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


@pytest.mark.parametrize("mode", [(), ("--json",), ("--summary",)])
def test_a_gz_that_is_not_gzip_exits_2_naming_it(tmp_path, mode):
    fake = tmp_path / "syslogemu.log.2.gz"
    fake.write_bytes((DATA / "syslogemu.log").read_bytes())
    result = run(str(fake), *mode)
    assert result.exit_code == 2, result.output
    assert f"{fake}: not a gzip file" in result.stderr
    assert "garbled" not in result.stdout


@pytest.mark.parametrize("mode", [(), ("--json",), ("--summary",)])
def test_the_same_file_named_twice_is_read_once(tmp_path, mode):
    linked = tmp_path / "other-name.log"
    os.link(LOG, linked)
    once = run(LOG, *mode)
    twice = run(LOG, str(linked), LOG, *mode)
    assert twice.exit_code == 0, twice.output
    assert twice.stdout == once.stdout
    assert f"{linked} is the same file as {LOG}: read once" in twice.stderr
    assert "11 lines in 1 files" not in twice.stderr
    assert "8 lines in 1 files" in twice.stderr


@pytest.mark.parametrize("mode", [(), ("--json",)])
def test_impossible_addresses_and_ports_are_garbled_lines_not_drops(tmp_path, mode):
    lines = (DATA / "syslogemu.log").read_text().splitlines(keepends=True)[:3]
    bad = [
        lines[2].replace("SRC=10.42.1.10", "SRC=999.0.0.1"),
        lines[2].replace("DPT=80", "DPT=70000"),
    ]
    path = tmp_path / "syslogemu.log"
    path.write_text("".join(lines + bad))
    result = run(str(path), *mode)
    assert result.exit_code == 0, result.output
    assert "999.0.0.1" not in result.stdout
    assert "70000" not in result.stdout
    assert "2 garbled" in result.stderr
    assert "SRC='999.0.0.1' is not an IP address" in result.stderr
    assert "DPT=70000 is not a port" in result.stderr


def _big_log(tmp_path: Path, lines: int) -> Path:
    from benchmark_modules import bench_logs

    path = tmp_path / "big.log"
    bench_logs().write_synthetic(path, lines)
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "k3s_netpol", "logs", *args]


@pytest.mark.parametrize("mode", ["--json", "--table"])
def test_a_reader_that_goes_away_ends_it_quietly_with_141(tmp_path, mode):
    path = _big_log(tmp_path, 40_000)
    args = [str(path), "--json"] if mode == "--json" else [str(path), "--namespace", "tenant-a"]
    process = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()
    process.stdout.close()  # as `| head -n 1` does
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141, stderr
    assert b"Traceback" not in stderr
    assert b"Error" not in stderr


def test_ctrl_c_during_json_exits_130_saying_the_output_is_partial(tmp_path):
    path = _big_log(tmp_path, 200_000)
    process = subprocess.Popen(
        _cli(str(path), "--json", "--jobs", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    process.stdout.readline()  # it is writing events
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert b"interrupted (Ctrl-C): the output above is partial" in stderr
    assert b"Traceback" not in stderr


def test_follow_on_a_gz_reads_it_once_and_ends(tmp_path):
    import gzip

    packed = tmp_path / "syslogemu.log.1.gz"
    packed.write_bytes(gzip.compress((DATA / "syslogemu.log").read_bytes()))
    result = subprocess.run(
        _cli(str(packed), "--follow", "--json"), capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 4
