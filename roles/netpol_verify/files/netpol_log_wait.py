"""Wait until the drop lines of the blocked probes reach a ulogd2 log; print what was added.

The netpol_verify role runs it as `python3 -c` with the job as JSON on stdin:
  path:     the LOGEMU (or JSON lines) file ulogd2 writes on this node
  offset:   its size before the probes ran (a smaller file means it was rotated: read it all)
  node:     this node's name; probes: the blocked probes [{from, to, port, protocol}];
  pod_ips, pod_nodes: "ns/name" -> IP and -> node. The probes whose destination pod is on this
            node must leave their pod-chain (unprefixed) drop line: SRC, DST, DPT, PROTO.
  deadline: seconds to wait at most; interval: seconds between reads
Prints one JSON object: start, end (byte offsets read), missing (needed flows not seen),
waited (seconds) and text (the lines added since offset).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

IP_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 132: "SCTP"}


def logemu_flow(line: str) -> tuple[str, str, str, str] | None:
    words = line.split()
    # "Mon dd hh:mm:ss host IN=...": a prefix would sit between the host and IN=.
    if len(words) < 5 or not words[4].startswith("IN="):
        return None
    fields = dict(word.split("=", 1) for word in words[4:] if "=" in word)
    try:
        return fields["SRC"], fields["DST"], fields["DPT"], fields["PROTO"]
    except KeyError:
        return None


def json_flow(line: str) -> tuple[str, str, str, str] | None:
    try:
        record: dict[str, Any] = json.loads(line)
    except ValueError:
        return None
    if record.get("oob.prefix") or "dest_port" not in record:
        return None
    protocol = record.get("ip.protocol")
    name = IP_PROTOCOLS.get(protocol, str(protocol)) if isinstance(protocol, int) else protocol
    return (
        str(record.get("src_ip")),
        str(record.get("dest_ip")),
        str(record["dest_port"]),
        str(name),
    )


def main() -> None:
    job = json.load(sys.stdin)
    path = job["path"]
    ips, nodes = job["pod_ips"], job["pod_nodes"]
    needed = {
        (ips[probe["from"]], ips[probe["to"]], str(probe["port"]), probe["protocol"].upper())
        for probe in job["probes"]
        if nodes.get(probe["to"]) == job["node"]
    }
    started = time.monotonic()
    deadline = started + float(job["deadline"])
    try:
        start = int(job["offset"]) if os.path.getsize(path) >= int(job["offset"]) else 0
    except FileNotFoundError:
        sys.exit(f"{path}: no such file: is ulogd2 running and writing it?")
    chunks: list[bytes] = []
    position = start
    pending = b""
    while True:
        with open(path, "rb") as stream:
            stream.seek(position)
            data = stream.read()
        position += len(data)
        chunks.append(data)
        complete, _, pending = (pending + data).rpartition(b"\n")
        for raw in complete.splitlines():
            line = raw.decode("utf-8", "replace")
            flow = json_flow(line) if line.startswith("{") else logemu_flow(line)
            if flow is not None:
                needed.discard(flow)
        if not needed or time.monotonic() >= deadline:
            break
        time.sleep(float(job["interval"]))
    result = {
        "start": start,
        "end": position,
        "missing": sorted(list(flow) for flow in needed),
        "waited": round(time.monotonic() - started, 3),
        "text": b"".join(chunks).decode("utf-8", "replace"),
    }
    sys.stdout.write(json.dumps(result) + "\n")


main()
