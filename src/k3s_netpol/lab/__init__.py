"""Compile a cluster's NetworkPolicies into kube-router's ipsets and filter table, per lab node.

The lab stands in for the data path of K3s nodes: pods are network namespaces on each node's
``cni0``, nodes reach each other's pods over a real ``flannel.1`` VXLAN device, and each node's
rules are the ones kube-router's network policy controller (the k3s-io fork, branch
``k3s-v2.6``, ``pkg/controllers/netpol``) would program there. The modules follow kube-router's
files, so each can be read beside the Go function it reproduces:

- ``controller``: network_policy_controller.go (``fullPolicySync``, top-level chains and jumps,
  the DEFAULT and COMMON chains, the explicit ACCEPT);
- ``policy``: policy.go (policy chains, their MARK/RETURN rules and DROP log rule);
- ``pod``: pod.go (pod chains, the jumps into them, the unprefixed log rule and REJECT);
- ``ipsets``: pkg/utils/ipset.go and ``evalIPBlockPeer`` (sets, ``ipset restore`` text);
- ``sync``: what a sync leaves to chance (orders, from a seed) and the lab's deviations;
- ``nodes``: the cluster laid out on the lab's nodes (pod subnets, flannel.1 entries);
- ``compiler`` and ``writer``: every node's sync, lab.json, the files on disk.
"""

from k3s_netpol.lab.common import (
    BRIDGE_ADDRESS,
    BRIDGE_NAME,
    BUILTIN_WORKLOADS,
    CLUSTER_CIDR,
    DEFAULT_SYNC_VERSION,
    IPSET_FILE,
    IPTABLES_FILE,
    LAB_FILE,
    CompiledLab,
    LabError,
    LabPod,
    netns_name,
    veth_name,
)
from k3s_netpol.lab.compiler import CompiledCluster, compile_cluster, compile_lab
from k3s_netpol.lab.nodes import NodeSpec, parse_node_spec
from k3s_netpol.lab.pod import LogLimit
from k3s_netpol.lab.sync import MAX_SEED, SyncOptions, check_seed, new_seed
from k3s_netpol.lab.writer import read_sync_summary, stored_seed, write_compiled

__all__ = [
    "BRIDGE_ADDRESS",
    "BRIDGE_NAME",
    "BUILTIN_WORKLOADS",
    "CLUSTER_CIDR",
    "DEFAULT_SYNC_VERSION",
    "IPSET_FILE",
    "IPTABLES_FILE",
    "LAB_FILE",
    "MAX_SEED",
    "CompiledCluster",
    "CompiledLab",
    "LabError",
    "LabPod",
    "LogLimit",
    "NodeSpec",
    "SyncOptions",
    "check_seed",
    "compile_cluster",
    "compile_lab",
    "netns_name",
    "new_seed",
    "parse_node_spec",
    "read_sync_summary",
    "stored_seed",
    "veth_name",
    "write_compiled",
]
