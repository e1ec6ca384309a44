"""Run every probe of a matrix in parallel on this node; print one JSON line per probe.

The netpol_verify role runs it as `python3 -c` with the job as JSON on stdin:
  transport: "lab" (curl inside the source pod's network namespace) or "kubectl" (curl through
             `kubectl exec` into the source pod); kubectl: that command, as a list of words
  pods:      the lab's pods ({namespace, name, ip, netns}) or Kubernetes Pod objects
  probes:    [{from, to, port, protocol}]; connect_timeout, max_time (seconds); parallel (count)
Each output line: from, to, port, protocol, connected (true, false, or null when the probe
itself failed), exit_code, http_code, seconds, error.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# curl's exit codes: 7 could not connect (kube-router's REJECT), 28 timed out (a DROP).
BLOCKED_EXIT_CODES = frozenset({7, 28})


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


def main() -> None:
    job = json.load(sys.stdin)
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
        for result in pool.map(lambda item: probe(job, pods, item), job["probes"]):
            sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")


main()
