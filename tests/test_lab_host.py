"""A lab node built on the bare host: the node is a network namespace holding cni0 and the
compiled rules, each pod a namespace attached to it. Used by the kernel tests and the benchmark.

Nothing here touches the host's own network namespace: every link, rule and set lives in
namespaces named with a per-process prefix, all removed on close. The node side is set up by the
role's own helper (roles/netpol_lab/files/netpol_lab_node.py, run with --node-netns), so the
tests exercise the code the role runs. Pods serve TCP with a tiny Python server (the container
lab runs real nginx); probes are curl run inside the source pod's namespace.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from k3s_netpol.lab import CompiledCluster, CompiledLab, NodeSpec, write_compiled

ROOT = Path(__file__).resolve().parents[1]
NODE_HELPER = ROOT / "roles" / "netpol_lab" / "files" / "netpol_lab_node.py"
REQUIRED_TOOLS = (
    "ip",
    "bridge",
    "ipset",
    "iptables-restore",
    "iptables-save",
    "curl",
    "sysctl",
)
NODE_SYSCTLS = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.ipv4.ip_forward": "1",
    "net.ipv4.icmp_ratelimit": "0",
    "net.ipv4.icmp_msgs_per_sec": "100000",
    "net.ipv4.icmp_msgs_burst": "10000",
}
SERVER = r"""
import socket, sys, threading
listeners = []
for port in sys.argv[1:]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", int(port)))
    listener.listen(128)
    listeners.append(listener)
def serve(listener):
    while True:
        connection, _ = listener.accept()
        try:
            connection.recv(4096)
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        except OSError:
            pass
        finally:
            connection.close()
for listener in listeners:
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""
_COUNTER_LINE = re.compile(r"^\[(\d+):(\d+)\] -A (\S+) (.*)$")


