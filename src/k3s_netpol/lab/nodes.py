"""The cluster laid out on the lab's nodes: which pods each node hosts, its cni0 and pod subnet,
and the ``flannel.1`` entries flannel's vxlan backend writes for the other nodes.

A pod runs on the lab node its ``spec.nodeName`` names. A pod whose ``spec.nodeName`` is unset or
names a node the lab does not have runs on the lab node whose pod subnet holds its IP (a K3s
node's podCIDR decides that too); without such a node it is a peer only (in the ipsets, not in a
network namespace), or, with no ``spec.nodeName`` at all, an error.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from k3s_netpol.lab.common import (
    BRIDGE_NAME,
    FLANNEL_DEVICE,
    FLANNEL_PORT,
    FLANNEL_VNI,
    LabError,
    LabPod,
    netns_name,
    veth_name,
)
from k3s_netpol.model import Cluster, Pod

_NODE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,252}")


@dataclass(frozen=True)
class NodeSpec:
    """A lab node: its name, cni0's address/prefix (the pod subnet) and, for flannel.1, the
    node's own address on the network the nodes share."""

    name: str
    bridge_address: str
    node_ip: str | None = None

    @property
    def bridge(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.bridge_address)

    @property
    def pod_cidr(self) -> str:
        return str(self.bridge.network)

    @property
    def flannel_mac(self) -> str:
        """A stable, locally administered MAC for the node's flannel.1 (flannel picks one at
        random and publishes it in the node's annotations; the lab derives it from the name)."""
        digest = hashlib.sha256(f"flannel:{self.name}".encode()).digest()
        return ":".join(f"{byte:02x}" for byte in (0x0A, *digest[:5]))

    def flannel(self, others: Sequence[NodeSpec]) -> dict[str, Any] | None:
        """flannel.1 and, per other node, the route, neighbour and FDB entry flannel writes."""
        if self.node_ip is None:
            return None
        return {
            "device": FLANNEL_DEVICE,
            "vni": FLANNEL_VNI,
            "port": FLANNEL_PORT,
            "mac": self.flannel_mac,
            "address": f"{self.bridge.network.network_address}/32",
            "local": self.node_ip,
            "remotes": [
                {
                    "node": other.name,
                    "subnet": other.pod_cidr,
                    "gateway": str(other.bridge.network.network_address),
                    "mac": other.flannel_mac,
                    "node_ip": other.node_ip,
                }
                for other in others
                if other.name != self.name and other.node_ip is not None
            ],
        }


def check_nodes(nodes: Sequence[NodeSpec]) -> None:
    if not nodes:
        raise LabError("nodes: the lab needs at least one node")
    seen: dict[str, str] = {}
    networks: list[tuple[str, ipaddress.IPv4Network]] = []
    for node in nodes:
        if not node.name:
            raise LabError("node: the lab node's name must not be empty")
        if not _NODE_NAME.fullmatch(node.name):
            raise LabError(
                f"node {node.name!r}: a node name is letters, digits, '.', '-' and '_' "
                "(it names a directory of compiled files)"
            )
        if node.name in seen:
            raise LabError(f"node {node.name}: listed twice")
        seen[node.name] = node.name
        try:
            interface = ipaddress.ip_interface(node.bridge_address)
        except ValueError:
            raise LabError(
                f"node {node.name}: bridge address: {node.bridge_address!r} is not an "
                "address/prefix"
            ) from None
        if interface.version != 4 or interface.network.prefixlen > 30:
            raise LabError(
                f"node {node.name}: bridge address: {node.bridge_address!r} must be an IPv4 "
                "address/prefix <= 30"
            )
        for other, network in networks:
            if network.overlaps(interface.network):
                raise LabError(
                    f"node {node.name}: pod subnet {interface.network} overlaps node {other}'s "
                    f"{network}"
                )
        networks.append((node.name, interface.network))
        if node.node_ip is not None:
            try:
                ipaddress.IPv4Address(node.node_ip)
            except ValueError:
                raise LabError(
                    f"node {node.name}: node IP {node.node_ip!r} is not an IPv4 address"
                ) from None


