"""One node's sync, as network_policy_controller.go's ``fullPolicySync`` runs it: the top-level
chains and jumps (``ensureTopLevelChains``), ``ensureDefaultNetworkPolicyChain``,
``ensureCommonPolicyChain``, the policy chains, the pod chains, ``ensureExplicitAccept``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from k3s_netpol import kuberouter
from k3s_netpol.lab.common import SERVICE_CLUSTER_IP_RANGE, SERVICE_NODE_PORT_RANGE, LabPod
from k3s_netpol.lab.pod import LogLimit, sync_pod_firewall_chains
from k3s_netpol.lab.policy import sync_network_policy_chains
from k3s_netpol.lab.state import NodeSync
from k3s_netpol.lab.table import BUILTIN_TO_KUBE, uuid_comment
from k3s_netpol.model import NetworkPolicy

ICMP_RULES: Final = (
    ("echo-request", "allow icmp echo requests"),
    ("destination-unreachable", "allow icmp destination unreachable messages"),
    ("time-exceeded", "allow icmp time exceeded messages"),
)


def ensure_top_level_chains(sync: NodeSync) -> None:
    """The built-in chains jump to KUBE-ROUTER-*; KUBE-ROUTER-INPUT lets the service range and
    the node ports through (each comment with addUUIDForRuleSpec's suffix)."""
    table = sync.table
    for builtin, _ in BUILTIN_TO_KUBE:
        table.chain(builtin)
    for _, kube_chain in BUILTIN_TO_KUBE:
        table.chain(kube_chain)
    table.chain(kuberouter.COMMON_NETPOL_CHAIN)
    table.chain(kuberouter.DEFAULT_NETPOL_CHAIN)
    for builtin, kube_chain in BUILTIN_TO_KUBE:
        jump = ["-m", "comment", "--comment", "kube-router netpol", "-j", kube_chain]
        table.append(builtin, *uuid_comment(builtin, jump))
    input_chain = kuberouter.INPUT_CHAIN
    cluster_ips = [
        *("-m", "comment", "--comment", "allow traffic to primary/secondary cluster IP range"),
        *("-d", SERVICE_CLUSTER_IP_RANGE, "-j", "RETURN"),
    ]
    table.append(input_chain, *uuid_comment(input_chain, cluster_ips))
    for protocol in ("tcp", "udp"):
        node_ports = [
            *("-p", protocol, "-m", "comment", "--comment"),
            f"allow LOCAL {protocol.upper()} traffic to node ports",
            *("-m", "addrtype", "--dst-type", "LOCAL"),
            *("-m", "multiport", "--dports", SERVICE_NODE_PORT_RANGE, "-j", "RETURN"),
        ]
        table.append(input_chain, *uuid_comment(input_chain, node_ports))


def ensure_default_network_policy_chain(sync: NodeSync) -> None:
    sync.table.append(
        kuberouter.DEFAULT_NETPOL_CHAIN,
        *("-j", "MARK", "-m", "comment", "--comment"),
        "rule to mark traffic matching a network policy",
        *("--set-xmark", "0x10000/0x10000"),
    )


def ensure_common_policy_chain(sync: NodeSync) -> None:
    common = kuberouter.COMMON_NETPOL_CHAIN
    sync.table.append(
        common,
        *("-m", "comment", "--comment", "rule to drop invalid state for pod"),
        *("-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"),
    )
    sync.table.append(
        common,
        *("-m", "comment", "--comment", "rule for stateful firewall for pod"),
        *("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
    )
    for icmp_type, comment in ICMP_RULES:
        sync.table.append(
            common,
            *("-m", "comment", "--comment", comment),
            *("-p", "icmp", "--icmp-type", icmp_type, "-j", "ACCEPT"),
        )


def ensure_explicit_accept(sync: NodeSync) -> None:
    """ACCEPT what a pod chain marked 0x20000, after the jump to KUBE-ROUTER-*."""
    for builtin, _ in BUILTIN_TO_KUBE:
        sync.table.append(
            builtin,
            "-m",
            "comment",
            "--comment",
            "KUBE-ROUTER rule to explicitly ACCEPT traffic that comply to network policies",
            *("-m", "mark", "--mark", "0x20000/0x20000", "-j", "ACCEPT"),
        )


@dataclass(frozen=True)
class SyncResult:
    """What one node's sync wrote: the files' text and the orders it used."""

    ipset_restore: str
    iptables_rules: str
    policy_jumps: dict[str, list[str]]


def full_policy_sync(
    sync: NodeSync,
    local_pods: Sequence[LabPod],
    policies: Sequence[NetworkPolicy],
    pod_log_limit: LogLimit,
) -> SyncResult:
    """fullPolicySync with the sync's policy order (``policies``) and pod order (``local_pods``)."""
    ensure_top_level_chains(sync)
    ensure_default_network_policy_chain(sync)
    ensure_common_policy_chain(sync)
    policy_chains = sync_network_policy_chains(sync, policies)
    jumps = sync_pod_firewall_chains(sync, local_pods, policies, policy_chains, pod_log_limit)
    ensure_explicit_accept(sync)
    return SyncResult(sync.sets.restore_text(), sync.table.restore_text(), jumps)