def missing_requirements() -> str | None:
    """Why the kernel tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables, ipset)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} on PATH"
    return None


def require_root_tools() -> None:
    reason = missing_requirements()
    if reason:
        pytest.skip(f"lab kernel test skipped: {reason}")


def run(command: Sequence[str], stdin: str | None = None) -> str:
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: rc={result.returncode}: {result.stderr.strip()}")
    return result.stdout


class HostLab:
    """One lab node on the host, as network namespaces with a common name prefix."""

    def __init__(self, prefix: str, work_dir: Path, node: str = "node") -> None:
        self.prefix = prefix
        self.node = f"{prefix}{node}"
        self.work_dir = work_dir
        self.compiled_dir = work_dir / "compiled"
        self.state_dir = work_dir / "state"
        self.servers: dict[str, subprocess.Popen[str]] = {}
        self.lab: dict[str, Any] = {}
        run(["ip", "netns", "add", self.node])
        run(["ip", "-n", self.node, "link", "set", "lo", "up"])

    def helper(self, *args: str) -> dict[str, Any]:
        output = run([sys.executable, str(NODE_HELPER), *args, "--node-netns", self.node])
        result: dict[str, Any] = json.loads(output)
        return result

    def apply(self, compiled: CompiledLab) -> dict[str, Any]:
        """Write the compiled files, make the pods (idempotent) and load the rules."""
        write_compiled(compiled, self.compiled_dir)
        return self.apply_written(compiled)

    def apply_written(self, compiled: CompiledLab) -> dict[str, Any]:
        """Make the pods and load the rules of files already in ``compiled_dir``."""
        self.lab = dict(compiled.lab)
        sysctls = [f"--sysctl={key}={value}" for key, value in NODE_SYSCTLS.items()]
        pods = self.helper(
            "pods",
            str(self.compiled_dir / "lab.json"),
            "--state-dir",
            str(self.state_dir),
            *sysctls,
        )
        self.helper("load", str(self.compiled_dir))
        return pods

    def pods(self) -> list[dict[str, Any]]:
        return list(self.lab["pods"])

    def start_servers(self, deadline_seconds: float = 10.0) -> None:
        """One server per pod namespace on the pod's TCP ports; waits until each says ready."""
        started: dict[str, subprocess.Popen[str]] = {}
        for pod in self.pods():
            ports = sorted({str(p["port"]) for p in pod["ports"] if p["protocol"] == "TCP"})
            if not ports or pod["netns"] in self.servers:
                continue
            started[pod["netns"]] = self.servers[pod["netns"]] = subprocess.Popen(
                ["ip", "netns", "exec", pod["netns"], sys.executable, "-c", SERVER, *ports],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        deadline = time.monotonic() + deadline_seconds
        for netns, process in started.items():
            assert process.stdout is not None
            remaining = max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([process.stdout], [], [], remaining)
            line = process.stdout.readline() if readable else ""
            if line.strip() != "ready":
                process.kill()
                error = process.stderr.read() if process.stderr else ""
                raise RuntimeError(f"server in {netns} did not start: {line!r} {error}")

    @staticmethod
    def curl(source_netns: str, urls: Sequence[str]) -> dict[str, bool]:
        """One curl in the source pod's namespace fetching every URL in parallel; True where
        HTTP 200 came back."""
        arguments: list[str] = []
        for url in urls:
            arguments += ["-o", "/dev/null", url]
        result = subprocess.run(
            [
                *("ip", "netns", "exec", source_netns, "curl", "-s", "--parallel"),
                *("--parallel-max", "64", "--connect-timeout", "3", "--max-time", "5"),
                *("-w", "%{url} %{http_code}\\n", *arguments),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        codes = dict(line.split() for line in result.stdout.splitlines() if line.strip())
        return {url: codes.get(url) == "200" for url in urls}

    def probe(self, probes: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, int, str], bool]:
        """curl every TCP probe from its source pod's namespace (one curl per source pod)."""
        return probe_pods(self.pods(), probes)

    def counters(self) -> list[tuple[int, str, str]]:
        """(packets, chain, rule text) of every rule in the node's filter table."""
        output = run(["ip", "netns", "exec", self.node, "iptables-save", "-c", "-t", "filter"])
        rules = []
        for line in output.splitlines():
            match = _COUNTER_LINE.match(line)
            if match:
                rules.append((int(match.group(1)), match.group(3), match.group(4)))
        return rules

    def close(self) -> None:
        for process in self.servers.values():
            process.kill()
            process.wait()
        self.servers.clear()
        if self.lab:
            lab_json = self.compiled_dir / "lab.json"
            run(
                [
                    sys.executable,
                    str(NODE_HELPER),
                    "down",
                    str(lab_json),
                    "--node-netns",
                    self.node,
                    "--state-dir",
                    str(self.state_dir),
                ]
            )
        run(["ip", "netns", "del", self.node])


def probe_pods(
    pods: Sequence[Mapping[str, Any]], probes: Iterable[Mapping[str, Any]]
) -> dict[tuple[str, str, int, str], bool]:
    """curl every TCP probe from its source pod's namespace (one curl per source pod)."""
    by_key = {f"{p['namespace']}/{p['name']}": p for p in pods}
    urls: dict[tuple[str, str, int, str], str] = {}
    by_source: dict[str, list[str]] = {}
    for probe in probes:
        if probe["protocol"] != "TCP":
            continue
        key = (probe["from"], probe["to"], int(probe["port"]), probe["protocol"])
        urls[key] = f"http://{by_key[probe['to']]['ip']}:{probe['port']}/"
        by_source.setdefault(probe["from"], []).append(urls[key])
    with ThreadPoolExecutor(max_workers=max(1, len(by_source))) as pool:
        results = dict(
            zip(
                by_source,
                pool.map(
                    lambda source: HostLab.curl(by_key[source]["netns"], by_source[source]),
                    by_source,
                ),
                strict=True,
            )
        )
    return {key: results[key[0]][url] for key, url in urls.items()}


class HostCluster:
    """Several lab nodes on the host, each a network namespace, joined by a bridge in one more
    namespace (the nodes' network): pods on different nodes talk over flannel.1 (VXLAN)."""

    def __init__(self, prefix: str, work_dir: Path, nodes: Sequence[str]) -> None:
        self.prefix = prefix
        self.network = f"{prefix}net"
        self.work_dir = work_dir
        self.nodes: dict[str, HostLab] = {}
        self.specs: list[NodeSpec] = []
        run(["ip", "netns", "add", self.network])
        try:
            run(["ip", "-n", self.network, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", self.network, "link", "set", "br0", "up"])
            for index, name in enumerate(nodes):
                lab = HostLab(prefix, work_dir / name, node=name)
                lab.compiled_dir = work_dir / "compiled" / name
                self.nodes[name] = lab
                uplink, address = f"ul{index}", f"10.89.0.{index + 2}"
                run(
                    [
                        *("ip", "-n", lab.node, "link", "add", "eth0", "type", "veth"),
                        *("peer", "name", uplink, "netns", self.network),
                    ]
                )
                run(["ip", "-n", lab.node, "addr", "add", f"{address}/24", "dev", "eth0"])
                run(["ip", "-n", lab.node, "link", "set", "eth0", "up"])
                run(["ip", "-n", self.network, "link", "set", uplink, "master", "br0", "up"])
                self.specs.append(NodeSpec(name, f"10.42.{index}.1/24", address))
        except Exception:
            self.close()
            raise

    def apply(self, compiled: CompiledCluster) -> dict[str, dict[str, Any]]:
        write_compiled(compiled, self.work_dir / "compiled")
        return {name: lab.apply_written(compiled.nodes[name]) for name, lab in self.nodes.items()}

    def start_servers(self) -> None:
        for lab in self.nodes.values():
            lab.start_servers()

    def probe(self, probes: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, int, str], bool]:
        """curl every TCP probe from its source pod's namespace, whichever node hosts it."""
        return probe_pods([pod for lab in self.nodes.values() for pod in lab.pods()], probes)

    def counters(self) -> dict[str, list[tuple[int, str, str]]]:
        return {name: lab.counters() for name, lab in self.nodes.items()}

    def close(self) -> None:
        for lab in self.nodes.values():
            lab.close()
        self.nodes.clear()
        run(["ip", "netns", "del", self.network])


def model_mismatches(
    probes: Iterable[Mapping[str, Any]], observed: Mapping[tuple[str, str, int, str], bool]
) -> list[str]:
    """The probes whose kernel verdict differs from the model's, one line each."""
    return [
        f"{p['from']} -> {p['to']}:{p['port']} model={'allowed' if p['allowed'] else 'blocked'}"
        for p in probes
        if observed[(p["from"], p["to"], p["port"], p["protocol"])] != p["allowed"]
    ]


def pod_chain_counts(rules: Iterable[tuple[int, str, str]]) -> dict[str, int]:
    """Packets that hit the pod chains' REJECT and unprefixed NFLOG rules, and the policy chains'
    prefixed NFLOG rules, summed over chains."""
    totals = {"reject": 0, "pod_nflog": 0, "policy_nflog": 0}
    for packets, chain, rule in rules:
        if chain.startswith("KUBE-POD-FW-") and "-j REJECT" in rule:
            totals["reject"] += packets
        elif chain.startswith("KUBE-POD-FW-") and "-j NFLOG" in rule:
            totals["pod_nflog"] += packets
        elif chain.startswith("KUBE-NWPLCY-") and "--nflog-prefix" in rule:
            totals["policy_nflog"] += packets
    return totals
