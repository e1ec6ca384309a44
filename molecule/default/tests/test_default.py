"""The tutorial's outcomes in the lab, checked with curl and the node's ulogd2 log.

These tests do not trust the role's report: they curl from the pods' network namespaces
themselves and read /var/log/ulog/syslogemu.log. A blocked probe must leave the pod chain's
unprefixed drop line (SRC, DST, DPT, PROTO); an allowed probe must leave none, which is shown
by a blocked "marker" probe sent afterwards: once the marker's line is in, any line for the
allowed probe would be too (one ulogd2 process writes both, in order). The pods' netns and IPs
come from the lab's own description, lab.json.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from lab_testinfra import LOG, artifacts_dir, lines_since, log_size
from lab_testinfra import flow_lines as port_flow_lines

DEADLINE_SECONDS = 10.0
PORT = 80
SAMPLE1_NGINX = "sample1/nginx"
SAMPLE1_CLIENT = "sample1/client"
SAMPLE2_NGINX = "sample2/nginx"
SAMPLE2_CLIENT = "sample2/client"
MONITORING = "cattle-monitoring-system/prometheus"
MARKER = (SAMPLE1_CLIENT, SAMPLE2_CLIENT)


@pytest.fixture(scope="module")
def pods() -> dict[str, dict[str, Any]]:
    lab = json.loads((artifacts_dir() / "lab" / "lab.json").read_text())
    return {f"{pod['namespace']}/{pod['name']}": pod for pod in lab["pods"]}


def is_pod_chain_line(line: str) -> bool:
    """The pod chain's NFLOG rule has no prefix: `Mon dd hh:mm:ss host  IN=...`."""
    words = line.split()
    return len(words) > 4 and words[4].startswith("IN=")


def flow_lines(lines: list[str], source: dict[str, Any], destination: dict[str, Any]) -> list[str]:
    return port_flow_lines(lines, source, destination, PORT)


def curl(host: Any, source: dict[str, Any], destination: dict[str, Any]) -> int:
    result = host.run(
        f"ip netns exec {source['netns']} curl --silent --output /dev/null "
        f"--connect-timeout 2 --max-time 3 http://{destination['ip']}:{PORT}/"
    )
    return int(result.rc)


def wait_for_drop_line(
    host: Any, offset: int, source: dict[str, Any], destination: dict[str, Any]
) -> list[str]:
    """Poll the log until the flow's pod-chain line arrives; fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        lines = lines_since(host, offset)
        if any(is_pod_chain_line(line) for line in flow_lines(lines, source, destination)):
            return lines
        if time.monotonic() > deadline:
            pytest.fail(
                f"no drop line SRC={source['ip']} DST={destination['ip']} DPT={PORT} in {LOG} "
                f"after {DEADLINE_SECONDS} s; new lines: {lines}"
            )
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("source", "destination"),
    [(SAMPLE1_NGINX, SAMPLE2_NGINX), (SAMPLE2_NGINX, SAMPLE1_NGINX)],
)
def test_other_namespace_is_blocked_and_logged(host, pods, source, destination):
    offset = log_size(host)
    assert curl(host, pods[source], pods[destination]) == 7, "kube-router REJECTs: curl exit 7"
    lines = wait_for_drop_line(host, offset, pods[source], pods[destination])
    logged = flow_lines(lines, pods[source], pods[destination])
    assert any(is_pod_chain_line(line) for line in logged)


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        (SAMPLE1_CLIENT, SAMPLE1_NGINX),
        (SAMPLE2_CLIENT, SAMPLE2_NGINX),
        (MONITORING, SAMPLE1_NGINX),
        (MONITORING, SAMPLE2_NGINX),
    ],
)
def test_allowed_connection_succeeds_and_leaves_no_drop_line(host, pods, source, destination):
    offset = log_size(host)
    assert curl(host, pods[source], pods[destination]) == 0
    marker_source, marker_destination = (pods[name] for name in MARKER)
    assert curl(host, marker_source, marker_destination) == 7
    lines = wait_for_drop_line(host, offset, marker_source, marker_destination)
    logged = flow_lines(lines, pods[source], pods[destination])
    assert not [line for line in logged if is_pod_chain_line(line)], logged


def test_the_roles_report_is_ok_and_covers_the_tutorials_pairs():
    report = json.loads((artifacts_dir() / "report.json").read_text())
    assert report["ok"] is True, report["summary"]
    rows = {(row["from"], row["to"], row["port"]): row for row in report["rows"]}
    blocked = rows[(SAMPLE1_NGINX, SAMPLE2_NGINX, PORT)]
    assert (blocked["expected"], blocked["observed"], blocked["logged"]) == (
        "blocked",
        "blocked",
        True,
    )
    allowed = rows[(MONITORING, SAMPLE1_NGINX, PORT)]
    assert (allowed["expected"], allowed["observed"], allowed["logged"]) == (
        "allowed",
        "allowed",
        False,
    )
    assert "\nOK\n" in (artifacts_dir() / "report.txt").read_text()
