"""The whole lab compiled: every node's sync, and lab.json, the description verify reads.

lab.json (the cluster's, in the output directory) holds the seed, the deviations, per node its
pod subnet, pods and the orders its sync used, every pod with its node, pod chain and policy
jumps, and the model's expected TCP probes between the lab's pods. Each node's own directory
holds its ``ipset.restore``, ``iptables.rules`` and a ``lab.json`` that the node's helper reads
(its bridge, pods and flannel.1). docs/architecture.md describes both shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from k3s_netpol import kuberouter
from k3s_netpol.lab.common import (
    BRIDGE_ADDRESS,
    LAB_FILE,
    CompiledLab,
    LabPod,
    json_bytes,
)
from k3s_netpol.lab.controller import full_policy_sync
from k3s_netpol.lab.nodes import NodeSpec, bridge_document, check_nodes, place_pods
from k3s_netpol.lab.pod import LogLimit
from k3s_netpol.lab.state import NodeSync
from k3s_netpol.lab.sync import SyncOptions, new_seed
from k3s_netpol.model import Cluster, Probe, expect, probes_document


@dataclass(frozen=True)
class CompiledCluster:
    """Every lab node's compiled files and the cluster's lab.json."""

    nodes: Mapping[str, CompiledLab]
    lab: Mapping[str, Any]
    warnings: tuple[str, ...] = ()

    def files(self) -> dict[str, bytes]:
        """Relative path -> content: ``lab.json`` and ``<node>/<file>`` per node."""
        files = {LAB_FILE: json_bytes(self.lab)}
        for name, compiled in self.nodes.items():
            for file_name, content in compiled.files().items():
                files[f"{name}/{file_name}"] = content
        return files


def _tcp_probes(probes: Sequence[Probe], keys: set[str]) -> list[dict[str, Any]]:
    chosen = [
        p for p in probes if p.protocol == "TCP" and p.source in keys and p.destination in keys
    ]
    document: list[dict[str, Any]] = probes_document(chosen)["probes"]
    return document


@dataclass(frozen=True)
class _NodeResult:
    compiled: CompiledLab
    description: dict[str, Any]
    pods: list[dict[str, Any]]


def _sync_node(
    cluster: Cluster,
    node: NodeSpec,
    nodes: Sequence[NodeSpec],
    placed: Sequence[LabPod],
    options: SyncOptions,
    version: str,
    common: Mapping[str, Any],
    probes: Sequence[Probe],
    placement_warnings: Sequence[str],
) -> _NodeResult:
    """One node's sync in the orders its seed draws, and what lab.json says about it."""
    actionable = [pod for pod in cluster.pods if pod.ip is not None]
    sync = NodeSync(cluster, node.name, version, actionable)
    policies = options.order(node.name, "policies", cluster.policies)
    local: list[LabPod] = options.order(node.name, "pods", placed)
    result = full_policy_sync(sync, local, policies, options.effective_pod_log_limit)
    pods = []
    for lab_pod in placed:
        document = lab_pod.to_dict()
        document["chain"] = kuberouter.pod_firewall_chain(lab_pod.namespace, lab_pod.name, version)
        document["policy_jumps"] = result.policy_jumps[lab_pod.key]
        pods.append(document)
    description = {
        "name": node.name,
        "pod_cidr": node.pod_cidr,
        "bridge": bridge_document(node),
        "node_ip": node.node_ip,
        "flannel": node.flannel(nodes),
        "policy_order": [policy.key for policy in policies],
        "pod_order": [lab_pod.key for lab_pod in local],
    }
    node_lab: dict[str, Any] = {k: v for k, v in description.items() if k != "name"}
    node_lab.update(common)
    node_lab.update(
        node=node.name,
        pods=pods,
        probes=_tcp_probes(probes, {lab_pod.key for lab_pod in placed}),
    )
    compiled = CompiledLab(
        result.ipset_restore,
        result.iptables_rules,
        node_lab,
        tuple(dict.fromkeys([*placement_warnings, *sync.warnings])),
    )
    return _NodeResult(compiled, description, pods)


def compile_cluster(
    cluster: Cluster,
    nodes: Sequence[NodeSpec],
    *,
    seed: int | None = None,
    netns_prefix: str = "",
    sync_version: str | None = None,
    manifest_order: bool = False,
    pod_log_limit: LogLimit | None = None,
    icmp_ratelimit_lifted: bool = False,
) -> CompiledCluster:
    """Lay the cluster out on the lab's nodes and run one kube-router sync on each.

    ``seed`` draws each node's policy and pod orders (a random one when None); the sync
    version, which kube-router takes from the clock and hashes into chain names, is the seed
    unless given. The other keywords are the lab's deviations from a node, off by default.
    """
    check_nodes(nodes)
    options = SyncOptions(
        seed=new_seed() if seed is None else seed,
        manifest_order=manifest_order,
        pod_log_limit=pod_log_limit,
        icmp_ratelimit_lifted=icmp_ratelimit_lifted,
    )
    version = str(options.seed) if sync_version is None else sync_version
    placed, placement_warnings = place_pods(cluster, nodes, netns_prefix)
    probes = expect(cluster)
    limit = options.effective_pod_log_limit
    common = {
        "seed": options.seed,
        "sync_version": version,
        "pod_log_limit": {"limit": limit.limit, "burst": limit.burst},
        "deviations": options.deviations(),
    }
    results = {
        node.name: _sync_node(
            cluster,
            node,
            nodes,
            placed[node.name],
            options,
            version,
            common,
            probes,
            placement_warnings,
        )
        for node in nodes
    }
    pods = [pod for result in results.values() for pod in result.pods]
    lab_keys = {f"{pod['namespace']}/{pod['name']}" for pod in pods}
    lab: dict[str, Any] = {
        **common,
        "nodes": [
            {**result.description, "pods": [lab_pod.key for lab_pod in placed[name]]}
            for name, result in results.items()
        ],
        "pods": pods,
        "peers": [
            {"namespace": pod.namespace, "name": pod.name, "ip": pod.ip, "node": pod.node}
            for pod in cluster.pods
            if pod.ip is not None and pod.key not in lab_keys
        ],
        "probes": _tcp_probes(probes, lab_keys),
    }
    if len(nodes) == 1:
        lab["node"] = nodes[0].name
        lab["bridge"] = bridge_document(nodes[0])
    warnings = [w for result in results.values() for w in result.compiled.warnings]
    return CompiledCluster(
        {name: result.compiled for name, result in results.items()},
        lab,
        tuple(dict.fromkeys(warnings)),
    )


def compile_lab(
    cluster: Cluster,
    node: str,
    *,
    bridge_address: str = BRIDGE_ADDRESS,
    netns_prefix: str = "",
    sync_version: str | None = None,
    seed: int | None = None,
    manifest_order: bool = False,
    pod_log_limit: LogLimit | None = None,
    node_ip: str | None = None,
) -> CompiledLab:
    """One lab node's files (``compile_cluster`` with that node alone)."""
    compiled = compile_cluster(
        cluster,
        [NodeSpec(node, bridge_address, node_ip)],
        seed=seed,
        netns_prefix=netns_prefix,
        sync_version=sync_version,
        manifest_order=manifest_order,
        pod_log_limit=pod_log_limit,
    )
    return compiled.nodes[node]
