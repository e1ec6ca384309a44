"""`expect`'s answers at any size: the probe document streamed, a per-namespace summary, and
the tables (a matrix per port for small clusters, counts per destination past that).

All read `model.probe_columns` (one destination and port, every source's verdict as a
bitmask) and never hold one object per probe: the JSON writer emits one source's row at a time
from pieces the json module encoded once per pod and per column, so memory grows with the
number of pods, not with pods squared.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from k3s_netpol.model import Cluster, ClusterIndex, ProbeColumn

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

MATRIX_MAX_PODS = 40  # past this many pods, the table counts per destination
_SOURCE_MARK = "\x00"  # never in a pod key (DNS names)
_ENCODED_SOURCE_MARK = json.dumps(_SOURCE_MARK)


def write_probes_json(
    stream: TextIO, pod_keys: Sequence[str], columns: Iterable[ProbeColumn], indent: int | None
) -> None:
    """Write `{"probes": [{"from", "to", "port", "protocol", "allowed"}, ...]}` and a newline,
    exactly as `json.dumps(document, separators=(",", ":"))` (indent None) or
    `json.dumps(document, indent=indent)` would: source by source, then destination, then port.
    `columns` come as probe_columns yields them, destination by destination.
    """
    columns = list(columns)
    if indent is None:
        outer, item_start, separators = "", "", (",", ":")
    else:
        outer, item_start, separators = "\n" + " " * indent, "\n" + " " * (2 * indent), (",", ": ")

    def encode(probe: dict[str, object]) -> tuple[str, str]:
        """A probe object's text around its source, which only the row knows."""
        text = json.dumps(probe, separators=separators, indent=indent)
        head, _, tail = text.replace("\n", item_start).partition(_ENCODED_SOURCE_MARK)
        return head, tail

    head, _ = encode({"from": _SOURCE_MARK})
    tails = [
        tuple(
            encode(
                {
                    "from": _SOURCE_MARK,
                    "to": pod_keys[column.destination],
                    "port": column.port,
                    "protocol": column.protocol,
                    "allowed": allowed,
                }
            )[1]
            for allowed in (False, True)
        )
        for column in columns
    ]
    # Every column's verdicts as bytes of 0 and 1, indexed by the source.
    to_flags = bytes.maketrans(b"01", b"\x00\x01")
    flags = [
        format(column.allowed_from, f"0{len(pod_keys)}b")[::-1].encode("ascii").translate(to_flags)
        for column in columns
    ]
    verdicts = list(zip(tails, flags, strict=True))
    # Columns come destination by destination: a source skips its own, which are contiguous.
    own: dict[int, tuple[int, int]] = {}
    for position, column in enumerate(columns):
        first, end = own.get(column.destination, (position, position))
        if end != position:
            raise ValueError(
                "columns must come destination by destination, as probe_columns yields"
            )
        own[column.destination] = (first, position + 1)
    stream.write("{" + outer + '"probes"' + separators[1] + "[")
    separator = item_start
    for source, source_key in enumerate(pod_keys):
        first, end = own.get(source, (0, 0))
        pieces = [pair[bits[source]] for pair, bits in verdicts[:first]]
        pieces += [pair[bits[source]] for pair, bits in verdicts[end:]]
        if pieces:
            source_head = head + json.dumps(source_key)
            stream.write(separator + source_head)
            stream.write(("," + item_start + source_head).join(pieces))
            separator = "," + item_start
    started = separator != item_start
    stream.write((outer if started else "") + "]" + ("" if indent is None else "\n") + "}\n")


@dataclass
class NamespaceSummary:
    """The probes from one namespace to another on one port: counts, and the policies that
    decide them, as (direction, policy key): `allowed_by` holds the policies with a rule that
    admits some allowed probe, `blocked_by` those selecting a side that blocks some probe (the
    side's `selecting` in decide(), where no rule admits); `unpoliced` counts the allowed
    probes no policy selects on either side."""

    source: str
    destination: str
    port: int
    protocol: str
    allowed: int = 0
    blocked: int = 0
    unpoliced: int = 0
    allowed_by: set[tuple[str, str]] = field(default_factory=set)
    blocked_by: set[tuple[str, str]] = field(default_factory=set)


def summarize(index: ClusterIndex, columns: Iterable[ProbeColumn]) -> list[NamespaceSummary]:
    """One NamespaceSummary per source namespace, destination namespace and port, sorted."""
    pods = index.pods
    groups: dict[tuple[str, str, int, str], NamespaceSummary] = {}
    for column in columns:
        destination = pods[column.destination]
        not_self = ~(1 << column.destination)
        for namespace, members in index.by_namespace.items():
            sources = members & not_self
            if not sources:
                continue
            key = (namespace, destination.namespace, column.port, column.protocol)
            group = groups.get(key)
            if group is None:
                group = groups[key] = NamespaceSummary(*key)
            allowed = column.allowed_from & sources
            blocked = sources & ~allowed
            group.allowed += allowed.bit_count()
            group.blocked += blocked.bit_count()
            if allowed and not index.ingress_isolated >> column.destination & 1:
                group.unpoliced += (allowed & ~index.egress_isolated).bit_count()
            if allowed:
                group.allowed_by.update(
                    ("ingress", rule.policy)
                    for rule in column.ingress_rules
                    if rule.peers & allowed
                )
                group.allowed_by.update(
                    ("egress", rule.policy)
                    for rule in column.egress_rules
                    if rule.selected & allowed
                )
            if blocked & ~column.by_ingress:
                group.blocked_by.update(
                    ("ingress", policy) for policy in index.ingress_selecting_of[column.destination]
                )
            blocked_by_egress = blocked & ~column.by_egress
            if blocked_by_egress:
                group.blocked_by.update(
                    ("egress", policy)
                    for policy, selected in index.egress_policies_in.get(namespace, ())
                    if selected & blocked_by_egress
                )
    return [groups[key] for key in sorted(groups, key=lambda k: (k[0], k[1], k[3], k[2]))]


