"""Compile a cluster's NetworkPolicies into kube-router's ipsets and filter table, for one node.

The lab stands in for a K3s node's data path: pods are network namespaces on a ``cni0`` bridge,
and the rules are the ones kube-router's network policy controller (the k3s-io fork, branch
``k3s-v2.6``, ``pkg/controllers/netpol``) would program on that node: the same ipset names and
types, the same chains, rule order, comments, marks and NFLOG rules. Three files come out:

- ``ipset.restore``: input for ``ipset restore -exist``; every set is filled in a temporary set
  and swapped in, as kube-router's ``BuildIPSetRestore`` does, so each set changes atomically;
- ``iptables.rules``: input for ``iptables-restore``: the whole filter table, loaded in one
  transaction;
- ``lab.json``: the node, the bridge, the local pods (netns, veth, ports) and the model's
  expected probes between them.

Two choices kube-router makes at run time are fixed here so that the same input gives the same
bytes: the sync version (a timestamp in kube-router) is ``sync_version``, and the order of pods
and policies (Go map and informer order in kube-router) is the order of the manifests. One
deliberate difference, documented in docs/lab.md: the pod chain's unprefixed NFLOG rule takes
its rate limit from the annotations of the policies selecting the pod (the fastest of them)
instead of kube-router's fixed 10/minute burst 10, so that a probe matrix can see every drop.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from k3s_netpol import kuberouter
from k3s_netpol.files import write_if_changed
from k3s_netpol.model import (
    Cluster,
    ContainerPort,
    NetworkPolicy,
    Pod,
    expect,
    peer_matches,
    policy_selects,
    probes_document,
)

BRIDGE_NAME: Final = "cni0"
BRIDGE_ADDRESS: Final = "10.42.0.1/24"
# K3s defaults: --service-cidr and --service-node-port-range, as kube-router receives them.
SERVICE_CLUSTER_IP_RANGE: Final = "10.43.0.0/16"
SERVICE_NODE_PORT_RANGE: Final = "30000:32767"
DEFAULT_SYNC_VERSION: Final = "0"
FAMILY: Final = "IPv4"
IPSET_FILE: Final = "ipset.restore"
IPTABLES_FILE: Final = "iptables.rules"
LAB_FILE: Final = "lab.json"
HASH_IP: Final = "hash:ip"
HASH_NET: Final = "hash:net"
# iptables' comment match holds at most 255 characters.
MAX_COMMENT: Final = 255
_BUILTIN_TO_KUBE: Final = (
    ("INPUT", kuberouter.INPUT_CHAIN),
    ("FORWARD", kuberouter.FORWARD_CHAIN),
    ("OUTPUT", kuberouter.OUTPUT_CHAIN),
)
_ICMP_RULES: Final = (
    ("echo-request", "allow icmp echo requests"),
    ("destination-unreachable", "allow icmp destination unreachable messages"),
    ("time-exceeded", "allow icmp time exceeded messages"),
)
# The comments appendRuleToPolicyChain's callers give each MARK/RETURN pair, verbatim.
_PODS_TO_PODS: Final = (
    "rule to ACCEPT traffic from source pods to dest pods selected by policy name"
)
_ALL_TO_PODS: Final = (
    "rule to ACCEPT traffic from all sources to dest pods selected by policy name:"
)
_BLOCKS_TO_PODS: Final = (
    "rule to ACCEPT traffic from specified ipBlocks to dest pods selected by policy name:"
)
_PODS_TO_ALL: Final = (
    "rule to ACCEPT traffic from source pods to all destinations selected by policy name:"
)
_PODS_TO_BLOCKS: Final = (
    "rule to ACCEPT traffic from source pods to specified ipBlocks selected by policy name:"
)
_LIMIT_SECONDS: Final = {
    "second": 1,
    "s": 1,
    "minute": 60,
    "m": 60,
    "hour": 3600,
    "h": 3600,
    "day": 86400,
    "d": 86400,
}


class LabError(ValueError):
    """The cluster cannot be laid out on the lab node; the message names the pod or field."""


@dataclass(frozen=True)
class LabPod:
    """A pod hosted by the lab node: its network namespace and the bridge port it sits on."""

    namespace: str
    name: str
    ip: str
    netns: str
    veth: str
    ports: tuple[ContainerPort, ...]
    node: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "ip": self.ip,
            "netns": self.netns,
            "veth": self.veth,
            "ports": [
                {"port": port.port, "protocol": port.protocol, "name": port.name}
                for port in self.ports
            ],
            "node": self.node,
            "tcp_ports": sorted({port.port for port in self.ports if port.protocol == "TCP"}),
        }


@dataclass(frozen=True)
class CompiledLab:
    """The three files of a compiled lab, as text, plus the warnings kube-router would log."""

    ipset_restore: str
    iptables_rules: str
    lab: Mapping[str, Any]
    warnings: tuple[str, ...] = ()

    def files(self) -> dict[str, bytes]:
        lab_text = json.dumps(self.lab, indent=2, sort_keys=True) + "\n"
        return {
            IPSET_FILE: self.ipset_restore.encode(),
            IPTABLES_FILE: self.iptables_rules.encode(),
            LAB_FILE: lab_text.encode(),
        }


@dataclass
class _IPSet:
    kind: str
    entries: list[str]


@dataclass(frozen=True)
class _PortRule:
    """One resolved port of a rule: protocol, port ("" for all) and end port ("" for none)."""

    protocol: str
    port: str = ""
    end_port: str = ""


@dataclass(frozen=True)
class _NamedEndpoint:
    protocol: str
    port: str
    ips: tuple[str, ...]


@dataclass
class _Table:
    """The filter table being written: chains in declaration order, rules per chain."""

    chains: dict[str, list[str]] = field(default_factory=dict)

    def chain(self, name: str) -> list[str]:
        return self.chains.setdefault(name, [])

    def append(self, chain: str, *args: str) -> None:
        self.chain(chain).append(_render_rule(chain, args))


def _quote(arg: str) -> str:
    if arg == "" or any(character in arg for character in " \t'\"!"):
        if arg == "!":
            return arg
        return '"' + arg.replace('"', '\\"') + '"'
    return arg


def _render_rule(chain: str, args: Sequence[str]) -> str:
    for index, arg in enumerate(args[:-1]):
        if arg in ("--comment", "--nflog-prefix") and len(args[index + 1]) > MAX_COMMENT:
            raise LabError(
                f"chain {chain}: {arg} {args[index + 1][:60]}...: longer than iptables allows "
                f"({MAX_COMMENT} characters); shorten the namespace, pod or policy name"
            )
    return " ".join(["-A", chain, *(_quote(arg) for arg in args)])


def netns_name(pod: Pod, prefix: str = "") -> str:
    """The pod's network namespace: ``<prefix><namespace>_<name>`` (``_`` is never in a name)."""
    name = f"{prefix}{pod.namespace}_{pod.name}"
    if len(name) > 200:
        name = f"{prefix}{pod.namespace[:60]}_{pod.name[:60]}_{_short_hash(pod.key)}"
    return name


