"""Compare expected reachability, observed probes and ulogd2 drop events: one row per probe.

A row is ok when the probe's outcome is the expected one and the logs agree with it. The rules
hold whatever kube-router's jump orders and whatever tokens its rate limits have left:
- a blocked probe is logged when any line of its packets (SRC, DST, DPT, PROTO) is on the node
  whose chain blocked it: the destination pod's node when its ingress blocks, the source pod's
  node when its egress blocks (`explain` says which, from the policies; without them, the
  destination's node). The pod chain's unprefixed line is `pod-chain` evidence; `DROP by policy`
  lines of the blocking side's policies alone (the pod chain's bucket, 10/minute burst 10, was
  empty) are `policy-lines` evidence;
- a blocked probe without any such line is `rate-limited`, not failed, when more blocked packets
  reached its chain than the bucket can have held (burst + rate x elapsed); otherwise it fails;
- an allowed probe must have no pod-chain line. `DROP by policy` lines on an allowed probe are
  kube-router's known false drop (k3s #9032): reported as a note, not failed;
- SYN retransmissions (same ports and TCP SEQ, a new IP ID) are one probe: its packets are counted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from k3s_netpol.explain import (
    UNKNOWN_NODE,
    Evidence,
    Explanation,
    Placement,
    blocked_by,
    explain_decision,
    side_dict,
)
from k3s_netpol.logs import DropEvent
from k3s_netpol.model import Cluster, Probe, SideDecision, decide

ProbeKey = tuple[str, str, int, str]

FALSE_DROP_ISSUE = "k3s #9032"
# kube-router's pod-chain log rule (pod.go dropUnmarkedTrafficRules), whatever the annotations.
POD_CHAIN_BURST = 10
POD_CHAIN_RATE_PER_MINUTE = 10
EVIDENCE_POD_CHAIN = "pod-chain"
EVIDENCE_POLICY_LINES = "policy-lines"
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_RATE_LIMITED = "rate-limited"


@dataclass(frozen=True)
class RateLimit:
    """The pod-chain bucket arithmetic for one blocked probe: the packets that reached the
    chain before it, and the most tokens the bucket can have had left when it came (the bucket
    taken as full at the first of them: refilled by the last sync at best)."""

    node: str
    pod: str
    packets_before: int
    burst: int
    rate_per_minute: int
    elapsed: float
    tokens_left: float

    @property
    def tokens_at_most(self) -> float:
        """Every token the bucket can have given since the first packet: burst + rate x time."""
        return self.burst + self.rate_per_minute * self.elapsed / 60

    @property
    def exhausted(self) -> bool:
        return self.tokens_left < 1

    @classmethod
    def simulate(
        cls, node: str, pod: str, arrivals: Sequence[tuple[float, int]], now: float
    ) -> RateLimit:
        """Run the bucket (full at the first arrival) over (time, packets) arrivals before now."""
        rate = POD_CHAIN_RATE_PER_MINUTE / 60
        ordered = sorted(arrivals)
        start = ordered[0][0] if ordered else now
        tokens, clock = float(POD_CHAIN_BURST), start
        for time, packets in ordered:
            tokens = min(POD_CHAIN_BURST, tokens + rate * (time - clock))
            clock = time
            for _ in range(packets):
                if tokens >= 1:
                    tokens -= 1
        tokens = min(POD_CHAIN_BURST, tokens + rate * max(now - clock, 0.0))
        return cls(
            node=node,
            pod=pod,
            packets_before=sum(packets for _, packets in ordered),
            burst=POD_CHAIN_BURST,
            rate_per_minute=POD_CHAIN_RATE_PER_MINUTE,
            elapsed=max(now - start, 0.0),
            tokens_left=tokens,
        )

    def describe(self) -> str:
        return (
            f"{self.packets_before} blocked packet(s) reached {self.pod}'s chain on {self.node} "
            f"in the {self.elapsed:.1f} s before it; its log bucket (burst {self.burst}, "
            f"{self.rate_per_minute}/minute, full at the first) had at most "
            f"{self.tokens_left:.2f} token(s) left"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "pod": self.pod,
            "packets_before": self.packets_before,
            "burst": self.burst,
            "rate_per_minute": self.rate_per_minute,
            "elapsed": round(self.elapsed, 3),
            "tokens_at_most": round(self.tokens_at_most, 3),
            "tokens_left": round(self.tokens_left, 3),
            "exhausted": self.exhausted,
        }


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
    source_node: str | None = None
    evidence: str | None = None
    evidence_nodes: tuple[str, ...] = ()
    expected_evidence: Evidence | None = None
    blocked_by: str | None = None
    packets: int = 0
    retransmissions: int = 0
    policy_lines: int = 0
    rate_limit: RateLimit | None = None
    passes: int = 0
    sides: tuple[SideDecision, ...] = ()

    @property
    def key(self) -> ProbeKey:
        return (self.source, self.destination, self.port, self.protocol)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        if self.problems:
            return STATUS_FAILED
        if self.rate_limit is not None:
            return STATUS_RATE_LIMITED
        return STATUS_OK

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
            "status": self.status,
            "source_node": self.source_node,
            "evidence": self.evidence,
            "evidence_nodes": list(self.evidence_nodes),
            "expected_evidence": (
                self.expected_evidence.to_dict() if self.expected_evidence is not None else None
            ),
            "blocked_by": self.blocked_by,
            "packets": self.packets,
            "retransmissions": self.retransmissions,
            "policy_lines": self.policy_lines,
            "rate_limit": self.rate_limit.to_dict() if self.rate_limit is not None else None,
            "passes": self.passes,
            "code": cell_code(self),
            "decided_by": [side_dict(side) for side in self.sides],
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
            "rate_limited": sum(row.status == STATUS_RATE_LIMITED for row in rows),
            "evidence_pod_chain": sum(row.evidence == EVIDENCE_POD_CHAIN for row in rows),
            "evidence_policy_lines": sum(row.evidence == EVIDENCE_POLICY_LINES for row in rows),
            "retransmissions": sum(row.retransmissions for row in rows),
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
    """The node whose log holds the event."""
    return event.node


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
        "passes": event.passes,
        "lines": [record.origin for record in event.records],
    }


def _pod_ip(pod_ips: Mapping[str, str], pod: str, probe: Probe) -> str:
    try:
        return pod_ips[pod]
    except KeyError:
        where = f"{probe.source} -> {probe.destination} {probe.port}/{probe.protocol}"
        raise ValueError(f"no IP known for pod {pod} (probe {where})") from None


@dataclass(frozen=True)
class _Attempts:
    """The probe's packets in the logs: one attempt per (source port, TCP SEQ), one packet per
    IP ID (a SYN retransmission keeps the port and SEQ and takes a new IP ID)."""

    attempts: int
    packets: int

    @classmethod
    def of(cls, events: Sequence[DropEvent]) -> _Attempts:
        attempts = {(event.source_port, event.tcp_seq) for event in events}
        packets = {(event.source_port, event.tcp_seq, event.ip_id) for event in events}
        return cls(len(attempts), len(packets))


@dataclass
class _Plan:
    """What one probe needs: its key, addresses, nodes and, with policies, its explanation."""

    probe: Probe
    key: ProbeKey
    source_ip: str
    destination_ip: str
    source_node: str | None
    destination_node: str | None
    explanation: Explanation | None
    events: list[DropEvent]
    note: str | None = None

    @property
    def judging_chains(self) -> tuple[tuple[str, str], ...]:
        if self.explanation is not None:
            return self.explanation.evidence.chains
        if self.destination_node is None:
            return ()
        return ((self.destination_node, self.probe.destination),)

    def judging_nodes(self) -> tuple[str, ...] | None:
        """Nodes whose lines count for this probe; None: any node (nothing says where). An
        allowed probe's lines (false drops) come from the chains of both pods' nodes."""
        if self.explanation is not None and self.probe.allowed:
            explanation = self.explanation
            pods = (explanation.source_node, explanation.destination_node)
            return None if UNKNOWN_NODE in pods else tuple(dict.fromkeys(pods))
        if self.explanation is not None:
            nodes = self.explanation.evidence.nodes
            return None if UNKNOWN_NODE in nodes else nodes
        return None if self.destination_node is None else (self.destination_node,)


def _plan(
    probe: Probe,
    key: ProbeKey,
    pod_ips: Mapping[str, str],
    nodes: Mapping[str, str],
    cluster: Cluster | None,
    placement: Placement,
) -> _Plan:
    explanation = None
    note = None
    if cluster is not None:
        try:
            source, destination = cluster.pod(key[0]), cluster.pod(key[1])
        except KeyError as error:
            raise ValueError(f"{error.args[0]} (probe {key[0]} -> {key[1]})") from None
        decision = decide(cluster, source, destination, key[2], key[3])
        explanation = explain_decision(cluster, decision, placement)
        if decision.allowed != probe.allowed:
            note = (
                f"the manifests say {outcome(decision.allowed)}, the expected probes "
                f"{outcome(probe.allowed)}: lines looked for on the destination's node"
            )
            explanation = None
    return _Plan(
        probe=probe,
        key=key,
        source_ip=_pod_ip(pod_ips, probe.source, probe),
        destination_ip=_pod_ip(pod_ips, probe.destination, probe),
        source_node=nodes.get(probe.source),
        destination_node=nodes.get(probe.destination),
        explanation=explanation,
        events=[],
        note=note,
    )


def compare(
    expected: Sequence[Probe],
    observed: Mapping[ProbeKey, bool],
    events: Sequence[DropEvent],
    pod_ips: Mapping[str, str],
    pod_nodes: Mapping[str, str] | None = None,
    *,
    cluster: Cluster | None = None,
    started: Mapping[ProbeKey, float] | None = None,
) -> Report:
    """One row per expected probe, in the order given.

    `observed` maps (from, to, port, protocol) to whether curl connected; a probe missing there
    is `not probed` and fails. `pod_ips` maps "ns/name" to the pod's IP and `pod_nodes` to its
    node. With `cluster` (the manifests: pods and policies), each probe is explained
    (`explain.explain_decision`) and a blocked probe's lines count only on the node whose chain
    blocks it; without it, only on the destination pod's node (an event without a node counts
    everywhere). `started` maps a probe to the time it was sent (seconds, any epoch), for the
    pod-chain bucket's arithmetic; without it the elapsed time is taken as 0.
    """
    nodes = dict(pod_nodes or {})
    placement = Placement(nodes=nodes)
    by_flow: dict[tuple[str, str, int, str], list[DropEvent]] = defaultdict(list)
    for event in events:
        if event.destination_port is None:
            continue
        flow = (event.source, event.destination, event.destination_port, event.protocol.upper())
        by_flow[flow].append(event)

    plans: list[_Plan] = []
    seen: set[ProbeKey] = set()
    explained: set[int] = set()
    for probe in expected:
        key = probe_key(probe.source, probe.destination, probe.port, probe.protocol)
        if key in seen:
            raise ValueError(f"probe listed twice: {key[0]} -> {key[1]} {key[2]}/{key[3]}")
        seen.add(key)
        plan = _plan(probe, key, pod_ips, nodes, cluster, placement)
        plan.events = by_flow.get((plan.source_ip, plan.destination_ip, key[2], key[3]), [])
        explained.update(id(event) for event in plan.events)
        plans.append(plan)

    buckets = _Buckets.of(plans, started or {})
    rows = [_row(plan, observed.get(plan.key), buckets) for plan in plans]
    notes = []
    extra = sorted(set(observed) - seen)
    if extra:
        notes.append(f"{len(extra)} observed probe(s) not in the expected set were ignored")
    unexplained = tuple(event for event in events if event.real and id(event) not in explained)
    return Report(
        rows=tuple(rows), unexplained_drops=unexplained, notes=tuple(notes), events=tuple(events)
    )


def _on_nodes(event: DropEvent, nodes: tuple[str, ...] | None) -> bool:
    found = event_node(event)
    return nodes is None or found is None or found in nodes


Chain = tuple[str, str]
# When a probe was sent: its start time when known, then its place in the list (sending order).
SentAt = tuple[float, int]


@dataclass
class _Buckets:
    """The blocked packets sent to each chain that can judge them, in the order sent."""

    arrivals: dict[Chain, list[tuple[SentAt, int]]]
    sent_at: dict[int, SentAt]

    @classmethod
    def of(cls, plans: Sequence[_Plan], started: Mapping[ProbeKey, float]) -> _Buckets:
        arrivals: dict[Chain, list[tuple[SentAt, int]]] = defaultdict(list)
        sent_at: dict[int, SentAt] = {}
        for index, plan in enumerate(plans):
            sent_at[id(plan)] = (started.get(plan.key, 0.0), index)
            if plan.probe.allowed:
                continue
            packets = max(1, _Attempts.of(plan.events).packets)
            for chain in plan.judging_chains:
                arrivals[chain].append((sent_at[id(plan)], packets))
        for chain_arrivals in arrivals.values():
            chain_arrivals.sort()
        return cls(dict(arrivals), sent_at)

    def limit(self, plan: _Plan) -> RateLimit | None:
        """The bucket arithmetic of the chain (of those that can judge the probe) that had the
        fewest tokens left when it came; None when nothing says where it was judged."""
        best: RateLimit | None = None
        mine = self.sent_at[id(plan)]
        for node, pod in plan.judging_chains:
            earlier = [
                (sent[0], packets)
                for sent, packets in self.arrivals.get((node, pod), [])
                if sent < mine
            ]
            limit = RateLimit.simulate(node, pod, earlier, mine[0])
            if best is None or limit.tokens_left < best.tokens_left:
                best = limit
        return best


def _row(plan: _Plan, observation: bool | None, buckets: _Buckets) -> Row:
    probe, key = plan.probe, plan.key
    judging = plan.judging_nodes()
    here = [event for event in plan.events if _on_nodes(event, judging)]
    elsewhere = sorted(
        {n for e in plan.events if not _on_nodes(e, judging) and (n := event_node(e))}
    )
    real = [event for event in here if event.real]
    allowed_lines = plan.explanation.evidence.policies if plan.explanation else None
    policy_evidence = [
        event
        for event in here
        if not event.real
        and (allowed_lines is None or any(p in allowed_lines for p in event.policies))
    ]
    policies = tuple(sorted({policy for event in here for policy in event.policies}))
    where = ", ".join(judging) if judging else ""
    on_node = f"on node {where}" if where else "in the logs"
    flow = f"SRC={plan.source_ip} DST={plan.destination_ip} DPT={key[2]} PROTO={key[3]}"
    problems: list[str] = []
    notes: list[str] = [plan.note] if plan.note else []
    evidence: str | None = None
    found: list[DropEvent] = []
    rate_limit: RateLimit | None = None
    if observation is None:
        problems.append("not probed (no observation for this pair)")
    elif observation != probe.allowed:
        problems.append(f"expected {outcome(probe.allowed)}, observed {outcome(observation)}")
    if not probe.allowed:
        if real:
            evidence, found = EVIDENCE_POD_CHAIN, real
        elif policy_evidence:
            evidence, found = EVIDENCE_POLICY_LINES, policy_evidence
        limit = buckets.limit(plan)
        if evidence is None and limit is not None and limit.exhausted:
            rate_limit = limit
            notes.append(f"rate-limited: no line {on_node} for {flow}: {limit.describe()}")
        elif evidence is None:
            arithmetic = f" ({limit.describe()})" if limit is not None else ""
            problems.append(f"blocked but no drop line {on_node} for {flow}{arithmetic}")
        elif evidence == EVIDENCE_POLICY_LINES and limit is not None and not limit.exhausted:
            notes.append(
                "only DROP by policy lines: the pod chain's line is missing though its bucket "
                f"had tokens left ({limit.describe()})"
            )
    if probe.allowed and real:
        problems.append(f"allowed but the pod chain logged a drop {on_node} for {flow}")
    policy_lines = sum(
        1 for event in here if not event.real for record in event.records if record.policy
    )
    if probe.allowed and observation and policies and not real:
        packets = _Attempts.of(here).packets
        notes.append(
            f"false drop ({FALSE_DROP_ISSUE}): {policy_lines} DROP by policy line(s) over "
            f"{packets} packet(s) from {', '.join(policies)} for a connection another policy "
            "allows"
        )
    if elsewhere:
        notes.append(f"lines for this flow were also found on node(s) {', '.join(elsewhere)}")
    attempts = _Attempts.of(here if probe.allowed else found)
    if attempts.packets > attempts.attempts:
        notes.append(
            f"{attempts.packets - attempts.attempts} SYN retransmission(s) of the same probe "
            "(same port and SEQ, new IP ID), counted as one probe"
        )
    explanation = plan.explanation
    return Row(
        source=key[0],
        destination=key[1],
        port=key[2],
        protocol=key[3],
        expected=probe.allowed,
        observed=observation,
        logged=bool(real),
        source_ip=plan.source_ip,
        destination_ip=plan.destination_ip,
        destination_node=plan.destination_node,
        drop_lines=sum(len(event.records) for event in real),
        policies=policies,
        problems=tuple(problems),
        notes=tuple(notes),
        source_node=plan.source_node,
        evidence=evidence,
        evidence_nodes=tuple(sorted({n for e in found if (n := event_node(e))})),
        expected_evidence=explanation.evidence if explanation is not None else None,
        blocked_by=(
            blocked_by(explanation.decision)
            if explanation is not None and not probe.allowed
            else None
        ),
        packets=attempts.packets,
        retransmissions=attempts.packets - attempts.attempts,
        policy_lines=policy_lines,
        rate_limit=rate_limit,
        passes=max((event.passes for event in here), default=0),
        sides=(
            (explanation.decision.egress, explanation.decision.ingress)
            if explanation is not None
            else ()
        ),
    )


_CELL_LEGEND = (
    "cell = expected observed logged: A allowed, B blocked, ? not probed; "
    "L pod-chain drop line, p DROP by policy lines only (the pod chain's bucket was empty), "
    "r rate-limited (no line; the bucket arithmetic shows why), - none, "
    "f false drop (policy line on an allowed probe); * marks a failed row"
)


def cell_code(row: Row) -> str:
    """The row's letter code in the matrix (see _CELL_LEGEND); report.html shows the same."""
    expected = "A" if row.expected else "B"
    observed = "?" if row.observed is None else ("A" if row.observed else "B")
    if row.evidence == EVIDENCE_POD_CHAIN or (row.logged and row.expected):
        logged = "L"
    elif row.evidence == EVIDENCE_POLICY_LINES:
        logged = "p"
    elif row.rate_limit is not None:
        logged = "r"
    else:
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
                row_cells.append(f"{cell_code(cell) if cell else '.':>{width}}")
            lines.append(f"{number[source]:>3}  {source:<{name_width}}" + "".join(row_cells))
    summary = report.summary()
    lines.append("")
    lines.append(
        f"{summary['probes']} probes: {summary['ok']} ok, {summary['failed']} failed; "
        f"{summary['expected_blocked']} expected blocked, {summary['logged']} logged, "
        f"{summary['false_drops']} false drop(s)"
    )
    lines.append(
        f"evidence: {summary['evidence_pod_chain']} pod-chain line, "
        f"{summary['evidence_policy_lines']} DROP by policy lines only, "
        f"{summary['rate_limited']} rate-limited; "
        f"{summary['retransmissions']} SYN retransmission(s)"
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
