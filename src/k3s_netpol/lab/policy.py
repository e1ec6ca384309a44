"""Policy chains, as policy.go writes them: ``syncNetworkPolicyChains``, ``processIngressRules``,
``processEgressRules``, ``appendRuleToPolicyChain`` and ``processNetworkPolicyPorts``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from k3s_netpol import kuberouter
from k3s_netpol.lab.common import FAMILY, HASH_IP, HASH_NET
from k3s_netpol.lab.ipsets import ip_block_entries
from k3s_netpol.lab.state import NodeSync
from k3s_netpol.model import NetworkPolicy, Pod, peer_matches, policy_selects

# The comments appendRuleToPolicyChain's callers give each MARK/RETURN pair.
PODS_TO_PODS: Final = "rule to ACCEPT traffic from source pods to dest pods selected by policy name"
ALL_TO_PODS: Final = "rule to ACCEPT traffic from all sources to dest pods selected by policy name:"
BLOCKS_TO_PODS: Final = (
    "rule to ACCEPT traffic from specified ipBlocks to dest pods selected by policy name:"
)
PODS_TO_ALL: Final = (
    "rule to ACCEPT traffic from source pods to all destinations selected by policy name:"
)
PODS_TO_BLOCKS: Final = (
    "rule to ACCEPT traffic from source pods to specified ipBlocks selected by policy name:"
)


@dataclass(frozen=True)
class PortRule:
    """One resolved port of a rule: protocol, port ("" for all) and end port ("" for none)."""

    protocol: str
    port: str = ""
    end_port: str = ""


@dataclass(frozen=True)
class NamedEndpoint:
    protocol: str
    port: str
    ips: tuple[str, ...]


NamedPorts = Mapping[tuple[str, str], Mapping[int, list[str]]]


def _has_selector(peer: Mapping[str, Any]) -> bool:
    return peer.get("podSelector") is not None or peer.get("namespaceSelector") is not None


def peer_pods(
    sync: NodeSync, policy: NetworkPolicy, peers: Sequence[Mapping[str, Any]]
) -> list[Pod]:
    """evalPodPeer over every selector peer of a rule (ipBlock peers hold no pods)."""
    pods: list[Pod] = []
    for peer in peers:
        if _has_selector(peer):
            pods += [pod for pod in sync.pods if peer_matches(sync.cluster, policy, peer, pod)]
    return pods


def _ips(pods: Iterable[Pod]) -> list[str]:
    return [pod.ip for pod in pods if pod.ip is not None]


def named_ports(pods: Iterable[Pod]) -> dict[tuple[str, str], dict[int, list[str]]]:
    """grabNamedPortFromPod: (port name, protocol) -> port number -> the pods' IPs."""
    named: dict[tuple[str, str], dict[int, list[str]]] = {}
    for pod in pods:
        if pod.ip is None:
            continue
        for port in pod.ports:
            by_number = named.setdefault((port.name or "", port.protocol), {})
            by_number.setdefault(port.port, []).append(pod.ip)
    return named


def process_ports(
    rule_ports: Sequence[Mapping[str, Any]], named: NamedPorts
) -> tuple[list[PortRule], list[NamedEndpoint]]:
    """processNetworkPolicyPorts: numeric ports as they are, named ones resolved."""
    numeric: list[PortRule] = []
    resolved: list[NamedEndpoint] = []
    for entry in rule_ports:
        protocol = str(entry.get("protocol") or "TCP")
        port = entry.get("port")
        if port is None:
            numeric.append(PortRule(protocol))
        elif isinstance(port, int):
            end_port = entry.get("endPort")
            end = str(end_port) if isinstance(end_port, int) and end_port >= port else ""
            numeric.append(PortRule(protocol, str(port), end))
        else:
            for number, ips in sorted(named.get((str(port), protocol), {}).items()):
                resolved.append(NamedEndpoint(protocol, str(number), tuple(ips)))
    return numeric, resolved


