"""Helpers for the ulogd scenario's tests: poll with a deadline, match log lines to a connection."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

NFLOG_GROUP = 100
LOGEMU_FILE = "/var/log/ulog/syslogemu.log"
JSON_FILE = "/var/log/ulog/ulogd.json"
RULE_COMMENT = "k3s-netpol-ulogd-verify"


def poll(read: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Return the first truthy value of read() before the deadline, else fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"nothing after {timeout} s polling {read.__doc__ or read}")
        time.sleep(interval)


@dataclass(frozen=True)
class BlockedConnection:
    source: str
    destination: str
    source_port: int
    destination_port: int

    def logemu_fields(self, line: str) -> dict[str, str]:
        return dict(
            field.split("=", 1) for field in line.split() if "=" in field and field[0].isupper()
        )

    def matches_logemu(self, line: str) -> bool:
        fields = self.logemu_fields(line)
        return (
            fields.get("SRC") == self.source
            and fields.get("DST") == self.destination
            and fields.get("PROTO") == "TCP"
            and fields.get("SPT") == str(self.source_port)
            and fields.get("DPT") == str(self.destination_port)
        )

    def matches_json(self, record: dict[str, Any]) -> bool:
        return (
            record.get("src_ip") == self.source
            and record.get("dest_ip") == self.destination
            and record.get("ip.protocol") == 6
            and record.get("src_port") == self.source_port
            and record.get("dest_port") == self.destination_port
        )


def logemu_lines(host: Any, path: str = LOGEMU_FILE) -> list[str]:
    return [line for line in host.file(path).content_string.splitlines() if line.strip()]


def json_records(host: Any, path: str = JSON_FILE) -> list[dict[str, Any]]:
    return [json.loads(line) for line in host.file(path).content_string.splitlines() if line]