def render_summary(cluster: Cluster, summaries: Sequence[NamespaceSummary]) -> list[str]:
    """Plain aligned lines: from, to, port, allowed and blocked counts, the deciding policies."""
    order = {policy.key: number for number, policy in enumerate(cluster.policies)}

    def policies(reasons: set[tuple[str, str]]) -> str:
        parts = []
        for direction in ("ingress", "egress"):
            keys = sorted(
                (key for side, key in reasons if side == direction), key=order.__getitem__
            )
            if keys:
                parts.append(f"{direction} {', '.join(keys)}")
        return "; ".join(parts)

    header = ("FROM", "TO", "PORT", "ALLOWED", "BLOCKED", "DECIDED BY")
    rows = []
    for summary in summaries:
        decided = []
        if summary.allowed:
            allowing = [policies(summary.allowed_by)] if summary.allowed_by else []
            if summary.unpoliced:
                allowing.append(f"no policy ({summary.unpoliced})")
            decided.append(f"allowed by {'; '.join(allowing)}")
        if summary.blocked:
            decided.append(f"blocked by {policies(summary.blocked_by)}")
        rows.append(
            (
                summary.source,
                summary.destination,
                f"{summary.port}/{summary.protocol}",
                str(summary.allowed),
                str(summary.blocked),
                " | ".join(decided),
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    lines = []
    for row in (header, *rows):
        cells = [
            cell.rjust(width) if i in (3, 4) else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    allowed = sum(summary.allowed for summary in summaries)
    blocked = sum(summary.blocked for summary in summaries)
    lines.append(
        f"{allowed + blocked} probes over {len(cluster.pods)} pods: "
        f"{allowed} allowed, {blocked} blocked"
    )
    return lines


def render_tables(cluster: Cluster, columns: Sequence[ProbeColumn]) -> list[Table | Text]:
    """One source x destination matrix per port (`.` allowed, `X` blocked), or, past
    MATRIX_MAX_PODS pods, one row per destination and port with the counts; then a summary
    line and the pods kube-router ignores."""
    from rich.text import Text

    pod_keys = [pod.key for pod in cluster.pods]
    by_port: dict[tuple[int, str], dict[int, ProbeColumn]] = {}
    for column in columns:
        by_port.setdefault((column.port, column.protocol), {})[column.destination] = column
    renderables: list[Table | Text] = []
    for (port, protocol), port_columns in sorted(by_port.items()):
        if len(pod_keys) <= MATRIX_MAX_PODS:
            heading = f"{port}/{protocol}: each row connects to each column (. allowed, X blocked)"
            renderables.append(Text(heading, style="bold"))
            renderables.append(_matrix(pod_keys, port_columns))
        else:
            renderables.append(Text(f"{port}/{protocol}: sources per destination", style="bold"))
            renderables.append(_per_destination(pod_keys, port_columns))
    probes = len(columns) * max(len(pod_keys) - 1, 0)
    allowed = sum(column.allowed_from.bit_count() for column in columns)
    summary = Text(
        f"{probes} probes over {len(pod_keys)} pods: {allowed} allowed, {probes - allowed} blocked"
    )
    if not columns:
        summary.append(" (no pod declares a containerPort: pass --port)")
    renderables.append(summary)
    if cluster.ignored:
        renderables.append(_ignored(cluster))
    return renderables


def _matrix(pod_keys: Sequence[str], columns: dict[int, ProbeColumn]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table()
    table.add_column("from \\ to", no_wrap=True)
    for number in range(1, len(pod_keys) + 1):
        table.add_column(str(number), justify="center", no_wrap=True)
    for row, source in enumerate(pod_keys):
        cells: list[Text | str] = [f"{row + 1:>2} {source}"]
        for destination in range(len(pod_keys)):
            column = columns.get(destination)
            if source == pod_keys[destination]:
                cells.append(Text("-", style="dim"))
            elif column is None:
                cells.append("")
            elif column.allowed_from >> row & 1:
                cells.append(Text(".", style="green"))
            else:
                cells.append(Text("X", style="bold red"))
        table.add_row(*cells)
    return table


def _per_destination(pod_keys: Sequence[str], columns: dict[int, ProbeColumn]) -> Table:
    from rich.table import Table

    table = Table()
    for heading in ("to", "allowed from", "blocked from"):
        table.add_column(heading, justify="left" if heading == "to" else "right", no_wrap=True)
    for destination, key in enumerate(pod_keys):
        column = columns.get(destination)
        if column is not None:
            allowed = column.allowed_from.bit_count()
            table.add_row(key, str(allowed), str(len(pod_keys) - 1 - allowed))
    return table


def _ignored(cluster: Cluster) -> Table:
    from rich.table import Table

    table = Table(
        title="Pods kube-router ignores: not probed, selected or matched by any policy",
        title_justify="left",
    )
    table.add_column("pod", no_wrap=True)
    table.add_column("why")
    for pod in cluster.ignored:
        table.add_row(pod.key, pod.ignored_reason)
    return table