def append_rule(
    sync: NodeSync,
    chain: str,
    comment: str,
    source_set: str,
    destination_set: str,
    protocol: str = "",
    port: str = "",
    end_port: str = "",
) -> None:
    """appendRuleToPolicyChain: MARK 0x10000 then RETURN on the same match."""
    args = ["-m", "comment", "--comment", comment]
    if source_set:
        args += ["-m", "set", "--match-set", source_set, "src"]
    if destination_set:
        args += ["-m", "set", "--match-set", destination_set, "dst"]
    if protocol:
        args += ["-p", protocol.lower()]
    if port:
        args += ["--dport", f"{port}:{end_port}" if end_port else port]
    sync.table.append(chain, *args, "-j", "MARK", "--set-xmark", "0x10000/0x10000")
    sync.table.append(chain, *args, "-m", "mark", "--mark", "0x10000/0x10000", "-j", "RETURN")


def _port_rules(
    sync: NodeSync,
    chain: str,
    comment: str,
    source_set: str,
    destination_set: str,
    ports: Sequence[PortRule],
) -> None:
    for port in ports:
        append_rule(
            sync,
            chain,
            comment,
            source_set,
            destination_set,
            port.protocol,
            port.port,
            port.end_port,
        )


@dataclass(frozen=True)
class _Rule:
    """Where one ingress/egress rule's MARK/RETURN pairs go."""

    sync: NodeSync
    policy: NetworkPolicy
    chain: str
    direction: kuberouter.Direction
    index: int


def _named_port_rules(
    rule: _Rule, comment: str, source_set: str, endpoints: Sequence[NamedEndpoint], kind: str
) -> None:
    """One rule per endpoint of a named port, its destination the endpoint's own set."""
    policy = rule.policy
    for endpoint_index, endpoint in enumerate(endpoints):
        named_set = rule.sync.sets.refresh(
            kuberouter.named_port_set(
                policy.namespace, policy.name, rule.direction, rule.index, endpoint_index, FAMILY
            ),
            kind,
            endpoint.ips,
        )
        append_rule(
            rule.sync, rule.chain, comment, source_set, named_set, endpoint.protocol, endpoint.port
        )


def process_ingress_rules(sync: NodeSync, policy: NetworkPolicy, chain: str, target: str) -> None:
    name, namespace = policy.name, policy.namespace
    who = f"{name} namespace {namespace}"
    from_pods, from_all = f"{PODS_TO_PODS} {who}", f"{ALL_TO_PODS} {who}"
    from_blocks = f"{BLOCKS_TO_PODS} {who}"
    named = named_ports(pod for pod in sync.pods if policy_selects(policy, pod))
    for index, spec in enumerate(policy.spec.get("ingress") or ()):
        rule = _Rule(sync, policy, chain, "ingressrule", index)
        peers = spec.get("from") or []
        rule_ports = spec.get("ports") or []
        match_all_sources, match_all_ports = not peers, not rule_ports
        numeric, endpoints = process_ports(rule_ports, named)
        source_ips = _ips(peer_pods(sync, policy, peers))
        if source_ips:
            source_set = sync.sets.refresh(
                kuberouter.rule_source_set(namespace, name, "ingressrule", index, FAMILY, "pod"),
                HASH_IP,
                source_ips,
            )
            _port_rules(sync, chain, from_pods, source_set, target, numeric)
            _named_port_rules(rule, from_pods, source_set, endpoints, HASH_IP)
            if not numeric and not endpoints:
                append_rule(sync, chain, from_pods, source_set, target)
        if match_all_sources and not match_all_ports:
            _port_rules(sync, chain, from_all, "", target, numeric)
            _named_port_rules(rule, from_all, "", endpoints, HASH_IP)
        if match_all_sources and match_all_ports:
            append_rule(sync, chain, from_all, "", target)
        blocks = ip_block_entries(peers)
        if blocks:
            block_set = sync.sets.refresh(
                kuberouter.rule_source_set(
                    namespace, name, "ingressrule", index, FAMILY, "ipblock"
                ),
                HASH_NET,
                blocks,
            )
            if match_all_ports:
                append_rule(sync, chain, from_blocks, block_set, target)
                continue
            _port_rules(sync, chain, from_blocks, block_set, target, numeric)
            _named_port_rules(rule, from_blocks, block_set, endpoints, HASH_NET)


