"""What one node's sync works on: the cluster, the sync version, the sets and the table."""

from __future__ import annotations

from dataclasses import dataclass, field

from k3s_netpol.lab.ipsets import IPSets
from k3s_netpol.lab.table import FilterTable
from k3s_netpol.model import Cluster, Pod


@dataclass
class NodeSync:
    """One node's sync: ``pods`` are the cluster's actionable pods (every node's, as the ipsets
    hold them); the pod chains are written for the node's own pods only."""

    cluster: Cluster
    node: str
    version: str
    pods: list[Pod]
    sets: IPSets = field(default_factory=IPSets)
    table: FilterTable = field(init=False)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.table = FilterTable(self.node)
