"""Time `expect` on 1,000 generated pods x 200 policies (prints figures, asserts nothing).

The cluster is the same on every run: 20 namespaces of 50 pods, each pod serving TCP 80
(named `http`), every tenth pod also TCP 9100 (`metrics`); per namespace ten policies mixing
deny-all, same-namespace, namespaceSelector with matchExpressions, named ports, endPort ranges,
ipBlock with except, and egress rules.

    python benchmarks/bench_expect.py [--pods 1000] [--policies 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from k3s_netpol.model import expect, load_manifests, probes_document

TIERS = ("web", "api", "db", "cache", "batch")


def generate(pod_count: int, policy_count: int) -> list[dict[str, Any]]:
    namespace_count = max(1, pod_count // 50)
    documents: list[dict[str, Any]] = []
    for n in range(namespace_count):
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": f"tenant-{n:02d}", "labels": {"team": f"team-{n % 4}"}},
            }
        )
    for p in range(pod_count):
        namespace = f"tenant-{p % namespace_count:02d}"
        ports = [{"name": "http", "containerPort": 80, "protocol": "TCP"}]
        if p % 10 == 0:
            ports.append({"name": "metrics", "containerPort": 9100, "protocol": "TCP"})
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"pod-{p:04d}",
                    "namespace": namespace,
                    "labels": {"app": f"app-{p % 7}", "tier": TIERS[p % len(TIERS)]},
                },
                "spec": {
                    "nodeName": f"node-{p % 3}",
                    "containers": [{"name": "main", "image": "nginx", "ports": ports}],
                },
                "status": {"podIP": f"10.42.{p // 250}.{p % 250 + 2}"},
            }
        )
    for q in range(policy_count):
        namespace = f"tenant-{q % namespace_count:02d}"
        documents.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": f"policy-{q:03d}", "namespace": namespace},
                "spec": _policy_spec(q),
            }
        )
    return documents


def _policy_spec(q: int) -> dict[str, Any]:
    tier = TIERS[q % len(TIERS)]
    shape = (q // 20) % 10
    if shape == 0:
        return {"podSelector": {}, "ingress": []}
    if shape == 1:
        return {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
    if shape == 2:
        return {
            "podSelector": {"matchLabels": {"tier": tier}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {
                                        "key": "team",
                                        "operator": "In",
                                        "values": ["team-1", "team-2"],
                                    }
                                ]
                            },
                            "podSelector": {"matchLabels": {"tier": "web"}},
                        }
                    ],
                    "ports": [{"port": "http"}],
                }
            ],
        }
    if shape == 3:
        return {
            "podSelector": {
                "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["app-1"]}]
            },
            "ingress": [{"ports": [{"port": 9000, "endPort": 9200}]}],
        }
    if shape == 4:
        return {
            "podSelector": {"matchLabels": {"tier": tier}},
            "ingress": [
                {"from": [{"ipBlock": {"cidr": "10.42.0.0/16", "except": ["10.42.2.0/24"]}}]}
            ],
        }
    if shape == 5:
        return {
            "podSelector": {"matchLabels": {"tier": tier}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"tier": "db"}}}]},
                {"ports": [{"port": 53, "protocol": "UDP"}]},
            ],
        }
    if shape == 6:
        return {
            "podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
            "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}],
        }
    if shape == 7:
        return {
            "podSelector": {"matchLabels": {"app": f"app-{q % 7}"}},
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"team": f"team-{q % 4}"}}},
                        {"podSelector": {"matchLabels": {"tier": "api"}}},
                    ],
                    "ports": [{"port": 80}, {"port": "metrics"}],
                }
            ],
        }
    if shape == 8:
        return {
            "podSelector": {"matchExpressions": [{"key": "legacy", "operator": "DoesNotExist"}]},
            "ingress": [{"from": [{"namespaceSelector": {}}]}],
            "policyTypes": ["Ingress"],
        }
    return {"podSelector": {"matchLabels": {"tier": tier}}, "ingress": [{}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="also time the -o json document")
    options = parser.parse_args()

    documents = generate(options.pods, options.policies)
    with tempfile.TemporaryDirectory() as directory:
        manifest = Path(directory) / "cluster.yaml"
        manifest.write_text(yaml.safe_dump_all(documents), encoding="utf-8")
        with _timed("load"):
            cluster = load_manifests([manifest])
    with _timed("expect"):
        probes = expect(cluster)
    allowed = sum(probe.allowed for probe in probes)
    if options.json:
        with _timed("json"):
            text = json.dumps(probes_document(probes))
        print(f"json document: {len(text) / 1e6:.0f} MB")
    print(
        f"{len(cluster.pods)} pods x {len(cluster.policies)} policies: "
        f"{len(probes)} probes, {allowed} allowed; load average {os.getloadavg()[0]:.2f} "
        "(wall time above CPU time means other processes shared the cores)"
    )


@contextmanager
def _timed(label: str) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:8s} {wall:6.2f} s wall  {cpu:6.2f} s CPU")


if __name__ == "__main__":
    main()
