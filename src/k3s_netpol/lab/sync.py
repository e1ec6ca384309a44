"""What a kube-router sync leaves to chance, drawn from a seed, and what the lab may change.

kube-router ranges over Go maps: the policy lister in ``buildNetworkPoliciesInfo`` (so the
order of the policy jumps in every pod chain) and ``allLocalPods`` in ``syncPodFirewallChains``
(so the order of the pod jumps in KUBE-ROUTER-FORWARD/INPUT/OUTPUT). Each node syncs on its own,
so each draws its own orders. The lab draws them from ``random.Random("<seed>:<node>")``: the
same seed gives the same bytes, a new seed is a new sync.

Every way the lab departs from a real node is a named setting, off by default; ``deviations``
lists the ones in use for lab.json and the report.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from k3s_netpol import kuberouter
from k3s_netpol.lab.common import LabError
from k3s_netpol.lab.pod import LogLimit

MAX_SEED: Final = 2**31 - 1
KUBE_ROUTER_POD_LOG_LIMIT: Final = LogLimit()

T = TypeVar("T")


def new_seed() -> int:
    return secrets.randbelow(MAX_SEED) + 1


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise LabError(f"seed: expected an integer from 0 to {MAX_SEED}, not {seed!r}")
    return seed


@dataclass(frozen=True)
class SyncOptions:
    """The sync's seed and the lab's deviations from a node (all off by default)."""

    seed: int
    manifest_order: bool = False
    pod_log_limit: LogLimit | None = None
    icmp_ratelimit_lifted: bool = False

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.pod_log_limit is not None:
            try:
                kuberouter.parse_nflog_limit(self.pod_log_limit.limit)
                kuberouter.parse_nflog_burst(str(self.pod_log_limit.burst))
            except ValueError as error:
                raise LabError(f"pod log limit: {error}") from None

    @property
    def effective_pod_log_limit(self) -> LogLimit:
        return self.pod_log_limit or KUBE_ROUTER_POD_LOG_LIMIT

    def order(self, node: str, what: str, items: Sequence[T]) -> list[T]:
        """``items`` (``what``: "policies" or "pods") in the order this node's sync ranges over
        them; manifest order when the ``manifest_order`` deviation is on."""
        ordered = list(items)
        if not self.manifest_order:
            random.Random(f"{self.seed}:{node}:{what}").shuffle(ordered)
        return ordered

    def deviations(self) -> list[dict[str, Any]]:
        """The deviations in use: the role variable, its value and what it changes."""
        found: list[dict[str, Any]] = []
        if self.pod_log_limit is not None:
            found.append(
                {
                    "variable": "netpol_lab_pod_log_limit",
                    "value": {
                        "limit": self.pod_log_limit.limit,
                        "burst": self.pod_log_limit.burst,
                    },
                    "changes": "the pod chains' unprefixed NFLOG rule's -m limit "
                    "(kube-router: 10/minute, burst 10)",
                }
            )
        if self.manifest_order:
            found.append(
                {
                    "variable": "netpol_lab_manifest_order",
                    "value": True,
                    "changes": "policy jumps and pod jumps in manifest order instead of a "
                    "per-sync shuffle",
                }
            )
        if self.icmp_ratelimit_lifted:
            found.append(
                {
                    "variable": "netpol_lab_lift_icmp_ratelimit",
                    "value": True,
                    "changes": "net.ipv4.icmp_ratelimit=0, icmp_msgs_per_sec/burst raised: "
                    "every REJECT is answered at once",
                }
            )
        return found