def veth_name(pod: Pod, prefix: str = "") -> str:
    """The node-side veth of the pod: ``veth`` + 8 hex digits (interface names stop at 15)."""
    return "veth" + _short_hash(prefix + pod.key)[:8]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _uuid_comment(chain: str, args: list[str]) -> list[str]:
    """kube-router's addUUIDForRuleSpec: append ' - <hash of chain + rule>' to the comment."""
    digest = kuberouter.name_hash(chain, "".join(args))
    index = args.index("--comment") + 1
    return [*args[:index], f"{args[index]} - {digest}", *args[index + 1 :]]


def _ip_sort_key(entry: str) -> tuple[int, int, str]:
    network = ipaddress.ip_network(entry.split()[0], strict=False)
    return (int(network.network_address), network.prefixlen, entry)


def _limit_per_second(limit: str) -> float:
    rate, _, unit = limit.partition("/")
    return int(rate) / _LIMIT_SECONDS[unit or "second"]


class _Compiler:
    def __init__(
        self,
        cluster: Cluster,
        node: str,
        *,
        bridge_address: str,
        netns_prefix: str,
        sync_version: str,
    ) -> None:
        self.cluster = cluster
        self.node = node
        self.version = sync_version
        self.netns_prefix = netns_prefix
        self.bridge = ipaddress.ip_interface(bridge_address)
        self.sets: dict[str, _IPSet] = {}
        self.table = _Table()
        self.warnings: list[str] = []
        # isNetPolActionable: kube-router ignores pods without an IP address.
        self.pods = [pod for pod in cluster.pods if pod.ip is not None]
        self.local_pods = self._local_pods()

    # ------------------------------------------------------------------ the node's pods

    def _local_pods(self) -> list[LabPod]:
        local: list[LabPod] = []
        seen_ips: dict[str, str] = {}
        seen_veths: dict[str, str] = {}
        for pod in self.cluster.pods:
            if pod.node not in (None, self.node):
                continue
            if pod.ip is None:
                self.warnings.append(
                    f"pod {pod.key}: no status.podIP, so it is not on the lab node "
                    "(kube-router ignores pods without an IP)"
                )
                continue
            address = ipaddress.ip_address(pod.ip)
            if address not in self.bridge.network or address in (
                self.bridge.ip,
                self.bridge.network.network_address,
                self.bridge.network.broadcast_address,
            ):
                raise LabError(
                    f"pod {pod.key}: status.podIP {pod.ip} is not a free host address of the "
                    f"lab bridge network {self.bridge.network} (bridge {self.bridge.ip})"
                )
            if pod.ip in seen_ips:
                raise LabError(
                    f"pod {pod.key}: status.podIP {pod.ip} is already the IP of pod "
                    f"{seen_ips[pod.ip]}"
                )
            seen_ips[pod.ip] = pod.key
            veth = veth_name(pod, self.netns_prefix)
            if veth in seen_veths:
                raise LabError(f"pod {pod.key}: veth name {veth} collides with {seen_veths[veth]}")
            seen_veths[veth] = pod.key
            local.append(
                LabPod(
                    namespace=pod.namespace,
                    name=pod.name,
                    ip=pod.ip,
                    netns=netns_name(pod, self.netns_prefix),
                    veth=veth,
                    ports=pod.ports,
                    node=self.node,
                )
            )
        return local

    # ------------------------------------------------------------------ sets

    def _refresh_set(self, name: str, kind: str, entries: Iterable[str]) -> str:
        """RefreshSet: the first call fixes the set's type, every call replaces its entries."""
        unique = sorted(set(entries), key=_ip_sort_key)
        if name in self.sets:
            self.sets[name].entries = unique
        else:
            self.sets[name] = _IPSet(kind, unique)
        return name

    def _ipset_restore(self) -> str:
        """BuildIPSetRestore: per set, fill a temporary set of the same options, swap it in."""
        lines: list[str] = []
        temporary: dict[str, str] = {}
        for name in sorted(self.sets):
            ipset = self.sets[name]
            options = f"{ipset.kind} timeout 0"
            temp_name = temporary.get(options)
            if temp_name is None:
                digest = hashlib.sha1(f"tmp:{options}".encode(), usedforsecurity=False).digest()
                temp_name = "TMP-" + base64.b32encode(digest[:10]).decode()
                temporary[options] = temp_name
                lines += [f"create {temp_name} {options}", f"flush {temp_name}"]
            for entry in ipset.entries:
                address, _, flag = entry.partition(" ")
                lines.append(f"add {temp_name} {address} timeout 0" + (f" {flag}" if flag else ""))
            lines += [f"create {name} {options}", f"swap {temp_name} {name}", f"flush {temp_name}"]
        lines += [f"destroy {temp_name}" for temp_name in sorted(temporary.values())]
        return "".join(line + "\n" for line in lines)

    # ------------------------------------------------------------------ peers and ports

    def _peer_pod_ips(self, policy: NetworkPolicy, peers: Sequence[Mapping[str, Any]]) -> list[str]:
        """evalPodPeer over every selector peer of a rule (ipBlock peers hold no pods)."""
        ips: list[str] = []
        for peer in peers:
            if peer.get("podSelector") is None and peer.get("namespaceSelector") is None:
                continue
            ips += [
                pod.ip
                for pod in self.pods
                if pod.ip is not None and peer_matches(self.cluster, policy, peer, pod)
            ]
        return ips

    def _peer_pods(self, policy: NetworkPolicy, peers: Sequence[Mapping[str, Any]]) -> list[Pod]:
        pods: list[Pod] = []
        for peer in peers:
            if peer.get("podSelector") is None and peer.get("namespaceSelector") is None:
                continue
            pods += [pod for pod in self.pods if peer_matches(self.cluster, policy, peer, pod)]
        return pods

    @staticmethod
    def _ip_block_entries(peers: Sequence[Mapping[str, Any]]) -> list[str]:
        """evalIPBlockPeer: cidr entries, except entries as ``nomatch``, /0 split in halves."""
        entries: list[str] = []
        for peer in peers:
            block = peer.get("ipBlock")
            if block is None or peer.get("podSelector") is not None:
                continue
            if peer.get("namespaceSelector") is not None:
                continue
            cidr = str(block["cidr"])
            if ipaddress.ip_network(cidr, strict=False).version != 4:
                continue
            entries += ["0.0.0.0/1", "128.0.0.0/1"] if cidr.endswith("/0") else [cidr]
            for excluded in block.get("except") or ():
                excluded = str(excluded)
                if excluded.endswith("/0"):
                    entries += ["0.0.0.0/1 nomatch", "128.0.0.0/1 nomatch"]
                else:
                    entries.append(f"{excluded} nomatch")
        return entries

    @staticmethod
    def _named_ports(pods: Iterable[Pod]) -> dict[tuple[str, str], dict[int, list[str]]]:
        """grabNamedPortFromPod: (port name, protocol) -> port number -> the pods' IPs."""
        named: dict[tuple[str, str], dict[int, list[str]]] = {}
        for pod in pods:
            if pod.ip is None:
                continue
            for port in pod.ports:
                by_number = named.setdefault((port.name or "", port.protocol), {})
                by_number.setdefault(port.port, []).append(pod.ip)
        return named

    @staticmethod
    def _process_ports(
        rule_ports: Sequence[Mapping[str, Any]],
        named: Mapping[tuple[str, str], Mapping[int, list[str]]],
    ) -> tuple[list[_PortRule], list[_NamedEndpoint]]:
        """processNetworkPolicyPorts: numeric ports as they are, named ones resolved."""
        numeric: list[_PortRule] = []
        resolved: list[_NamedEndpoint] = []
        for entry in rule_ports:
            protocol = str(entry.get("protocol") or "TCP")
            port = entry.get("port")
            if port is None:
                numeric.append(_PortRule(protocol))
            elif isinstance(port, int):
                end_port = entry.get("endPort")
                end = str(end_port) if isinstance(end_port, int) and end_port >= port else ""
                numeric.append(_PortRule(protocol, str(port), end))
            else:
                for number, ips in sorted(named.get((str(port), protocol), {}).items()):
                    resolved.append(_NamedEndpoint(protocol, str(number), tuple(ips)))
        return numeric, resolved

    # ------------------------------------------------------------------ policy chains

    def _append_policy_rule(
        self,
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
        self.table.append(chain, *args, "-j", "MARK", "--set-xmark", "0x10000/0x10000")
        self.table.append(chain, *args, "-m", "mark", "--mark", "0x10000/0x10000", "-j", "RETURN")

    def _append_port_rules(
        self,
        chain: str,
        comment: str,
        source_set: str,
        destination_set: str,
        ports: Sequence[_PortRule],
    ) -> None:
        for port in ports:
            self._append_policy_rule(
                chain, comment, source_set, destination_set, port.protocol, port.port, port.end_port
            )

    def _append_named_port_rules(
        self,
        chain: str,
        comment: str,
        source_set: str,
        endpoints: Sequence[_NamedEndpoint],
        policy: NetworkPolicy,
        direction: kuberouter.Direction,
        rule_index: int,
        set_kind: str,
    ) -> None:
        """One rule per endpoint of a named port, its destination the endpoint's own set."""
        for endpoint_index, endpoint in enumerate(endpoints):
            named_set = self._refresh_set(
                kuberouter.named_port_set(
                    policy.namespace, policy.name, direction, rule_index, endpoint_index, FAMILY
                ),
                set_kind,
                endpoint.ips,
            )
            self._append_policy_rule(
                chain, comment, source_set, named_set, endpoint.protocol, endpoint.port
            )

    def _ingress_rules(self, policy: NetworkPolicy, chain: str, target_set: str) -> None:
        name, namespace = policy.name, policy.namespace
        who = f"{name} namespace {namespace}"
        from_pods = f"{_PODS_TO_PODS} {who}"
        from_all = f"{_ALL_TO_PODS} {who}"
        from_blocks = f"{_BLOCKS_TO_PODS} {who}"
        named = self._named_ports(pod for pod in self.pods if policy_selects(policy, pod))
        for index, rule in enumerate(policy.spec.get("ingress") or ()):
            peers = rule.get("from") or []
            rule_ports = rule.get("ports") or []
            match_all_sources = not peers
            match_all_ports = not rule_ports
            numeric, endpoints = self._process_ports(rule_ports, named)
            source_ips = self._peer_pod_ips(policy, peers)
            if source_ips:
                source_set = self._refresh_set(
                    kuberouter.rule_source_set(
                        namespace, name, "ingressrule", index, FAMILY, "pod"
                    ),
                    HASH_IP,
                    source_ips,
                )
                self._append_port_rules(chain, from_pods, source_set, target_set, numeric)
                self._append_named_port_rules(
                    chain, from_pods, source_set, endpoints, policy, "ingressrule", index, HASH_IP
                )
                if not numeric and not endpoints:
                    self._append_policy_rule(chain, from_pods, source_set, target_set)
            if match_all_sources and not match_all_ports:
                self._append_port_rules(chain, from_all, "", target_set, numeric)
                self._append_named_port_rules(
                    chain, from_all, "", endpoints, policy, "ingressrule", index, HASH_IP
                )
            if match_all_sources and match_all_ports:
                self._append_policy_rule(chain, from_all, "", target_set)
            blocks = self._ip_block_entries(peers)
            if blocks:
                block_set = self._refresh_set(
                    kuberouter.rule_source_set(
                        namespace, name, "ingressrule", index, FAMILY, "ipblock"
                    ),
                    HASH_NET,
                    blocks,
                )
                if match_all_ports:
                    self._append_policy_rule(chain, from_blocks, block_set, target_set)
                    continue
                self._append_port_rules(chain, from_blocks, block_set, target_set, numeric)
                self._append_named_port_rules(
                    chain, from_blocks, block_set, endpoints, policy, "ingressrule", index, HASH_NET
                )

    def _egress_rules(self, policy: NetworkPolicy, chain: str, source_set: str) -> None:
        name, namespace = policy.name, policy.namespace
        who = f"{name} namespace {namespace}"
        to_pods = f"{_PODS_TO_PODS} {who}"
        to_all = f"{_PODS_TO_ALL} {who}"
        to_blocks = f"{_PODS_TO_BLOCKS} {who}"
        for index, rule in enumerate(policy.spec.get("egress") or ()):
            peers = rule.get("to") or []
            rule_ports = rule.get("ports") or []
            match_all_destinations = not peers
            match_all_ports = not rule_ports
            if match_all_destinations:
                has_named = any(isinstance(entry.get("port"), str) for entry in rule_ports)
                named_pods = (
                    [pod for pod in self.pods if pod.namespace == namespace] if has_named else []
                )
            else:
                named_pods = self._peer_pods(policy, peers)
            numeric, endpoints = self._process_ports(rule_ports, self._named_ports(named_pods))
            destination_ips = self._peer_pod_ips(policy, peers)
            if destination_ips:
                destination_set = self._refresh_set(
                    kuberouter.rule_destination_set(namespace, name, index, FAMILY, "pod"),
                    HASH_IP,
                    destination_ips,
                )
                self._append_port_rules(chain, to_pods, source_set, destination_set, numeric)
                self._append_named_port_rules(
                    chain, to_pods, source_set, endpoints, policy, "egressrule", index, HASH_IP
                )
                if not numeric and not endpoints:
                    self._append_policy_rule(chain, to_pods, source_set, destination_set)
            if match_all_destinations and not match_all_ports:
                self._append_port_rules(chain, to_all, source_set, "", numeric)
                for endpoint in endpoints:
                    self._append_policy_rule(
                        chain, to_all, source_set, "", endpoint.protocol, endpoint.port
                    )
            if match_all_destinations and match_all_ports:
                self._append_policy_rule(chain, to_all, source_set, "")
            blocks = self._ip_block_entries(peers)
            if blocks:
                block_set = self._refresh_set(
                    kuberouter.rule_destination_set(namespace, name, index, FAMILY, "ipblock"),
                    HASH_NET,
                    blocks,
                )
                if match_all_ports:
                    self._append_policy_rule(chain, to_blocks, source_set, block_set)
                    continue
                self._append_port_rules(chain, to_blocks, source_set, block_set, numeric)

    def _policy_chains(self) -> dict[str, str]:
        """syncNetworkPolicyChains: one chain per policy, its sets, and its DROP log rule."""
        chains: dict[str, str] = {}
        for policy in self.cluster.policies:
            chain = kuberouter.policy_chain(policy.namespace, policy.name, self.version, FAMILY)
            chains[policy.key] = chain
            self.table.chain(chain)
            target_ips = [
                pod.ip for pod in self.pods if pod.ip is not None and policy_selects(policy, pod)
            ]
            types = policy.policy_types
            if "Ingress" in types:
                target_set = self._refresh_set(
                    kuberouter.policy_destination_set(policy.namespace, policy.name, FAMILY),
                    HASH_IP,
                    target_ips,
                )
                self._ingress_rules(policy, chain, target_set)
            if "Egress" in types:
                source_set = self._refresh_set(
                    kuberouter.policy_source_set(policy.namespace, policy.name, FAMILY),
                    HASH_IP,
                    target_ips,
                )
                self._egress_rules(policy, chain, source_set)
            limit, burst, warnings = kuberouter.nflog_settings(policy.annotations)
            self.warnings += [f"policy {policy.key}: {warning}" for warning in warnings]
            self.table.append(
                chain,
                *("-m", "comment", "--comment", "rule to log dropped traffic"),
                *("-m", "limit", "--limit", limit, "--limit-burst", str(burst)),
                *("-m", "mark", "!", "--mark", "0x10000/0x10000"),
                *("-j", "NFLOG", "--nflog-group", str(kuberouter.NFLOG_GROUP)),
                *("--nflog-prefix", kuberouter.drop_prefix(policy.namespace, policy.name)),
            )
        return chains

    # ------------------------------------------------------------------ pod chains

    def _pod_log_limit(self, selecting: Sequence[NetworkPolicy]) -> tuple[str, int]:
        """The lab's limit for the pod chain's log rule: the fastest of the selecting policies'.

        kube-router writes 10/minute burst 10 here; see the module docstring and docs/lab.md.
        """
        limit, burst = kuberouter.DEFAULT_NFLOG_LIMIT, kuberouter.DEFAULT_NFLOG_BURST
        for policy in selecting:
            policy_limit, policy_burst, _ = kuberouter.nflog_settings(policy.annotations)
            if _limit_per_second(policy_limit) > _limit_per_second(limit):
                limit = policy_limit
            burst = max(burst, policy_burst)
        return limit, burst

    def _pod_chain(self, lab_pod: LabPod, policy_chains: Mapping[str, str]) -> str:
        """syncPodFirewallChains for one pod, rules in the order the -I 1 inserts leave them."""
        pod = self.cluster.pod(lab_pod.key)
        ip = lab_pod.ip
        chain = kuberouter.pod_firewall_chain(pod.namespace, pod.name, self.version)
        self.table.chain(chain)
        selecting = [policy for policy in self.cluster.policies if policy_selects(policy, pod)]
        has_ingress = any("Ingress" in policy.policy_types for policy in selecting)
        has_egress = any("Egress" in policy.policy_types for policy in selecting)
        self.table.append(
            chain,
            *("-m", "comment", "--comment", "common bi-directional traffic policy rules"),
            *("-j", kuberouter.COMMON_NETPOL_CHAIN),
        )
        self.table.append(
            chain,
            "-m",
            "comment",
            "--comment",
            "rule to permit the traffic traffic to pods when source is the pod's local node",
            *("-m", "addrtype", "--src-type", "LOCAL", "-d", ip, "-j", "ACCEPT"),
        )
        if not has_egress:
            self.table.append(
                chain,
                *("-s", ip, "-m", "comment", "--comment"),
                "run through default egress network policy chain",
                *("-j", kuberouter.DEFAULT_NETPOL_CHAIN),
            )
        if not has_ingress:
            self.table.append(
                chain,
                *("-d", ip, "-m", "comment", "--comment"),
                "run through default ingress network policy chain",
                *("-j", kuberouter.DEFAULT_NETPOL_CHAIN),
            )
        for policy in reversed(selecting):
            types = policy.policy_types
            address: tuple[str, ...] = ()
            if "Ingress" in types and "Egress" not in types:
                address = ("-d", ip)
            elif "Egress" in types and "Ingress" not in types:
                address = ("-s", ip)
            self.table.append(
                chain,
                *address,
                *("-m", "comment", "--comment", f"run through nw policy {policy.name}"),
                *("-j", policy_chains[policy.key]),
            )
        limit, burst = self._pod_log_limit(selecting)
        self.table.append(
            chain,
            "-m",
            "comment",
            "--comment",
            f"rule to log dropped traffic POD name:{pod.name} namespace: {pod.namespace}",
            *("-m", "mark", "!", "--mark", "0x10000/0x10000"),
            *("-m", "limit", "--limit", limit, "--limit-burst", str(burst)),
            *("-j", "NFLOG", "--nflog-group", str(kuberouter.NFLOG_GROUP)),
        )
        self.table.append(
            chain,
            "-m",
            "comment",
            "--comment",
            f"rule to REJECT traffic destined for POD name:{pod.name} namespace: {pod.namespace}",
            *("-m", "mark", "!", "--mark", "0x10000/0x10000", "-j", "REJECT"),
        )
        self.table.append(chain, "-j", "MARK", "--set-xmark", "0x0/0x10000")
        self.table.append(
            chain,
            *("-m", "comment", "--comment"),
            "set mark to ACCEPT traffic that comply to network policies",
            *("-j", "MARK", "--set-xmark", "0x20000/0x20000"),
        )
        return chain

    def _intercept(self, lab_pod: LabPod, chain: str) -> None:
        """interceptPodInboundTraffic then interceptPodOutboundTraffic for one pod."""
        who = f"POD name:{lab_pod.name} namespace: {lab_pod.namespace} to chain {chain}"
        to_pod = f"rule to jump traffic destined to {who}"
        from_pod = f"rule to jump traffic from {who}"
        forward, output = kuberouter.FORWARD_CHAIN, kuberouter.OUTPUT_CHAIN
        bridged = ("-m", "physdev", "--physdev-is-bridged")
        self.table.append(
            forward, "-m", "comment", "--comment", to_pod, "-d", lab_pod.ip, "-j", chain
        )
        self.table.append(
            output, "-m", "comment", "--comment", to_pod, "-d", lab_pod.ip, "-j", chain
        )
        self.table.append(
            forward, *bridged, "-m", "comment", "--comment", to_pod, "-d", lab_pod.ip, "-j", chain
        )
        for _, kube_chain in _BUILTIN_TO_KUBE:
            self.table.append(
                kube_chain, "-m", "comment", "--comment", from_pod, "-s", lab_pod.ip, "-j", chain
            )
        self.table.append(
            forward, *bridged, "-m", "comment", "--comment", from_pod, "-s", lab_pod.ip, "-j", chain
        )

    # ------------------------------------------------------------------ the table

    def _top_level(self) -> None:
        """ensureTopLevelChains, ensureDefaultNetworkPolicyChain and ensureCommonPolicyChain."""
        for builtin, _ in _BUILTIN_TO_KUBE:
            self.table.chain(builtin)
        for _, kube_chain in _BUILTIN_TO_KUBE:
            self.table.chain(kube_chain)
        self.table.chain(kuberouter.COMMON_NETPOL_CHAIN)
        self.table.chain(kuberouter.DEFAULT_NETPOL_CHAIN)
        for builtin, kube_chain in _BUILTIN_TO_KUBE:
            jump = ["-m", "comment", "--comment", "kube-router netpol", "-j", kube_chain]
            self.table.append(builtin, *_uuid_comment(builtin, jump))
        input_chain = kuberouter.INPUT_CHAIN
        cluster_ips = [
            *("-m", "comment", "--comment", "allow traffic to primary/secondary cluster IP range"),
            *("-d", SERVICE_CLUSTER_IP_RANGE, "-j", "RETURN"),
        ]
        self.table.append(input_chain, *_uuid_comment(input_chain, cluster_ips))
        for protocol in ("tcp", "udp"):
            node_ports = [
                *("-p", protocol, "-m", "comment", "--comment"),
                f"allow LOCAL {protocol.upper()} traffic to node ports",
                *("-m", "addrtype", "--dst-type", "LOCAL"),
                *("-m", "multiport", "--dports", SERVICE_NODE_PORT_RANGE, "-j", "RETURN"),
            ]
            self.table.append(input_chain, *_uuid_comment(input_chain, node_ports))
        self.table.append(
            kuberouter.DEFAULT_NETPOL_CHAIN,
            *("-j", "MARK", "-m", "comment", "--comment"),
            "rule to mark traffic matching a network policy",
            *("--set-xmark", "0x10000/0x10000"),
        )
        common = kuberouter.COMMON_NETPOL_CHAIN
        self.table.append(
            common,
            *("-m", "comment", "--comment", "rule to drop invalid state for pod"),
            *("-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"),
        )
        self.table.append(
            common,
            *("-m", "comment", "--comment", "rule for stateful firewall for pod"),
            *("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
        )
        for icmp_type, comment in _ICMP_RULES:
            self.table.append(
                common,
                *("-m", "comment", "--comment", comment),
                *("-p", "icmp", "--icmp-type", icmp_type, "-j", "ACCEPT"),
            )

    def _explicit_accept(self) -> None:
        """ensureExplicitAccept: ACCEPT what a pod chain marked 0x20000, after the jump."""
        for builtin, _ in _BUILTIN_TO_KUBE:
            self.table.append(
                builtin,
                "-m",
                "comment",
                "--comment",
                "KUBE-ROUTER rule to explicitly ACCEPT traffic that comply to network policies",
                *("-m", "mark", "--mark", "0x20000/0x20000", "-j", "ACCEPT"),
            )

    def _iptables_rules(self) -> str:
        builtins = {builtin for builtin, _ in _BUILTIN_TO_KUBE}
        lines = [
            f"# k3s-netpol lab: kube-router (k3s-v2.6) filter table for node {self.node}",
            "*filter",
        ]
        for name in self.table.chains:
            lines.append(f":{name} ACCEPT [0:0]" if name in builtins else f":{name} - [0:0]")
        for rules in self.table.chains.values():
            lines += rules
        lines.append("COMMIT")
        return "".join(line + "\n" for line in lines)

    def compile(self) -> CompiledLab:
        self._top_level()
        policy_chains = self._policy_chains()
        for lab_pod in self.local_pods:
            chain = self._pod_chain(lab_pod, policy_chains)
            self._intercept(lab_pod, chain)
        self._explicit_accept()
        local_keys = {pod.key for pod in self.local_pods}
        tcp_probes = [
            probe
            for probe in expect(self.cluster)
            if probe.protocol == "TCP"
            and probe.source in local_keys
            and probe.destination in local_keys
        ]
        lab = {
            "node": self.node,
            "bridge": {"name": BRIDGE_NAME, "address": str(self.bridge)},
            "sync_version": self.version,
            "pods": [pod.to_dict() for pod in self.local_pods],
            "probes": probes_document(tcp_probes)["probes"],
        }
        return CompiledLab(self._ipset_restore(), self._iptables_rules(), lab, tuple(self.warnings))


def compile_lab(
    cluster: Cluster,
    node: str,
    *,
    bridge_address: str = BRIDGE_ADDRESS,
    netns_prefix: str = "",
    sync_version: str = DEFAULT_SYNC_VERSION,
) -> CompiledLab:
    """Lay the cluster out on one lab node: kube-router's sets and filter table for its pods.

    Pods whose ``spec.nodeName`` is ``node`` or unset are the node's pods (the lab schedules
    unscheduled pods onto itself); pods elsewhere are peers only, as on a real node.
    """
    if not node:
        raise LabError("node: the lab node's name must not be empty")
    try:
        interface = ipaddress.ip_interface(bridge_address)
    except ValueError:
        raise LabError(f"bridge address: {bridge_address!r} is not an address/prefix") from None
    if interface.version != 4 or interface.network.prefixlen > 30:
        raise LabError(f"bridge address: {bridge_address!r} must be an IPv4 address/prefix <= 30")
    compiler = _Compiler(
        cluster,
        node,
        bridge_address=bridge_address,
        netns_prefix=netns_prefix,
        sync_version=sync_version,
    )
    return compiler.compile()


def write_compiled(compiled: CompiledLab, out_dir: str | Path) -> list[Path]:
    """Write the three files into ``out_dir``; returns those whose bytes changed.

    Each file is replaced atomically (written aside, then renamed) and only when it differs,
    so an unchanged compile leaves timestamps alone.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    for name, content in compiled.files().items():
        path = directory / name
        if write_if_changed(path, content):
            changed.append(path)
    return changed
