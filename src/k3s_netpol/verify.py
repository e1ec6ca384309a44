"""Compare expected reachability, observed probes and ulogd2 drop events: one row per probe.

A row is ok when the probe's outcome is the expected one and the logs agree with it:
- a blocked probe must have a real drop event (the pod chain's unprefixed NFLOG line) on the
  node hosting the destination pod, matching SRC, DST, DPT and PROTO;
- an allowed probe must have no real drop event. Per-policy `DROP by policy ns/name` lines on an
  allowed probe are kube-router's known false drop (k3s #9032): reported as a note, not failed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from k3s_netpol.logs import DropEvent
from k3s_netpol.model import Probe

ProbeKey = tuple[str, str, int, str]

FALSE_DROP_ISSUE = "k3s #9032"


def probe_key(source: str, destination: str, port: int, protocol: str) -> ProbeKey:
    """The key of one probe: (from pod, to pod, port, upper-case protocol)."""
    return (source, destination, int(port), protocol.upper())


def outcome(allowed: bool | None) -> str:
    """`allowed`, `blocked`, or `not probed` for a missing observation."""
    if allowed is None:
        return "not probed"
    return "allowed" if allowed else "blocked"


@dataclass(frozen=True)
class Row:
    """One probe: what the policies say, what curl saw and what the destination node logged."""

    source: str
    destination: str
    port: int
    protocol: str
    expected: bool
    observed: bool | None
    logged: bool
    source_ip: str
    destination_ip: str
    destination_node: str | None
    drop_lines: int
    policies: tuple[str, ...]
    problems: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def key(self) -> ProbeKey:
        return (self.source, self.destination, self.port, self.protocol)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def false_drop(self) -> bool:
        """Allowed and connected, yet a policy chain logged a `DROP by policy` line for it."""
        return bool(self.expected and self.observed and self.policies and not self.logged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.destination,
            "port": self.port,
            "protocol": self.protocol,
            "expected": outcome(self.expected),
            "observed": outcome(self.observed),
            "logged": self.logged,
            "source_ip": self.source_ip,
            "destination_ip": self.destination_ip,
            "destination_node": self.destination_node,
            "drop_lines": self.drop_lines,
            "policies": list(self.policies),
            "false_drop": self.false_drop,
            "ok": self.ok,
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Report:
    """Every probe's row, the real drop events no probe accounts for, and every event read."""

    rows: tuple[Row, ...]
    unexplained_drops: tuple[DropEvent, ...] = ()
    notes: tuple[str, ...] = ()
    events: tuple[DropEvent, ...] = ()

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def failures(self) -> tuple[Row, ...]:
        return tuple(row for row in self.rows if not row.ok)

    def summary(self) -> dict[str, int]:
        rows = self.rows
        return {
            "probes": len(rows),
            "ok": sum(row.ok for row in rows),
            "failed": sum(not row.ok for row in rows),
            "expected_allowed": sum(row.expected for row in rows),
            "expected_blocked": sum(not row.expected for row in rows),
            "observed_allowed": sum(row.observed is True for row in rows),
            "observed_blocked": sum(row.observed is False for row in rows),
            "not_probed": sum(row.observed is None for row in rows),
            "logged": sum(row.logged for row in rows),
            "false_drops": sum(row.false_drop for row in rows),
            "unexplained_drops": len(self.unexplained_drops),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "rows": [row.to_dict() for row in self.rows],
            "unexplained_drops": [_event_dict(event) for event in self.unexplained_drops],
            "notes": list(self.notes),
            "events": [_event_dict(event) for event in self.events],
        }


def event_node(event: DropEvent) -> str | None:
    """The node whose log holds the event (the first of its lines that names one)."""
    return next((record.node for record in event.records if record.node), None)


def _event_dict(event: DropEvent) -> dict[str, Any]:
    return {
        "node": event_node(event),
        "source": event.source,
        "destination": event.destination,
        "protocol": event.protocol,
        "source_port": event.source_port,
        "destination_port": event.destination_port,
        "policies": list(event.policies),
        "real": event.real,
        "lines": [record.origin for record in event.records],
    }


