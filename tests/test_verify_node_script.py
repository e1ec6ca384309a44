"""The node side of netpol_verify (roles/netpol_verify/files/netpol_verify_node.py), run as the
role runs it: `python3 -c <script>` with a JSON job on stdin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).parents[1] / "roles/netpol_verify/files/netpol_verify_node.py"
PODS = {"a/client": "10.99.0.2", "b/server": "10.99.0.3"}
BLOCKED = [{"from": "a/client", "to": "b/server", "port": 80, "protocol": "TCP", "allowed": False}]


def logemu(dpt: int, prefix: str = "") -> str:
    return (
        f"Nov 27 13:40:01 node1 {prefix} IN=cni0 OUT=cni0 SRC=10.99.0.2 DST=10.99.0.3 LEN=60 "
        f"TOS=00 PREC=0x00 TTL=64 ID=1 DF PROTO=TCP SPT=40000 DPT={dpt} SEQ=1 ACK=0 "
        "WINDOW=64240 SYN URGP=0 MARK=0\n"
    )


def run_script_process(job: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.read_text()],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_script(job: dict[str, Any]) -> dict[str, Any]:
    done = run_script_process(job)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def log_job(path: Path, offset: int | None, deadline: float) -> dict[str, Any]:
    return {
        "probe": None,
        "log": {
            "path": str(path),
            "offset": offset,
            "node": "node1",
            "probes": BLOCKED,
            "pod_ips": PODS,
            "pod_nodes": {"a/client": "node1", "b/server": "node1"},
            "deadline": deadline,
            "interval": 0.02,
        },
    }


def test_waits_for_the_pod_chain_line_written_later(tmp_path: Path) -> None:
    log = tmp_path / "syslogemu.log"
    log.write_text(logemu(80))
    offset = log.stat().st_size

    def write_later() -> None:
        time.sleep(0.3)
        with log.open("a") as stream:
            stream.write(logemu(80, "DROP by policy b/deny-by-default"))
            stream.flush()
            time.sleep(0.2)
            stream.write(logemu(80))

    writer = threading.Thread(target=write_later)
    writer.start()
    result = run_script(log_job(log, offset, deadline=20))
    writer.join()
    log_result = result["log"]
    assert log_result["missing"] == []
    assert log_result["start"] == offset
    assert log_result["text"] == logemu(80, "DROP by policy b/deny-by-default") + logemu(80)
    assert log_result["waited"] < 20


def test_another_port_is_not_the_probes_line(tmp_path: Path) -> None:
    log = tmp_path / "syslogemu.log"
    log.write_text(logemu(8080))
    started = time.monotonic()
    result = run_script(log_job(log, 0, deadline=0.5))
    assert time.monotonic() - started >= 0.5
    assert result["log"]["missing"] == [["10.99.0.2", "10.99.0.3", "80", "TCP"]]
    assert result["results"] == []


def test_a_policy_line_alone_ends_the_wait(tmp_path: Path) -> None:
    # The pod chain's bucket may be empty (10/minute, burst 10): its line would never come.
    log = tmp_path / "syslogemu.log"
    log.write_text(logemu(80, "DROP by policy b/deny-by-default"))
    result = run_script(log_job(log, 0, deadline=20))
    assert result["log"]["missing"] == []
    assert result["log"]["waited"] < 5


def test_a_probe_is_waited_for_on_the_nodes_it_names_only(tmp_path: Path) -> None:
    log = tmp_path / "syslogemu.log"
    log.write_text("")
    job = log_job(log, 0, deadline=20)
    job["log"]["probes"] = [dict(BLOCKED[0], nodes=["node2"])]
    started = time.monotonic()
    assert run_script(job)["log"]["missing"] == []
    job["log"]["probes"] = [dict(BLOCKED[0], nodes=["node1"])]
    job["log"]["quiet"] = 0.3
    result = run_script(job)["log"]
    assert result["missing"] == [["10.99.0.2", "10.99.0.3", "80", "TCP"]]
    # A quiet log ends the wait long before the deadline.
    assert time.monotonic() - started < 10


def test_offset_none_measures_the_log_before_probing_and_rotation_reads_from_the_start(
    tmp_path: Path,
) -> None:
    log = tmp_path / "syslogemu.log"
    log.write_text(logemu(80))
    measured = run_script(log_job(log, None, deadline=0))["log"]
    assert (measured["start"], measured["text"]) == (log.stat().st_size, "")
    rotated = run_script(log_job(log, 10**6, deadline=5))["log"]
    assert rotated["start"] == 0
    assert rotated["missing"] == []


def test_missing_log_file_fails_naming_it(tmp_path: Path) -> None:
    done = run_script_process(log_job(tmp_path / "absent.log", None, deadline=0))
    assert done.returncode != 0
    assert "absent.log: no such file" in done.stderr


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("curl"),
    reason="needs root, iproute2 and curl",
)
def test_lab_probes_run_in_the_source_netns_and_tell_connected_from_refused() -> None:
    suffix = uuid.uuid4().hex[:6]
    client, server = f"vt-client-{suffix}", f"vt-server-{suffix}"
    _ip("netns", "add", client)
    _ip("netns", "add", server)
    listener = None
    try:
        _ip(
            "link",
            "add",
            f"vtc{suffix}",
            "netns",
            client,
            "type",
            "veth",
            "peer",
            "name",
            f"vts{suffix}",
            "netns",
            server,
        )
        for netns, link, address in ((client, "vtc", "10.99.0.2"), (server, "vts", "10.99.0.3")):
            _ip("-n", netns, "addr", "add", f"{address}/24", "dev", f"{link}{suffix}")
            _ip("-n", netns, "link", "set", f"{link}{suffix}", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
        listener = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                server,
                sys.executable,
                "-m",
                "http.server",
                "8080",
                "--bind",
                "10.99.0.3",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pods = [
            {"namespace": "a", "name": "client", "ip": "10.99.0.2", "netns": client},
            {"namespace": "b", "name": "server", "ip": "10.99.0.3", "netns": server},
        ]
        probes = [
            {"from": "a/client", "to": "b/server", "port": port, "protocol": "TCP"}
            for port in (8080, 81)
        ]
        job = {
            "probe": {
                "transport": "lab",
                "kubectl": [],
                "pods": pods,
                "probes": probes,
                "connect_timeout": 1,
                "max_time": 2,
                "parallel": 4,
            },
            "log": None,
        }
        deadline = time.monotonic() + 15
        while True:
            results = run_script(job)["results"]
            if results[0]["connected"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [(r["port"], r["connected"], r["exit_code"]) for r in results] == [
            (8080, True, 0),
            (81, False, 7),
        ]
        assert results[0]["http_code"] in {"200", "404"}
    finally:
        if listener is not None:
            listener.terminate()
            listener.wait(timeout=10)
        for netns in (client, server):
            subprocess.run(["ip", "netns", "delete", netns], check=False)


def test_the_plan_names_the_judging_node_of_an_egress_block(tmp_path: Path) -> None:
    log = tmp_path / "syslogemu.log"
    log.write_text("")
    job = log_job(log, 0, deadline=20)
    plan = [dict(BLOCKED[0], evidence={"nodes": ["node2"], "chains": [], "policies": []})]
    job["log"]["plan"] = plan
    assert run_script(job)["log"]["missing"] == []
    plan[0]["evidence"]["nodes"] = ["node1"]
    job["log"]["quiet"] = 0.3
    assert run_script(job)["log"]["missing"] == [["10.99.0.2", "10.99.0.3", "80", "TCP"]]
