"""The node's side of netpol_verify: run a probe matrix, and/or wait for drop lines in a log.

The role runs it as `python3 -c` with one JSON job on stdin and prints one JSON object:
  probe: {transport, kubectl, pods, probes, connect_timeout, max_time, parallel} or null.
         transport "lab" curls inside the source pod's network namespace, "kubectl" through
         `kubectl exec` (kubectl: that command as a list of words). pods: the lab's pods
         ({namespace, name, ip, netns}) or Kubernetes Pod objects. probes: [{from, to, port,
         protocol}], all run at once, at most `parallel` at a time.
  log:   {path, offset, node, probes, plan, pod_ips, pod_nodes, deadline, quiet, interval}
         or null.
         offset null: take the log's size now, before the probes. Then wait until each
         blocked probe judged on `node` left a line for SRC, DST, DPT, PROTO (the pod chain's
         or a `DROP by policy` one), for at most `deadline` seconds, and no longer than `quiet`
         seconds without a new line once the wait began (a line its chain's rate limit held
         back never comes). A probe is judged on the nodes its `nodes` lists, else on those
         its entry in `plan` (`k3s-netpol explain --all`'s probes) lists under evidence.nodes
         (the source's node when its egress blocks), else on its destination pod's node.
         Once all have a line, reading goes on until the log has been still for `settle`
         seconds (default 0.3, at most `quiet`).
Output: {"results": [{from, to, port, protocol, connected (true, false, or null when the
probe itself failed), exit_code, http_code, started (epoch seconds), seconds, error}], "log":
{node, start, end, missing, waited, text (the lines the log gained)} or null}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# curl's exit codes: 7 could not connect (kube-router's REJECT), 28 timed out (a DROP).
BLOCKED_EXIT_CODES = frozenset({7, 28})
IP_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 132: "SCTP"}
SETTLE_SECONDS = 0.3


def pod_entry(pod: dict[str, Any]) -> dict[str, Any]:
    metadata = pod.get("metadata")
    if metadata is None:
        return {key: pod.get(key) for key in ("namespace", "name", "ip", "netns")}
    status = pod.get("status") or {}
    return {
        "namespace": metadata["namespace"],
        "name": metadata["name"],
        "ip": status.get("podIP"),
        "netns": None,
    }


def url(ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/"


def command_of(job: dict[str, Any], source: dict[str, Any], target: str) -> list[str]:
    curl = ["curl", "--silent", "--show-error", "--output", "/dev/null"]
    curl += ["--write-out", "%{http_code}", "--connect-timeout", str(job["connect_timeout"])]
    curl += ["--max-time", str(job["max_time"]), target]
    if job["transport"] == "lab":
        return ["ip", "netns", "exec", source["netns"], *curl]
    return [*job["kubectl"], "exec", "-n", source["namespace"], source["name"], "--", *curl]


def probe(
    job: dict[str, Any], pods: dict[str, dict[str, Any]], item: dict[str, Any]
) -> dict[str, Any]:
    command = command_of(job, pods[item["from"]], url(pods[item["to"]]["ip"], int(item["port"])))
    result = dict(item, connected=None, exit_code=None, http_code=None, error=None)
    result["started"] = time.time()
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=float(job["max_time"]) + 30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        result["error"] = str(error)
    else:
        result["exit_code"] = done.returncode
        result["http_code"] = done.stdout.strip()[-3:] or None
        if done.returncode == 0:
            result["connected"] = True
        elif done.returncode in BLOCKED_EXIT_CODES:
            result["connected"] = False
        else:
            lines = done.stderr.strip().splitlines()
            result["error"] = lines[-1] if lines else f"exit code {done.returncode}"
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def run_probes(job: dict[str, Any]) -> list[dict[str, Any]]:
    pods = {}
    for pod in job["pods"]:
        entry = pod_entry(pod)
        pods[f"{entry['namespace']}/{entry['name']}"] = entry
    named = {key for item in job["probes"] for key in (item["from"], item["to"])}
    unknown = sorted(key for key in named if key not in pods)
    without_ip = sorted(key for key in named if key in pods and not pods[key]["ip"])
    if unknown or without_ip:
        sys.exit(f"pods not found: {unknown}; pods without an IP: {without_ip}")
    with ThreadPoolExecutor(max_workers=max(1, int(job["parallel"]))) as pool:
        return list(pool.map(lambda item: probe(job, pods, item), job["probes"]))


def logemu_flow(line: str) -> tuple[str, str, str, str] | None:
    words = line.split()
    # "Mon dd hh:mm:ss host [prefix] IN=...": the packet's fields start at IN=.
    start = next((index for index, word in enumerate(words) if word.startswith("IN=")), None)
    if start is None:
        return None
    fields = dict(word.split("=", 1) for word in words[start:] if "=" in word)
    try:
        return fields["SRC"], fields["DST"], fields["DPT"], fields["PROTO"]
    except KeyError:
        return None


def json_flow(line: str) -> tuple[str, str, str, str] | None:
    try:
        record: dict[str, Any] = json.loads(line)
    except ValueError:
        return None
    if "dest_port" not in record:
        return None
    protocol = record.get("ip.protocol")
    name = IP_PROTOCOLS.get(protocol, str(protocol)) if isinstance(protocol, int) else protocol
    return (
        str(record.get("src_ip")),
        str(record.get("dest_ip")),
        str(record["dest_port"]),
        str(name),
    )


def log_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        sys.exit(f"{path}: no such file: is ulogd2 running and writing it?")


def wait_for_lines(job: dict[str, Any], offset: int) -> dict[str, Any]:
    path = job["path"]
    ips, nodes = job["pod_ips"], job["pod_nodes"]
    # `plan` (explain --all's probes) gives each probe's judging nodes when the probe has none.
    planned = {
        (probe["from"], probe["to"], str(probe["port"]), probe["protocol"].upper()): probe[
            "evidence"
        ]["nodes"]
        for probe in job.get("plan") or ()
    }
    needed = set()
    for probe in job["probes"]:
        key = (probe["from"], probe["to"], str(probe["port"]), probe["protocol"].upper())
        judging = probe.get("nodes", planned.get(key, [nodes.get(probe["to"])]))
        if job["node"] in judging:
            needed.add((ips[key[0]], ips[key[1]], key[2], key[3]))
    started = time.monotonic()
    deadline = started + float(job["deadline"])
    quiet = float(job.get("quiet", job["deadline"]))
    settle = min(float(job.get("settle", SETTLE_SECONDS)), quiet)
    last_line = started
    start = offset if log_size(path) >= offset else 0
    chunks: list[bytes] = []
    position = start
    pending = b""
    while True:
        with open(path, "rb") as stream:
            stream.seek(position)
            data = stream.read()
        position += len(data)
        chunks.append(data)
        if data:
            last_line = time.monotonic()
        complete, _, pending = (pending + data).rpartition(b"\n")
        for raw in complete.splitlines():
            line = raw.decode("utf-8", "replace")
            flow = json_flow(line) if line.startswith("{") else logemu_flow(line)
            if flow is not None:
                needed.discard(flow)
        now = time.monotonic()
        if now >= deadline or now - last_line >= quiet:
            break
        # Once every probe has a line, the lines of the same packets still in flight (the pod
        # chain's after the policies') are read until the log is still for `settle` seconds.
        if not needed and now - last_line >= settle:
            break
        time.sleep(float(job["interval"]))
    return {
        "node": job["node"],
        "start": start,
        "end": position,
        "missing": sorted(list(flow) for flow in needed),
        "waited": round(time.monotonic() - started, 3),
        "text": b"".join(chunks).decode("utf-8", "replace"),
    }


def main() -> None:
    job = json.load(sys.stdin)
    log_job = job.get("log")
    offset = None
    if log_job is not None:
        offset = log_job["offset"]
        if offset is None:
            offset = log_size(log_job["path"])
    results = run_probes(job["probe"]) if job.get("probe") else []
    log = wait_for_lines(log_job, int(offset)) if log_job is not None else None
    sys.stdout.write(json.dumps({"results": results, "log": log}) + "\n")


main()