def _free_host(node: NodeSpec, address: ipaddress.IPv4Address) -> bool:
    bridge = node.bridge
    return address in bridge.network and address not in (
        bridge.ip,
        bridge.network.network_address,
        bridge.network.broadcast_address,
    )


def _host_node(pod: Pod, ip: str, nodes: Sequence[NodeSpec]) -> NodeSpec | None:
    address = ipaddress.IPv4Address(ip)
    by_name = {node.name: node for node in nodes}
    named = by_name.get(pod.node or "")
    if named is not None:
        if not _free_host(named, address):
            raise LabError(
                f"pod {pod.key}: status.podIP {ip} is not a free host address of node "
                f"{named.name}'s pod subnet {named.pod_cidr} (bridge {named.bridge.ip})"
            )
        return named
    for node in nodes:
        if address in node.bridge.network:
            if not _free_host(node, address):
                raise LabError(
                    f"pod {pod.key}: status.podIP {ip} is not a free host address of the lab "
                    f"bridge network {node.pod_cidr} (bridge {node.bridge.ip})"
                )
            return node
    if pod.node is None:
        networks = ", ".join(f"{node.pod_cidr} (bridge {node.bridge.ip})" for node in nodes)
        raise LabError(
            f"pod {pod.key}: status.podIP {ip} is not a free host address of the lab bridge "
            f"network {networks}"
        )
    return None


def place_pods(
    cluster: Cluster, nodes: Sequence[NodeSpec], netns_prefix: str
) -> tuple[dict[str, list[LabPod]], list[str]]:
    """The pods each lab node hosts, in manifest order, and the warnings about pods left out."""
    placed: dict[str, list[LabPod]] = {node.name: [] for node in nodes}
    warnings: list[str] = []
    seen_ips: dict[str, str] = {}
    seen_veths: dict[str, str] = {}
    for pod in cluster.pods:
        if pod.ip is None:
            warnings.append(
                f"pod {pod.key}: no status.podIP, so it is not on a lab node "
                "(kube-router ignores pods without an IP)"
            )
            continue
        if pod.ip in seen_ips:
            raise LabError(
                f"pod {pod.key}: status.podIP {pod.ip} is already the IP of pod {seen_ips[pod.ip]}"
            )
        seen_ips[pod.ip] = pod.key
        node = _host_node(pod, pod.ip, nodes)
        if node is None:
            continue
        veth = veth_name(pod, netns_prefix)
        if veth in seen_veths:
            raise LabError(f"pod {pod.key}: veth name {veth} collides with {seen_veths[veth]}")
        seen_veths[veth] = pod.key
        placed[node.name].append(
            LabPod(
                namespace=pod.namespace,
                name=pod.name,
                ip=pod.ip,
                netns=netns_name(pod, netns_prefix),
                veth=veth,
                ports=pod.ports,
                node=node.name,
            )
        )
    return placed, warnings


def bridge_document(node: NodeSpec) -> dict[str, str]:
    return {"name": BRIDGE_NAME, "address": node.bridge_address}


def parse_node_spec(text: str, default_bridge: str) -> NodeSpec:
    """``NAME``, ``NAME=BRIDGE_ADDRESS`` or ``NAME=BRIDGE_ADDRESS@NODE_IP`` (the CLI's --node)."""
    name, separator, rest = text.partition("=")
    if not separator:
        return NodeSpec(name, default_bridge)
    bridge, at, node_ip = rest.partition("@")
    if at and not node_ip:
        raise LabError(f"--node {text!r}: expected NAME=BRIDGE_ADDRESS@NODE_IP")
    return NodeSpec(name, bridge or default_bridge, node_ip or None)
