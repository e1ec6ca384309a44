"""Fixtures for the ulogd scenario: a TCP port sent to NFLOG then rejected, and a blocked curl."""

from __future__ import annotations

import random
from typing import Any

import pytest
from ulogd_probe import NFLOG_GROUP, RULE_COMMENT, BlockedConnection


@pytest.fixture(scope="module")
def node_address(host: Any) -> str:
    """The container's own IPv4 address on its primary interface."""
    route = host.check_output("ip -4 -o route get 192.0.2.1")
    return route.split(" src ", 1)[1].split()[0]


@pytest.fixture(scope="module")
def blocked_port(host: Any) -> Any:
    """A TCP port whose packets go to NFLOG group 100 and are then rejected, removed afterwards."""
    port = random.randint(20000, 29999)
    rules = [
        f"-p tcp --dport {port} -m comment --comment {RULE_COMMENT} "
        f"-j NFLOG --nflog-group {NFLOG_GROUP}",
        f"-p tcp --dport {port} -m comment --comment {RULE_COMMENT} "
        "-j REJECT --reject-with tcp-reset",
    ]
    for position, rule in enumerate(rules, start=1):
        host.run_expect([0], f"iptables -I INPUT {position} {rule}")
    yield port
    for rule in rules:
        host.run_expect([0], f"iptables -D INPUT {rule}")
    assert RULE_COMMENT not in host.check_output("iptables -S INPUT")


@pytest.fixture
def connect_blocked(host: Any, node_address: str, blocked_port: int) -> Any:
    """Return a function that curls the blocked port from a fresh source port."""

    def connect() -> BlockedConnection:
        source_port = random.randint(40000, 49999)
        result = host.run(
            f"curl -sS --max-time 5 --local-port {source_port} "
            f"http://{node_address}:{blocked_port}/"
        )
        assert result.rc == 7, f"curl should be refused, got rc {result.rc}: {result.stderr}"
        return BlockedConnection(node_address, node_address, source_port, blocked_port)

    return connect
