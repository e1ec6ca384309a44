"""What every part of the lab compiler shares: constants, the error, a lab pod, a compiled node."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from k3s_netpol.model import ContainerPort, Pod

# The tutorial's workloads, the lab's default pods (`--builtin-workloads`).
BUILTIN_WORKLOADS: Final = Path(__file__).resolve().parents[1] / "data" / "lab" / "workloads.yaml"
BRIDGE_NAME: Final = "cni0"
BRIDGE_ADDRESS: Final = "10.42.0.1/24"
# K3s defaults: --cluster-cidr, --service-cidr and --service-node-port-range.
CLUSTER_CIDR: Final = "10.42.0.0/16"
SERVICE_CLUSTER_IP_RANGE: Final = "10.43.0.0/16"
SERVICE_NODE_PORT_RANGE: Final = "30000:32767"
DEFAULT_SYNC_VERSION: Final = "0"
FAMILY: Final = "IPv4"
IPSET_FILE: Final = "ipset.restore"
IPTABLES_FILE: Final = "iptables.rules"
LAB_FILE: Final = "lab.json"
HASH_IP: Final = "hash:ip"
HASH_NET: Final = "hash:net"
# flannel's vxlan backend on K3s: device flannel.1, VNI 1, the Linux VXLAN port.
FLANNEL_DEVICE: Final = "flannel.1"
FLANNEL_VNI: Final = 1
FLANNEL_PORT: Final = 8472


class LabError(ValueError):
    """The cluster cannot be laid out on the lab; the message names the node, pod or field."""


@dataclass(frozen=True)
class LabPod:
    """A pod hosted by a lab node: its network namespace and the bridge port it sits on."""

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
    """One node's compiled files, as text, plus the warnings kube-router would log."""

    ipset_restore: str
    iptables_rules: str
    lab: Mapping[str, Any]
    warnings: tuple[str, ...] = ()

    def files(self) -> dict[str, bytes]:
        return {
            IPSET_FILE: self.ipset_restore.encode(),
            IPTABLES_FILE: self.iptables_rules.encode(),
            LAB_FILE: json_bytes(self.lab),
        }


def json_bytes(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def netns_name(pod: Pod, prefix: str = "") -> str:
    """The pod's network namespace: ``<prefix><namespace>_<name>`` (``_`` is never in a name)."""
    name = f"{prefix}{pod.namespace}_{pod.name}"
    if len(name) > 200:
        name = f"{prefix}{pod.namespace[:60]}_{pod.name[:60]}_{short_hash(pod.key)}"
    return name


def veth_name(pod: Pod, prefix: str = "") -> str:
    """The node-side veth of the pod: ``veth`` + 8 hex digits (interface names stop at 15)."""
    return "veth" + short_hash(prefix + pod.key)[:8]
