"""Pod chains, as pod.go writes them: ``syncPodFirewallChains``, ``setupPodNetpolRules``,
``interceptPodInboundTraffic``, ``interceptPodOutboundTraffic`` and ``dropUnmarkedTrafficRules``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from k3s_netpol import kuberouter
from k3s_netpol.lab.common import LabPod
from k3s_netpol.lab.state import NodeSync
from k3s_netpol.lab.table import BUILTIN_TO_KUBE
from k3s_netpol.model import NetworkPolicy, policy_selects


@dataclass(frozen=True)
class LogLimit:
    """The ``-m limit`` of a log rule: rate (``N/unit``) and burst."""

    limit: str = kuberouter.DEFAULT_NFLOG_LIMIT
    burst: int = kuberouter.DEFAULT_NFLOG_BURST


def setup_pod_netpol_rules(
    sync: NodeSync,
    lab_pod: LabPod,
    chain: str,
    policies: Sequence[NetworkPolicy],
    policy_chains: Mapping[str, str],
) -> list[str]:
    """setupPodNetpolRules: every rule is inserted at position 1, so the chain holds them in
    reverse: COMMON, the local-node ACCEPT, the default chains, then the selecting policies in
    the reverse of the sync's policy order. Returns the policy keys in the chain's order."""
    pod = sync.cluster.pod(lab_pod.key)
    ip = lab_pod.ip
    inserted: list[list[str]] = []
    jumped: list[str] = []
    has_ingress = has_egress = False
    for policy in policies:
        if not policy_selects(policy, pod):
            continue
        types = policy.policy_types
        address: tuple[str, ...] = ()
        if "Ingress" in types and "Egress" not in types:
            address = ("-d", ip)
        elif "Egress" in types and "Ingress" not in types:
            address = ("-s", ip)
        has_ingress = has_ingress or "Ingress" in types
        has_egress = has_egress or "Egress" in types
        comment = f"run through nw policy {policy.name}"
        inserted.append([*address, "-m", "comment", "--comment", comment])
        inserted[-1] += ["-j", policy_chains[policy.key]]
        jumped.append(policy.key)
    default = kuberouter.DEFAULT_NETPOL_CHAIN
    if not has_ingress:
        comment = "run through default ingress network policy chain"
        inserted.append(["-d", ip, "-m", "comment", "--comment", comment, "-j", default])
    if not has_egress:
        comment = "run through default egress network policy chain"
        inserted.append(["-s", ip, "-m", "comment", "--comment", comment, "-j", default])
    comment = "rule to permit the traffic traffic to pods when source is the pod's local node"
    inserted.append(["-m", "comment", "--comment", comment])
    inserted[-1] += ["-m", "addrtype", "--src-type", "LOCAL", "-d", ip, "-j", "ACCEPT"]
    comment = "common bi-directional traffic policy rules"
    inserted.append(["-m", "comment", "--comment", comment, "-j", kuberouter.COMMON_NETPOL_CHAIN])
    for args in reversed(inserted):
        sync.table.append(chain, *args)
    return list(reversed(jumped))


def intercept_pod_traffic(sync: NodeSync, lab_pod: LabPod, chain: str) -> None:
    """interceptPodInboundTraffic then interceptPodOutboundTraffic: the plain ``-d``/``-s``
    jumps match routed and bridged packets, the ``--physdev-is-bridged`` ones bridged only."""
    who = f"POD name:{lab_pod.name} namespace: {lab_pod.namespace} to chain {chain}"
    to_pod = ["-m", "comment", "--comment", f"rule to jump traffic destined to {who}"]
    from_pod = ["-m", "comment", "--comment", f"rule to jump traffic from {who}"]
    forward, output = kuberouter.FORWARD_CHAIN, kuberouter.OUTPUT_CHAIN
    bridged = ("-m", "physdev", "--physdev-is-bridged")
    table = sync.table
    table.append(forward, *to_pod, "-d", lab_pod.ip, "-j", chain)
    table.append(output, *to_pod, "-d", lab_pod.ip, "-j", chain)
    table.append(forward, *bridged, *to_pod, "-d", lab_pod.ip, "-j", chain)
    for _, kube_chain in BUILTIN_TO_KUBE:
        table.append(kube_chain, *from_pod, "-s", lab_pod.ip, "-j", chain)
    table.append(forward, *bridged, *from_pod, "-s", lab_pod.ip, "-j", chain)


def drop_unmarked_traffic_rules(
    sync: NodeSync, lab_pod: LabPod, chain: str, log_limit: LogLimit
) -> None:
    """dropUnmarkedTrafficRules, then the 0x20000 mark: unprefixed NFLOG (kube-router fixes its
    limit at 10/minute burst 10), REJECT, clear 0x10000, set 0x20000."""
    who = f"POD name:{lab_pod.name} namespace: {lab_pod.namespace}"
    unmarked = ("-m", "mark", "!", "--mark", "0x10000/0x10000")
    table = sync.table
    table.append(
        chain,
        *("-m", "comment", "--comment", f"rule to log dropped traffic {who}"),
        *unmarked,
        *("-m", "limit", "--limit", log_limit.limit, "--limit-burst", str(log_limit.burst)),
        *("-j", "NFLOG", "--nflog-group", str(kuberouter.NFLOG_GROUP)),
    )
    table.append(
        chain,
        *("-m", "comment", "--comment", f"rule to REJECT traffic destined for {who}"),
        *unmarked,
        *("-j", "REJECT"),
    )
    table.append(chain, "-j", "MARK", "--set-xmark", "0x0/0x10000")
    table.append(
        chain,
        *("-m", "comment", "--comment"),
        "set mark to ACCEPT traffic that comply to network policies",
        *("-j", "MARK", "--set-xmark", "0x20000/0x20000"),
    )


def sync_pod_firewall_chains(
    sync: NodeSync,
    local_pods: Sequence[LabPod],
    policies: Sequence[NetworkPolicy],
    policy_chains: Mapping[str, str],
    log_limit: LogLimit,
) -> dict[str, list[str]]:
    """syncPodFirewallChains over the node's pods in the sync's pod order. Returns, per pod
    key, the policy keys its chain jumps to, in the chain's order."""
    jumps: dict[str, list[str]] = {}
    for lab_pod in local_pods:
        chain = kuberouter.pod_firewall_chain(lab_pod.namespace, lab_pod.name, sync.version)
        sync.table.chain(chain)
        jumps[lab_pod.key] = setup_pod_netpol_rules(sync, lab_pod, chain, policies, policy_chains)
        intercept_pod_traffic(sync, lab_pod, chain)
        drop_unmarked_traffic_rules(sync, lab_pod, chain, log_limit)
    return jumps