def process_egress_rules(sync: NodeSync, policy: NetworkPolicy, chain: str, source: str) -> None:
    name, namespace = policy.name, policy.namespace
    who = f"{name} namespace {namespace}"
    to_pods, to_all, to_blocks = (
        f"{PODS_TO_PODS} {who}",
        f"{PODS_TO_ALL} {who}",
        f"{PODS_TO_BLOCKS} {who}",
    )
    for index, spec in enumerate(policy.spec.get("egress") or ()):
        rule = _Rule(sync, policy, chain, "egressrule", index)
        peers = spec.get("to") or []
        rule_ports = spec.get("ports") or []
        match_all_destinations, match_all_ports = not peers, not rule_ports
        if match_all_destinations:
            has_named = any(isinstance(entry.get("port"), str) for entry in rule_ports)
            named_pods = (
                [pod for pod in sync.pods if pod.namespace == namespace] if has_named else []
            )
        else:
            named_pods = peer_pods(sync, policy, peers)
        numeric, endpoints = process_ports(rule_ports, named_ports(named_pods))
        destination_ips = _ips(peer_pods(sync, policy, peers))
        if destination_ips:
            destination_set = sync.sets.refresh(
                kuberouter.rule_destination_set(namespace, name, index, FAMILY, "pod"),
                HASH_IP,
                destination_ips,
            )
            _port_rules(sync, chain, to_pods, source, destination_set, numeric)
            _named_port_rules(rule, to_pods, source, endpoints, HASH_IP)
            if not numeric and not endpoints:
                append_rule(sync, chain, to_pods, source, destination_set)
        if match_all_destinations and not match_all_ports:
            _port_rules(sync, chain, to_all, source, "", numeric)
            for endpoint in endpoints:
                append_rule(sync, chain, to_all, source, "", endpoint.protocol, endpoint.port)
        if match_all_destinations and match_all_ports:
            append_rule(sync, chain, to_all, source, "")
        blocks = ip_block_entries(peers)
        if blocks:
            block_set = sync.sets.refresh(
                kuberouter.rule_destination_set(namespace, name, index, FAMILY, "ipblock"),
                HASH_NET,
                blocks,
            )
            if match_all_ports:
                append_rule(sync, chain, to_blocks, source, block_set)
                continue
            _port_rules(sync, chain, to_blocks, source, block_set, numeric)


def sync_network_policy_chains(sync: NodeSync, policies: Sequence[NetworkPolicy]) -> dict[str, str]:
    """syncNetworkPolicyChains: one chain per policy (in the sync's policy order), its sets,
    and the K3s fork's ``DROP by policy`` log rule at its end. Returns policy key -> chain."""
    chains: dict[str, str] = {}
    for policy in policies:
        chain = kuberouter.policy_chain(policy.namespace, policy.name, sync.version, FAMILY)
        chains[policy.key] = chain
        sync.table.chain(chain)
        target_ips = _ips(pod for pod in sync.pods if policy_selects(policy, pod))
        types = policy.policy_types
        if "Ingress" in types:
            target_set = sync.sets.refresh(
                kuberouter.policy_destination_set(policy.namespace, policy.name, FAMILY),
                HASH_IP,
                target_ips,
            )
            process_ingress_rules(sync, policy, chain, target_set)
        if "Egress" in types:
            source_set = sync.sets.refresh(
                kuberouter.policy_source_set(policy.namespace, policy.name, FAMILY),
                HASH_IP,
                target_ips,
            )
            process_egress_rules(sync, policy, chain, source_set)
        limit, burst, warnings = kuberouter.nflog_settings(policy.annotations)
        sync.warnings += [f"policy {policy.key}: {warning}" for warning in warnings]
        sync.table.append(
            chain,
            *("-m", "comment", "--comment", "rule to log dropped traffic"),
            *("-m", "limit", "--limit", limit, "--limit-burst", str(burst)),
            *("-m", "mark", "!", "--mark", "0x10000/0x10000"),
            *("-j", "NFLOG", "--nflog-group", str(kuberouter.NFLOG_GROUP)),
            *("--nflog-prefix", kuberouter.drop_prefix(policy.namespace, policy.name)),
        )
    return chains