def _on_node(event: DropEvent, node: str | None) -> bool:
    found = event_node(event)
    return node is None or found is None or found == node


def _pod_ip(pod_ips: Mapping[str, str], pod: str, probe: Probe) -> str:
    try:
        return pod_ips[pod]
    except KeyError:
        where = f"{probe.source} -> {probe.destination} {probe.port}/{probe.protocol}"
        raise ValueError(f"no IP known for pod {pod} (probe {where})") from None


def compare(
    expected: Sequence[Probe],
    observed: Mapping[ProbeKey, bool],
    events: Sequence[DropEvent],
    pod_ips: Mapping[str, str],
    pod_nodes: Mapping[str, str] | None = None,
) -> Report:
    """One row per expected probe, in the order given.

    `observed` maps (from, to, port, protocol) to whether curl connected; a probe missing there
    is `not probed` and fails. `pod_ips` maps "ns/name" to the pod's IP. When `pod_nodes` maps a
    destination pod to its node, only events whose lines came from that node count for it (an
    event without a node counts everywhere).
    """
    nodes = pod_nodes or {}
    by_flow: dict[tuple[str, str, int, str], list[DropEvent]] = defaultdict(list)
    for event in events:
        if event.destination_port is None:
            continue
        flow = (event.source, event.destination, event.destination_port, event.protocol.upper())
        by_flow[flow].append(event)

    rows: list[Row] = []
    seen: set[ProbeKey] = set()
    explained: set[int] = set()
    for probe in expected:
        key = probe_key(probe.source, probe.destination, probe.port, probe.protocol)
        if key in seen:
            raise ValueError(f"probe listed twice: {key[0]} -> {key[1]} {key[2]}/{key[3]}")
        seen.add(key)
        source_ip = _pod_ip(pod_ips, probe.source, probe)
        destination_ip = _pod_ip(pod_ips, probe.destination, probe)
        node = nodes.get(probe.destination)
        matching = by_flow.get((source_ip, destination_ip, key[2], key[3]), [])
        here = [e for e in matching if _on_node(e, node)]
        elsewhere = sorted({n for e in matching if not _on_node(e, node) and (n := event_node(e))})
        real = [event for event in here if event.real]
        explained.update(id(event) for event in matching)
        policies = tuple(sorted({policy for event in here for policy in event.policies}))
        observation = observed.get(key)
        rows.append(
            _row(
                probe, key, observation, source_ip, destination_ip, node, real, policies, elsewhere
            )
        )

    notes = []
    extra = sorted(set(observed) - seen)
    if extra:
        notes.append(f"{len(extra)} observed probe(s) not in the expected set were ignored")
    unexplained = tuple(event for event in events if event.real and id(event) not in explained)
    return Report(
        rows=tuple(rows), unexplained_drops=unexplained, notes=tuple(notes), events=tuple(events)
    )


def _row(
    probe: Probe,
    key: ProbeKey,
    observation: bool | None,
    source_ip: str,
    destination_ip: str,
    node: str | None,
    real: Sequence[DropEvent],
    policies: tuple[str, ...],
    elsewhere: Sequence[str],
) -> Row:
    logged = bool(real)
    on_node = f"on node {node}" if node else "in the logs"
    flow = f"SRC={source_ip} DST={destination_ip} DPT={key[2]} PROTO={key[3]}"
    problems: list[str] = []
    notes: list[str] = []
    if observation is None:
        problems.append("not probed (no observation for this pair)")
    elif observation != probe.allowed:
        problems.append(f"expected {outcome(probe.allowed)}, observed {outcome(observation)}")
    if not probe.allowed and not logged:
        problems.append(f"blocked but no drop line {on_node} for {flow}")
    if probe.allowed and logged:
        problems.append(f"allowed but the pod chain logged a drop {on_node} for {flow}")
    if probe.allowed and observation and policies and not logged:
        notes.append(
            f"false drop ({FALSE_DROP_ISSUE}): DROP by policy line(s) from "
            f"{', '.join(policies)} for a connection another policy allows"
        )
    if elsewhere:
        notes.append(f"lines for this flow were also found on node(s) {', '.join(elsewhere)}")
    return Row(
        source=key[0],
        destination=key[1],
        port=key[2],
        protocol=key[3],
        expected=probe.allowed,
        observed=observation,
        logged=logged,
        source_ip=source_ip,
        destination_ip=destination_ip,
        destination_node=node,
        drop_lines=sum(len(event.records) for event in real),
        policies=policies,
        problems=tuple(problems),
        notes=tuple(notes),
    )


