"""The filter table being written, as kube-router's ``filterTableRules`` buffer holds it.

kube-router writes ``iptables-restore`` text; the lab keeps the chains in declaration order and
each chain's rules in their final order, then prints the table in one piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from k3s_netpol import kuberouter
from k3s_netpol.lab.common import LabError

# iptables' comment match holds at most 255 characters.
MAX_COMMENT: Final = 255
BUILTIN_TO_KUBE: Final = (
    ("INPUT", kuberouter.INPUT_CHAIN),
    ("FORWARD", kuberouter.FORWARD_CHAIN),
    ("OUTPUT", kuberouter.OUTPUT_CHAIN),
)
BUILTINS: Final = frozenset(builtin for builtin, _ in BUILTIN_TO_KUBE)


def quote(arg: str) -> str:
    if arg == "!":
        return arg
    if arg == "" or any(character in arg for character in " \t'\"!"):
        return '"' + arg.replace('"', '\\"') + '"'
    return arg


def render_rule(chain: str, args: Sequence[str]) -> str:
    for index, arg in enumerate(args[:-1]):
        if arg in ("--comment", "--nflog-prefix") and len(args[index + 1]) > MAX_COMMENT:
            raise LabError(
                f"chain {chain}: {arg} {args[index + 1][:60]}...: longer than iptables allows "
                f"({MAX_COMMENT} characters); shorten the namespace, pod or policy name"
            )
    return " ".join(["-A", chain, *(quote(arg) for arg in args)])


def uuid_comment(chain: str, args: list[str]) -> list[str]:
    """addUUIDForRuleSpec (utils.go): append ' - <hash of chain + rule>' to the comment."""
    digest = kuberouter.name_hash(chain, "".join(args))
    index = args.index("--comment") + 1
    return [*args[:index], f"{args[index]} - {digest}", *args[index + 1 :]]


@dataclass
class FilterTable:
    """Chains in declaration order, rules per chain in their final order."""

    node: str
    chains: dict[str, list[str]] = field(default_factory=dict)

    def chain(self, name: str) -> list[str]:
        return self.chains.setdefault(name, [])

    def append(self, chain: str, *args: str) -> None:
        self.chain(chain).append(render_rule(chain, args))

    def restore_text(self) -> str:
        lines = [
            f"# k3s-netpol lab: kube-router (k3s-v2.6) filter table for node {self.node}",
            "*filter",
        ]
        for name in self.chains:
            lines.append(f":{name} ACCEPT [0:0]" if name in BUILTINS else f":{name} - [0:0]")
        for rules in self.chains.values():
            lines += rules
        lines.append("COMMIT")
        return "".join(line + "\n" for line in lines)
