"""Helpers the lab's Molecule testinfra tests share (molecule/default, molecule/multinode):
the artifacts directory and a node's ulogd2 log read from an offset. The scenarios put this
directory on the verifier's PYTHONPATH."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

LOG = "/var/log/ulog/syslogemu.log"


def artifacts_dir() -> Path:
    value = os.environ.get("K3S_NETPOL_ARTIFACTS_DIR")
    if not value:
        pytest.fail("K3S_NETPOL_ARTIFACTS_DIR is not set (molecule.yml sets it for the verifier)")
    return Path(value)


def log_size(host: Any) -> int:
    """The node's ulogd2 log size in bytes: the offset the next lines start at."""
    return int(host.check_output(f"stat --format=%s {LOG}"))


def lines_since(host: Any, offset: int) -> list[str]:
    lines: list[str] = host.check_output(f"tail --bytes=+{offset + 1} {LOG}").splitlines()
    return lines


def flow_lines(
    lines: list[str], source: dict[str, Any], destination: dict[str, Any], port: int
) -> list[str]:
    """The lines of TCP packets from ``source`` to ``destination``:``port`` (pods of lab.json)."""
    wanted = (f"SRC={source['ip']}", f"DST={destination['ip']}", f"DPT={port}", "PROTO=TCP")
    return [line for line in lines if all(field in line.split() for field in wanted)]