_CELL_LEGEND = (
    "cell = expected observed logged: A allowed, B blocked, ? not probed; "
    "L drop line, - none, f false drop (policy line only); * marks a failed row"
)


def _cell(row: Row) -> str:
    expected = "A" if row.expected else "B"
    observed = "?" if row.observed is None else ("A" if row.observed else "B")
    logged = "L" if row.logged else ("f" if row.false_drop else "-")
    return f"{expected}{observed}{logged}{'' if row.ok else '*'}"


def render_matrix(report: Report) -> str:
    """A readable matrix per port/protocol (rows: from, columns: to), then the failures."""
    lines: list[str] = []
    by_port: dict[tuple[int, str], dict[tuple[str, str], Row]] = defaultdict(dict)
    pods: list[str] = []
    for row in report.rows:
        by_port[(row.port, row.protocol)][(row.source, row.destination)] = row
        for pod in (row.source, row.destination):
            if pod not in pods:
                pods.append(pod)
    pods.sort()
    number = {pod: index for index, pod in enumerate(pods, start=1)}
    width = max(len(str(len(pods))), 4) + 1
    name_width = max((len(pod) for pod in pods), default=4)
    lines.append(_CELL_LEGEND)
    for (port, protocol), cells in sorted(by_port.items()):
        lines.append("")
        lines.append(f"port {port}/{protocol}")
        header = " " * (name_width + 5) + "".join(f"{number[pod]:>{width}}" for pod in pods)
        lines.append(header)
        for source in pods:
            row_cells = []
            for destination in pods:
                cell = cells.get((source, destination))
                row_cells.append(f"{_cell(cell) if cell else '.':>{width}}")
            lines.append(f"{number[source]:>3}  {source:<{name_width}}" + "".join(row_cells))
    summary = report.summary()
    lines.append("")
    lines.append(
        f"{summary['probes']} probes: {summary['ok']} ok, {summary['failed']} failed; "
        f"{summary['expected_blocked']} expected blocked, {summary['logged']} logged, "
        f"{summary['false_drops']} false drop(s)"
    )
    for row in report.failures:
        for problem in row.problems:
            lines.append(
                f"FAIL {row.source} -> {row.destination} {row.port}/{row.protocol}: {problem}"
            )
    for row in report.rows:
        for note in row.notes:
            lines.append(
                f"note {row.source} -> {row.destination} {row.port}/{row.protocol}: {note}"
            )
    for event in report.unexplained_drops:
        lines.append(
            f"note unexplained drop on {event_node(event) or 'unknown node'}: "
            f"SRC={event.source} DST={event.destination} DPT={event.destination_port} "
            f"PROTO={event.protocol}"
        )
    lines.extend(f"note {note}" for note in report.notes)
    lines.append("OK" if report.ok else "MISMATCH")
    return "\n".join(lines) + "\n"


def render_table(report: Report) -> str:
    """Every row on one line: from, to, port, expected, observed, logged, policies, result."""
    header = ("FROM", "TO", "PORT", "EXPECTED", "OBSERVED", "LOGGED", "POLICY LINES", "RESULT")
    table = [header]
    for row in report.rows:
        table.append(
            (
                row.source,
                row.destination,
                f"{row.port}/{row.protocol}",
                outcome(row.expected),
                outcome(row.observed),
                "yes" if row.logged else "no",
                ",".join(row.policies) or "-",
                "ok" if row.ok else "FAIL",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return (
        "\n".join(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
            for line in table
        )
        + "\n"
    )
