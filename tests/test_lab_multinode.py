"""Two lab nodes on a real kernel: flannel.1 between them, each node's own rules, real packets.

The nodes are network namespaces joined by a bridge (test_lab_host.HostCluster); each gets
cni0, its pods, flannel.1 with the route/neighbour/FDB entries flannel writes, and its own
compiled sets and filter table, all set up by the role's helper. Checked with curl and the
rules' packet counters: every probe's verdict equals the model's; a routed (cross-node) packet
passes a pod chain once and only on the node whose pod it concerns, a bridged (same-node) one
passes the destination's and the source's chains twice each; a blocked cross-node connection
is rejected and logged on the node whose chain blocks it (the destination's for ingress, the
source's for egress) and leaves nothing on the other node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_lab_host import HostCluster, model_mismatches, require_root_tools, run

from k3s_netpol.bundle import BundleConfig, render, render_yaml
from k3s_netpol.lab import CompiledCluster, LogLimit, compile_cluster, new_seed
from k3s_netpol.model import Cluster, load_manifests

WORKLOADS = Path(__file__).resolve().parents[1] / "src/k3s_netpol/data/lab/workloads.yaml"
SERVER, AGENT = "k3s-netpol-lab-server", "k3s-netpol-lab-agent"
COUNTABLE_POD_LOG_LIMIT = LogLimit("1000/second", 1000)
# sample2's clients may reach only their own namespace: egress blocked on the client's node.
EGRESS_POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "client-egress-same-namespace", "namespace": "sample2"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "client"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {}}]}],
    },
}

pytestmark = pytest.mark.root


def tutorial_cluster(tmp_path: Path) -> Cluster:
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(render_yaml(render(BundleConfig())))
    extra = tmp_path / "egress.yaml"
    extra.write_text(yaml.safe_dump(EGRESS_POLICY))
    return load_manifests([bundle, WORKLOADS, extra])


@pytest.fixture(scope="module")
def cluster_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostCluster]:
    require_root_tools()
    lab = HostCluster(f"km{os.getpid()}-", tmp_path_factory.mktemp("two-nodes"), [SERVER, AGENT])
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def compiled(cluster_lab: HostCluster, tmp_path_factory: pytest.TempPathFactory) -> CompiledCluster:
    cluster = tutorial_cluster(tmp_path_factory.mktemp("manifests"))
    result = compile_cluster(
        cluster,
        cluster_lab.specs,
        seed=new_seed(),
        netns_prefix=cluster_lab.prefix,
        pod_log_limit=COUNTABLE_POD_LOG_LIMIT,
    )
    first = cluster_lab.apply(result)
    assert all(done["changed"] for done in first.values())
    again = cluster_lab.apply(result)
    assert not any(done["changed"] for done in again.values()), f"not idempotent: {again}"
    cluster_lab.start_servers()
    return result


def flannel_state(node_netns: str) -> dict[str, Any]:
    ip = ["ip", "-n", node_netns, "-j"]
    link = json.loads(run([*ip, "-d", "link", "show", "flannel.1"]))[0]
    return {
        "vxlan": link["linkinfo"]["info_data"],
        "mac": link["address"],
        "routes": json.loads(run([*ip, "route", "show", "dev", "flannel.1"])),
        "neighbours": json.loads(run([*ip, "neigh", "show", "dev", "flannel.1"])),
        "fdb": json.loads(
            run(
                [
                    "ip",
                    "netns",
                    "exec",
                    node_netns,
                    "bridge",
                    "-j",
                    "fdb",
                    "show",
                    "dev",
                    "flannel.1",
                ]
            )
        ),
    }


def test_flannel_entries_are_the_ones_flannels_vxlan_backend_writes(
    cluster_lab: HostCluster, compiled: CompiledCluster
) -> None:
    server = flannel_state(cluster_lab.nodes[SERVER].node)
    agent_mac = compiled.nodes[AGENT].lab["flannel"]["mac"]
    assert server["vxlan"]["id"] == 1
    assert server["vxlan"]["port"] == 8472
    assert server["vxlan"]["local"] == "10.89.0.2"
    assert server["mac"] == compiled.nodes[SERVER].lab["flannel"]["mac"]
    assert {
        (route["dst"], route["gateway"], "onlink" in route.get("flags", []))
        for route in server["routes"]
    } == {("10.42.1.0/24", "10.42.1.0", True)}
    assert any(
        entry["dst"] == "10.42.1.0"
        and entry["lladdr"] == agent_mac
        and "PERMANENT" in entry["state"]
        for entry in server["neighbours"]
    )
    assert any(
        entry["mac"] == agent_mac and entry.get("dst") == "10.89.0.3" for entry in server["fdb"]
    )


def test_every_probe_over_two_nodes_gives_the_models_verdict(
    cluster_lab: HostCluster, compiled: CompiledCluster
) -> None:
    probes = compiled.lab["probes"]
    nodes = {pod["namespace"] + "/" + pod["name"]: pod["node"] for pod in compiled.lab["pods"]}
    assert any(nodes[p["from"]] != nodes[p["to"]] and p["allowed"] for p in probes)
    assert any(nodes[p["from"]] != nodes[p["to"]] and not p["allowed"] for p in probes)
    observed = cluster_lab.probe(probes)
    mismatches = model_mismatches(probes, observed)
    assert not mismatches, f"seed {compiled.lab['seed']}: kernel differs from the model:\n" + (
        "\n".join(mismatches)
    )


def chain_passes(
    cluster_lab: HostCluster, compiled: CompiledCluster, source: str, destination: str, port: int
) -> dict[str, dict[str, int]]:
    """Curl once; per node and per pod chain: packets that reached the chain's last rule (they
    passed it), were rejected in it, or were logged by its unprefixed rule; and packets that
    took a --physdev-is-bridged jump."""
    chains = {pod["chain"]: pod for pod in compiled.lab["pods"]}

    def snapshot() -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for node, rules in cluster_lab.counters().items():
            for packets, chain, rule in rules:
                if chain in chains:
                    if "0x20000/0x20000" in rule:
                        kind = "passed"
                    elif "-j REJECT" in rule:
                        kind = "rejected"
                    elif "-j NFLOG" in rule:
                        kind = "logged"
                    else:
                        continue
                    pod = chains[chain]
                    key = f"{node} {kind} {pod['namespace']}/{pod['name']}"
                    counts.setdefault(node, {})[key] = packets
                elif "--physdev-is-bridged" in rule:
                    key = f"{node} bridged"
                    counts.setdefault(node, {})[key] = counts[node].get(key, 0) + packets
        return counts

    before = snapshot()
    observed = cluster_lab.probe(
        [{"from": source, "to": destination, "port": port, "protocol": "TCP"}]
    )
    after = snapshot()
    delta = {
        key: after[node][key] - before[node].get(key, 0)
        for node in after
        for key in after[node]
        if after[node][key] != before[node].get(key, 0)
    }
    delta["allowed"] = int(next(iter(observed.values())))
    return {"counts": delta}


def test_routed_packets_pass_one_chain_once_bridged_ones_twice(
    cluster_lab: HostCluster, compiled: CompiledCluster
) -> None:
    # sample2/client (server) -> sample2/nginx (agent): allowed, routed over flannel.1.
    routed = chain_passes(cluster_lab, compiled, "sample2/client", "sample2/nginx", 80)["counts"]
    assert routed == {
        "allowed": 1,
        f"{SERVER} passed sample2/client": 1,
        f"{AGENT} passed sample2/nginx": 1,
    }
    # sample1/traefik -> sample1/nginx, both on the server: bridged, both chains twice.
    bridged = chain_passes(cluster_lab, compiled, "sample1/traefik", "sample1/nginx", 80)["counts"]
    assert bridged["allowed"] == 1
    assert bridged[f"{SERVER} passed sample1/nginx"] == 2
    assert bridged[f"{SERVER} passed sample1/traefik"] == 2
    assert bridged[f"{SERVER} bridged"] >= 2
    assert not [key for key in bridged if key.startswith(AGENT)]


def test_blocked_cross_node_connections_are_judged_on_the_blocking_node(
    cluster_lab: HostCluster, compiled: CompiledCluster
) -> None:
    # Ingress: sample1/nginx (server) -> sample2/nginx (agent), blocked by sample2's policies.
    ingress = chain_passes(cluster_lab, compiled, "sample1/nginx", "sample2/nginx", 80)["counts"]
    assert ingress == {
        "allowed": 0,
        f"{SERVER} passed sample1/nginx": 1,
        f"{AGENT} logged sample2/nginx": 1,
        f"{AGENT} rejected sample2/nginx": 1,
    }
    # Egress: sample2/client (server) -> prometheus (agent, no policies), blocked by the
    # client's egress policy on the server; the agent never sees it.
    egress = chain_passes(
        cluster_lab, compiled, "sample2/client", "cattle-monitoring-system/prometheus", 9090
    )["counts"]
    assert egress == {
        "allowed": 0,
        f"{SERVER} logged sample2/client": 1,
        f"{SERVER} rejected sample2/client": 1,
    }
