"""Two lab nodes: which node's ulogd2 logs a blocked or allowed cross-node connection.

These tests do not trust the role's report: they curl from the pods' network namespaces on the
source pod's node and read both nodes' /var/log/ulog/syslogemu.log. The pods, their nodes and
each pod chain's policy jump order come from the lab's own description, lab.json. A flow's
lines are waited for on the node expected to judge it; the other node's log is read after a
blocked "marker" probe judged there has been logged (one ulogd2 writes in order), so "no line"
is not just "not yet".
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest
import testinfra
from lab_testinfra import LOG, artifacts_dir, flow_lines, lines_since, log_size

DEADLINE_SECONDS = 15.0
BLOCKED = 7  # curl: connection refused (kube-router REJECTs)


@pytest.fixture(scope="module")
def lab() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((artifacts_dir() / "lab" / "lab.json").read_text())
    return document


@pytest.fixture(scope="module")
def pods(lab: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{pod['namespace']}/{pod['name']}": pod for pod in lab["pods"]}


@pytest.fixture(scope="module")
def nodes(lab: dict[str, Any]) -> dict[str, Any]:
    return {node["name"]: testinfra.get_host(f"podman://{node['name']}") for node in lab["nodes"]}


def curl(
    nodes: dict[str, Any], source: dict[str, Any], destination: dict[str, Any], port: int
) -> int:
    result = nodes[source["node"]].run(
        f"ip netns exec {source['netns']} curl --silent --output /dev/null "
        f"--connect-timeout 3 --max-time 4 http://{destination['ip']}:{port}/"
    )
    return int(result.rc)


def wait_for_lines(
    host: Any, offset: int, source: dict[str, Any], destination: dict[str, Any], port: int
) -> list[str]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        found = flow_lines(lines_since(host, offset), source, destination, port)
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(
                f"no line SRC={source['ip']} DST={destination['ip']} DPT={port} in {LOG} on "
                f"{host.backend.get_hostname()} after {DEADLINE_SECONDS} s"
            )
        time.sleep(0.05)


def offsets(nodes: dict[str, Any]) -> dict[str, int]:
    return {name: log_size(host) for name, host in nodes.items()}


def quiet_on(
    nodes: dict[str, Any],
    pods: dict[str, dict[str, Any]],
    node: str,
    start: dict[str, int],
    source: dict[str, Any],
    destination: dict[str, Any],
    port: int,
) -> list[str]:
    """The flow's lines on ``node`` since ``start``, read after a marker judged on that node
    (a blocked connection between two of its own pods) has been logged there."""
    own = [pod for pod in pods.values() if pod["node"] == node]
    marker = next(
        (a, b)
        for a in own
        for b in own
        if a is not b
        and a["namespace"] != b["namespace"]
        and b["namespace"] == "sample2"
        and a["namespace"] == "sample1"
    )
    assert curl(nodes, marker[0], marker[1], 80) == BLOCKED
    wait_for_lines(nodes[node], start[node], marker[0], marker[1], 80)
    return flow_lines(lines_since(nodes[node], start[node]), source, destination, port)


def test_blocked_cross_node_ingress_is_logged_on_the_destinations_node_only(nodes, pods):
    source, destination = pods["sample1/nginx"], pods["sample2/nginx"]
    assert source["node"] != destination["node"], "the workloads should put them on two nodes"
    start = offsets(nodes)
    assert curl(nodes, source, destination, 80) == BLOCKED
    logged = wait_for_lines(
        nodes[destination["node"]], start[destination["node"]], source, destination, 80
    )
    assert all("IN=flannel.1" in line.split() for line in logged), logged
    assert not quiet_on(nodes, pods, source["node"], start, source, destination, 80)


def test_blocked_cross_node_egress_is_logged_on_the_sources_node_only(nodes, pods):
    source = pods["sample2/client"]
    destination = pods["cattle-monitoring-system/prometheus"]
    assert source["node"] != destination["node"], "the workloads should put them on two nodes"
    start = offsets(nodes)
    assert curl(nodes, source, destination, 9090) == BLOCKED
    logged = wait_for_lines(nodes[source["node"]], start[source["node"]], source, destination, 9090)
    assert all("OUT=flannel.1" in line.split() for line in logged), logged
    assert not quiet_on(nodes, pods, destination["node"], start, source, destination, 9090)


def test_same_node_allowed_connection_leaves_its_false_lines_twice_per_packet(nodes, pods):
    """sample1/traefik -> sample1/nginx (same namespace, same node): allowed by
    allow-same-namespace. Every policy the nginx chain jumps to before it leaves a false
    `DROP by policy` line, and the bridged packet passes the chain twice, so each such line is
    written twice with the same IP ID; nothing else is logged for the flow."""
    source, destination = pods["sample1/traefik"], pods["sample1/nginx"]
    assert source["node"] == destination["node"]
    allowing = "sample1/allow-same-namespace"
    jumps = destination["policy_jumps"]
    expected = jumps[: jumps.index(allowing)]
    start = offsets(nodes)
    assert curl(nodes, source, destination, 80) == 0
    logged = quiet_on(nodes, pods, source["node"], start, source, destination, 80)
    prefixes = Counter()
    ids = Counter()
    for line in logged:
        words = line.split()
        assert words[4] == "DROP", f"a pod-chain line for an allowed connection: {line}"
        prefixes[words[7]] += 1
        ids[next(word for word in words if word.startswith("ID="))] += 1
    assert dict(prefixes) == {key: 2 for key in expected}, (jumps, logged)
    assert set(ids.values()) <= {2 * len(expected)}, logged
