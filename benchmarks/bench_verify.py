"""Time verify's controller side on the x/y/z x a/b/c matrix over two nodes (prints figures).

The upstream e2e topology (tests/data/netpol-cases/cluster.yaml: namespaces x, y, z; pods a,
b, c; ports 80 and 81) is spread over two nodes (a and b on node-1, c on node-2) with policies
that block by ingress and by egress, across nodes and on one node. Each node's log is what its
chains write for the probes, in jump orders drawn from a seed, with kube-router's fixed pod-chain
limit (10/minute, burst 10: past the tenth blocked packet of a chain only the `DROP by policy`
lines remain) and the false drops of allowed probes. Then the two commands netpol_verify runs on
the controller are timed end to end, as processes:

  k3s-netpol explain --all -f MANIFESTS --lab lab.json     (which node judges each probe)
  k3s-netpol report --run - --manifests MANIFESTS --out DIR (the report, every row's evidence)

    python benchmarks/bench_verify.py [--seed 7] [--copies 1] [--json]

`--copies N` repeats the matrix on N more ports (144 x N probes) for a larger run.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from k3s_netpol.explain import JumpOrders, Placement, explain
from k3s_netpol.model import Probe, cluster_from_documents, expect
from k3s_netpol.verify import POD_CHAIN_BURST

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGY = ROOT / "tests" / "data" / "netpol-cases" / "cluster.yaml"
NODES = {"a": "node-1", "b": "node-1", "c": "node-2"}
POLICIES: list[dict[str, Any]] = [
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "deny-ingress",
            "namespace": ns,
            "annotations": {
                "kube-router.io/netpol-nflog-limit": "600/minute",
                "kube-router.io/netpol-nflog-limit-burst": "100",
            },
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    for ns in ("x", "y")
] + [
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-from-z-80", "namespace": "x"},
        "spec": {
            "podSelector": {},
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}],
                    "ports": [{"port": 80}],
                }
            ],
        },
    },
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "c-egress-own-namespace", "namespace": "z"},
        "spec": {
            "podSelector": {"matchLabels": {"pod": "c"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {}}]}],
        },
    },
]


def documents() -> list[dict[str, Any]]:
    loaded = [doc for doc in yaml.safe_load_all(TOPOLOGY.read_text()) if doc]
    for doc in loaded:
        if doc["kind"] == "Pod":
            doc["spec"]["nodeName"] = NODES[doc["metadata"]["name"]]
    return loaded + POLICIES


def orders(pods: list[str], policies: list[str], seed: int) -> JumpOrders:
    generator = random.Random(seed)
    pod_orders = {}
    for node in sorted(set(NODES.values())):
        local = [key for key in pods if NODES[key.split("/")[1]] == node]
        generator.shuffle(local)
        pod_orders[node] = tuple(local)
    policy_orders = {}
    for pod in pods:
        keys = list(policies)
        generator.shuffle(keys)
        policy_orders[pod] = tuple(keys)
    return JumpOrders(pods=pod_orders, policies=policy_orders, seed=seed)


def logemu(node: str, src: str, dst: str, dport: int, prefix: str, ip_id: int, mark: int) -> str:
    return (
        f"Nov 29 10:00:01 {node} {prefix} IN=cni0 OUT=cni0 SRC={src} DST={dst} LEN=60 TOS=00 "
        f"PREC=0x00 TTL=64 ID={ip_id} DF PROTO=TCP SPT={30000 + ip_id % 30000} DPT={dport} "
        f"SEQ={ip_id} ACK=0 WINDOW=64240 SYN URGP=0 MARK={mark:#x}\n"
    )


def run_document(
    manifests: list[dict[str, Any]], probes: list[Probe], placement: Placement
) -> dict[str, Any]:
    cluster = cluster_from_documents(manifests, "bench")
    ips = {pod.key: pod.ip for pod in cluster.pods}
    texts: dict[str, list[str]] = {node: [] for node in sorted(set(NODES.values()))}
    spent: dict[tuple[str, str], int] = {}
    results = []
    for number, probe in enumerate(probes, start=1):
        explanation = explain(
            cluster, probe.source, probe.destination, probe.port, probe.protocol, placement
        )
        for line in explanation.current.lines:
            if line.policy is None:
                chain = (line.node, line.chain_pod)
                spent[chain] = spent.get(chain, 0) + 1
                if spent[chain] > POD_CHAIN_BURST:
                    continue
            prefix = f"DROP by policy {line.policy}" if line.policy else ""
            texts[line.node].append(
                logemu(
                    line.node,
                    str(ips[probe.source]),
                    str(ips[probe.destination]),
                    probe.port,
                    prefix,
                    number,
                    line.mark,
                )
            )
        results.append(
            {
                "from": probe.source,
                "to": probe.destination,
                "port": probe.port,
                "protocol": probe.protocol,
                "connected": probe.allowed,
                "started": 1000.0 + number * 0.005,
            }
        )
    return {
        "results": results,
        "logs": [{"node": node, "text": "".join(lines)} for node, lines in texts.items()],
        "expected": {
            "probes": [
                {
                    "from": p.source,
                    "to": p.destination,
                    "port": p.port,
                    "protocol": p.protocol,
                    "allowed": p.allowed,
                }
                for p in probes
            ]
        },
    }


def timed(command: list[str], stdin: str | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(command[:4])}: exit {done.returncode}: {done.stderr.strip()}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--copies", type=int, default=1, help="the matrix on 2 x N ports")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    manifests = documents()
    cluster = cluster_from_documents(manifests, "bench")
    ports = [(80 + index, "TCP") for index in range(2 * max(1, arguments.copies))]
    probes = expect(cluster, ports)
    pods = [pod.key for pod in cluster.pods]
    placement = Placement(
        nodes={key: NODES[key.split("/")[1]] for key in pods},
        orders=orders(pods, [policy.key for policy in cluster.policies], arguments.seed),
    )
    document = run_document(manifests, probes, placement)
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as work:
        directory = Path(work)
        manifest_file = directory / "manifests.yaml"
        manifest_file.write_text(yaml.safe_dump_all(manifests))
        lab = {
            "seed": arguments.seed,
            "nodes": [
                {"name": node, "pod_order": list(order)}
                for node, order in (placement.orders.pods.items() if placement.orders else ())
            ],
            "pods": [
                {
                    "namespace": key.split("/")[0],
                    "name": key.split("/")[1],
                    "node": placement.nodes[key],
                    "policy_jumps": list(placement.orders.policies[key])
                    if placement.orders
                    else [],
                }
                for key in pods
            ],
        }
        lab_file = directory / "lab.json"
        lab_file.write_text(json.dumps(lab))
        cli = [sys.executable, "-m", "k3s_netpol"]
        plan_seconds, _ = timed(
            [*cli, "explain", "--all", "-f", str(manifest_file), "--lab", str(lab_file)]
            + [f"--port={port}/{protocol}" for port, protocol in ports]
        )
        report_seconds, _ = timed(
            [
                *(*cli, "report", "--run", "-", "--manifests", str(manifest_file)),
                *("--pods", str(manifest_file), "--out", str(directory / "out")),
            ],
            json.dumps(document),
        )
        report = json.loads((directory / "out" / "report.json").read_text())
    summary = report["summary"]
    blocked = summary["expected_blocked"]
    found = summary["evidence_pod_chain"] + summary["evidence_policy_lines"]
    figures = {
        "probes": summary["probes"],
        "nodes": len(set(NODES.values())),
        "blocked": blocked,
        "evidence_found": found,
        "evidence_pod_chain": summary["evidence_pod_chain"],
        "evidence_policy_lines": summary["evidence_policy_lines"],
        "rate_limited": summary["rate_limited"],
        "false_drops": summary["false_drops"],
        "log_lines": sum(text["text"].count("\n") for text in document["logs"]),
        "explain_all_seconds": round(plan_seconds, 3),
        "report_seconds": round(report_seconds, 3),
        "ok": report["ok"],
    }
    if arguments.json:
        print(json.dumps(figures))
        return
    print(
        f"{figures['probes']} probes over {figures['nodes']} nodes (seed {arguments.seed}): "
        f"{blocked} blocked, evidence found for {found} ({figures['evidence_pod_chain']} "
        f"pod-chain, {figures['evidence_policy_lines']} policy lines only), "
        f"{figures['rate_limited']} rate-limited, {figures['false_drops']} false drops, "
        f"{figures['log_lines']} log lines"
    )
    print(f"k3s-netpol explain --all: {figures['explain_all_seconds']:.3f} s")
    print(f"k3s-netpol report --run -: {figures['report_seconds']:.3f} s (ok: {figures['ok']})")


if __name__ == "__main__":
    main()
