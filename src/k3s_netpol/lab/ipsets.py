"""kube-router's ipsets: ``RefreshSet`` and ``BuildIPSetRestore`` (pkg/utils/ipset.go) and
``evalIPBlockPeer`` (policy.go).

Pod sets (``hash:ip``) are written sorted and without repeats (kube-router's order comes from its
informer's map and does not change what a ``hash:ip`` set matches). ipBlock sets (``hash:net``)
keep kube-router's order, the peers' order, repeats included: ``ipset restore -exist`` lets a later
``add`` of the same network overwrite an earlier one's ``nomatch`` flag, so the order decides
whether ``cidr`` or another peer's ``except`` wins.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from k3s_netpol.lab.common import HASH_IP


@dataclass
class IPSet:
    kind: str
    entries: list[str]


def _ip_sort_key(entry: str) -> tuple[int, int, str]:
    network = ipaddress.ip_network(entry.split()[0], strict=False)
    return (int(network.network_address), network.prefixlen, entry)


@dataclass
class IPSets:
    """The sets of one sync, by name."""

    sets: dict[str, IPSet] = field(default_factory=dict)

    def refresh(self, name: str, kind: str, entries: Iterable[str]) -> str:
        """RefreshSet: the first call fixes the set's type, every call replaces its entries."""
        listed = list(entries)
        if kind == HASH_IP:
            listed = sorted(set(listed), key=_ip_sort_key)
        if name in self.sets:
            self.sets[name].entries = listed
        else:
            self.sets[name] = IPSet(kind, listed)
        return name

    def restore_text(self) -> str:
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


def ip_block_entries(peers: Sequence[Mapping[str, Any]]) -> list[str]:
    """evalIPBlockPeer over a rule's peers, in their order: cidr, then its excepts as
    ``nomatch``; a /0 is written as its two /1 halves."""
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
