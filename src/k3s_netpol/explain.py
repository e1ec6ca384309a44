"""Why a connection is allowed or blocked, and which log lines each node writes for it.

`explain` takes the model's decision (`model.decide`) and walks the packet through kube-router's
chains as a node runs them (k3s-io/kube-router, branch k3s-v2.6, `pkg/controllers/netpol`):

- `KUBE-ROUTER-FORWARD` jumps, per local pod and in the pod jump order, to the pod's chain for
  packets to it (`-d`, then the `--physdev-is-bridged` copy) and from it (`-s`, then the bridged
  copy). A bridged packet (both pods on one node) matches both copies, so it passes each chain
  twice; a routed packet (over flannel.1) matches only the plain jumps: one pass, on the source's
  node for its egress chain and on the destination's node for its ingress chain.
- A pod chain runs the policy chains selecting the pod for this direction, in its policy jump
  order. Each policy chain marks 0x10000 when one of its rules admits the packet; otherwise it
  ends with its `DROP by policy ns/name` NFLOG rule. A pod with no policy for this direction
  jumps to the default chain, which marks. A packet still unmarked after the policies meets the
  pod chain's unprefixed NFLOG rule, then REJECT; a marked one leaves with mark 0x20000 set.

Both jump orders come from Go map iteration and change at every sync, so the prediction is
given for the order in force (the lab's `lab.json` records it; the manifest order otherwise) and
summarised over every other order. `expected_evidence` is what `verify` looks for: the nodes
and chains that can reject a blocked probe, and the policies whose lines may appear.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k3s_netpol.model import (
    Cluster,
    Decision,
    Probe,
    SideDecision,
    decide,
    peer_matches,
    ports_match,
)

UNKNOWN_NODE = "(node unknown)"
POD_CHAIN_LINE = "pod chain (no prefix)"
MARK_PASSED = 0x20000


class ExplainError(ValueError):
    """Bad input for an explanation: the message names the pod, port or file field."""


@dataclass(frozen=True)
class JumpOrders:
    """The jump orders compiled on the nodes (one kube-router sync).

    `pods`: node -> pod keys in `KUBE-ROUTER-FORWARD` order; `policies`: pod key -> policy keys
    in that pod chain's order. A pod or node missing here keeps the manifest order.
    """

    pods: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    policies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    seed: int | None = None


@dataclass(frozen=True)
class Placement:
    """Where pods run (pod key -> node) and the jump orders in force, when known."""

    nodes: Mapping[str, str] = field(default_factory=dict)
    orders: JumpOrders | None = None


@dataclass(frozen=True)
class ChainPass:
    """One pass of the packet through one pod chain on one node."""

    node: str
    pod: str
    direction: str  # "egress": the packet leaves this pod; "ingress": it is sent to it
    bridged: bool  # the --physdev-is-bridged copy of the jump
    jumped: tuple[str, ...]  # policy chains run, in order
    marked_by: str | None  # the first policy that admits it, "default" (no policy), or None
    logged: tuple[str, ...]  # policies whose `DROP by policy` line this pass writes

    @property
    def rejected(self) -> bool:
        return self.marked_by is None


@dataclass(frozen=True)
class PredictedLine:
    """One NFLOG line a node writes: a policy's `DROP by policy` line or the pod chain's."""

    node: str
    chain_pod: str
    policy: str | None  # None: the pod chain's unprefixed line
    mark: int
    pass_number: int  # 1-based, over the packet's passes on this node

    @property
    def text(self) -> str:
        what = f"DROP by policy {self.policy}" if self.policy else POD_CHAIN_LINE
        return f"{what}  MARK={self.mark:#x}" if self.mark else f"{what}  MARK=0"

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "chain_pod": self.chain_pod,
            "policy": self.policy,
            "prefix": f"DROP by policy {self.policy}" if self.policy else "",
            "mark": self.mark,
            "pass": self.pass_number,
        }


@dataclass(frozen=True)
class Prediction:
    """The packet's passes and lines under one pair of jump orders."""

    passes: tuple[ChainPass, ...]
    lines: tuple[PredictedLine, ...]

    @property
    def rejected_by(self) -> ChainPass | None:
        return next((one for one in self.passes if one.rejected), None)


@dataclass(frozen=True)
class ChainOutcomes:
    """What one chain can write under every policy order: `always` lines whatever the order,
    `sometimes` lines under some orders (false drops before the first admitting policy)."""

    node: str
    pod: str
    direction: str
    always: tuple[str, ...]
    sometimes: tuple[str, ...]
    admitted_by: tuple[str, ...]
    rejects: bool


@dataclass(frozen=True)
class Evidence:
    """What verify accepts as a blocked probe's log evidence, under any jump order."""

    nodes: tuple[str, ...]  # nodes one of whose chains can reject the packet
    chains: tuple[tuple[str, str], ...]  # (node, pod) of the chains that can reject it
    policies: tuple[str, ...]  # policies whose `DROP by policy` lines can appear there

    def describe(self) -> str:
        if not self.chains:
            return "no line (allowed)"
        chains = ", ".join(f"{pod}'s chain on {node}" for node, pod in self.chains)
        policies = ", ".join(self.policies) or "none"
        return f"the pod-chain line of {chains}; or DROP by policy lines of {policies} there"

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": list(self.nodes),
            "chains": [{"node": node, "pod": pod} for node, pod in self.chains],
            "policies": list(self.policies),
        }


@dataclass(frozen=True)
class Explanation:
    """The verdict with its reasons and the lines it leaves, now and under other orders."""

    decision: Decision
    source_node: str
    destination_node: str
    current: Prediction
    pod_orders: tuple[tuple[str, Prediction], ...]  # (which chain comes first, prediction)
    outcomes: tuple[ChainOutcomes, ...]
    evidence: Evidence
    seed: int | None
    refusals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # direction -> why not

    @property
    def routed(self) -> bool:
        return self.source_node != self.destination_node

    @property
    def kernel_allows(self) -> bool:
        """Whether the chains let the SYN through in the order in force."""
        return self.current.rejected_by is None

    def to_dict(self) -> dict[str, Any]:
        decision = self.decision
        return {
            "from": decision.source,
            "to": decision.destination,
            "port": decision.port,
            "protocol": decision.protocol,
            "allowed": decision.allowed,
            "sides": [
                {**side_dict(side), "refusals": list(self.refusals.get(side.direction, ()))}
                for side in (decision.egress, decision.ingress)
            ],
            "source_node": self.source_node,
            "destination_node": self.destination_node,
            "routed": self.routed,
            "seed": self.seed,
            "decided_on": _decided_on(self.current),
            "lines": [line.to_dict() for line in self.current.lines],
            "passes": len(self.current.passes),
            "other_orders": [
                {
                    "node": outcome.node,
                    "pod": outcome.pod,
                    "direction": outcome.direction,
                    "always": list(outcome.always),
                    "sometimes": list(outcome.sometimes),
                    "admitted_by": list(outcome.admitted_by),
                    "rejects": outcome.rejects,
                }
                for outcome in self.outcomes
            ],
            "evidence": self.evidence.to_dict(),
        }


def side_dict(side: SideDecision) -> dict[str, Any]:
    """One side of the model's decision: the policies selecting the pod, the rules admitting."""
    return {
        "direction": side.direction,
        "pod": side.pod,
        "isolated": side.isolated,
        "selecting": list(side.selecting),
        "allowing": [{"policy": key, "rule": index} for key, index in side.allowing],
        "allowed": side.allowed,
    }


def _decided_on(prediction: Prediction) -> dict[str, str] | None:
    rejecting = prediction.rejected_by
    if rejecting is None:
        return None
    return {"node": rejecting.node, "pod": rejecting.pod, "direction": rejecting.direction}


# --------------------------------------------------------------------------- the walk


def _marking_policies(decision: Decision) -> frozenset[str]:
    """Policies whose chain marks this packet: some rule of theirs admits it, in either
    direction (a policy of both types runs its ingress and egress rules in one chain)."""
    return frozenset(
        key for side in (decision.egress, decision.ingress) for key, _ in side.allowing
    )


def _ordered(selecting: Sequence[str], order: Sequence[str] | None) -> tuple[str, ...]:
    if not order:
        return tuple(selecting)
    position = {key: index for index, key in enumerate(order)}
    return tuple(sorted(selecting, key=lambda key: position.get(key, len(position))))


def _pass(
    node: str, side: SideDecision, bridged: bool, jumped: Sequence[str], marking: frozenset[str]
) -> ChainPass:
    logged: list[str] = []
    marked_by: str | None = None if side.isolated else "default"
    if side.isolated:
        for policy in jumped:
            if policy in marking:
                marked_by = policy
                break
            logged.append(policy)
    return ChainPass(
        node=node,
        pod=side.pod,
        direction=side.direction,
        bridged=bridged,
        jumped=tuple(jumped) if side.isolated else (),
        marked_by=marked_by,
        logged=tuple(logged),
    )


def _walk(
    decision: Decision,
    source_node: str,
    destination_node: str,
    source_first: bool,
    policy_orders: Mapping[str, Sequence[str]],
) -> Prediction:
    marking = _marking_policies(decision)
    sides = [decision.egress, decision.ingress]
    if source_node == destination_node:
        if not source_first:
            sides.reverse()
        hops = [(source_node, side, bridged) for side in sides for bridged in (False, True)]
    else:
        hops = [(source_node, decision.egress, False), (destination_node, decision.ingress, False)]
    passes: list[ChainPass] = []
    lines: list[PredictedLine] = []
    numbers: dict[str, int] = {}
    passed: set[str] = set()
    for node, side, bridged in hops:
        jumped = policy_orders.get(side.pod) or side.selecting
        one = _pass(node, side, bridged, jumped, marking)
        passes.append(one)
        numbers[node] = numbers.get(node, 0) + 1
        mark = MARK_PASSED if node in passed else 0
        for policy in one.logged:
            lines.append(PredictedLine(node, side.pod, policy, mark, numbers[node]))
        if one.rejected:
            lines.append(PredictedLine(node, side.pod, None, mark, numbers[node]))
            break
        passed.add(node)
    return Prediction(tuple(passes), tuple(lines))


def _source_first(
    decision: Decision, node: str, placement: Placement, cluster_order: Sequence[str]
) -> bool:
    orders = placement.orders
    forward = orders.pods.get(node) if orders is not None else None
    order = list(forward) if forward else list(cluster_order)
    position = {key: index for index, key in enumerate(order)}
    missing = len(position)
    return position.get(decision.source, missing) <= position.get(decision.destination, missing)


def _chain_outcomes(node: str, side: SideDecision, marking: frozenset[str]) -> ChainOutcomes:
    if not side.isolated:
        return ChainOutcomes(node, side.pod, side.direction, (), (), ("default",), False)
    admitting = tuple(key for key in side.selecting if key in marking)
    if not admitting:
        lines = (*side.selecting, POD_CHAIN_LINE)
        return ChainOutcomes(node, side.pod, side.direction, lines, (), (), True)
    # Any policy that does not admit the packet can come before the first one that does.
    others = tuple(key for key in side.selecting if key not in marking)
    return ChainOutcomes(node, side.pod, side.direction, (), others, admitting, False)


def explain(
    cluster: Cluster,
    source: str,
    destination: str,
    port: int,
    protocol: str,
    placement: Placement | None = None,
) -> Explanation:
    """Explain one connection `source` -> `destination` (pod keys "ns/name") on port/protocol."""
    placement = placement or Placement()
    pods = {pod.key: pod for pod in cluster.pods}
    ignored = {pod.key: pod for pod in cluster.ignored}
    for role, key in (("FROM", source), ("TO", destination)):
        if key in ignored:
            reason = ignored[key].ignored_reason
            raise ExplainError(f"{role}: pod {key!r} is one kube-router ignores ({reason})")
        if key not in pods:
            known = ", ".join(sorted(pods)[:10]) or "none"
            raise ExplainError(f"{role}: no pod {key!r} in the manifests (pods: {known})")
    if source == destination:
        raise ExplainError(f"FROM and TO are the same pod {source!r}")
    decision = decide(cluster, pods[source], pods[destination], port, protocol.upper())
    return explain_decision(cluster, decision, placement)


def explain_decision(cluster: Cluster, decision: Decision, placement: Placement) -> Explanation:
    """The explanation of a decision already made (verify calls this once per probe)."""
    source_node = _node_of(decision.source, cluster.pod(decision.source).node, placement)
    destination_node = _node_of(
        decision.destination, cluster.pod(decision.destination).node, placement
    )
    orders = placement.orders
    policy_orders = {
        side.pod: _ordered(side.selecting, orders.policies.get(side.pod) if orders else None)
        for side in (decision.egress, decision.ingress)
    }
    cluster_order = [pod.key for pod in cluster.pods]
    source_first = _source_first(decision, source_node, placement, cluster_order)
    current = _walk(decision, source_node, destination_node, source_first, policy_orders)
    pod_orders: list[tuple[str, Prediction]] = []
    if source_node == destination_node:
        for first in (True, False):
            label = decision.source if first else decision.destination
            pod_orders.append(
                (label, _walk(decision, source_node, destination_node, first, policy_orders))
            )
    marking = _marking_policies(decision)
    outcomes = (
        _chain_outcomes(source_node, decision.egress, marking),
        _chain_outcomes(destination_node, decision.ingress, marking),
    )
    return Explanation(
        decision=decision,
        source_node=source_node,
        destination_node=destination_node,
        current=current,
        pod_orders=tuple(pod_orders),
        outcomes=outcomes,
        evidence=_evidence(outcomes, source_node != destination_node),
        seed=orders.seed if orders else None,
        refusals={
            side.direction: refusals(cluster, decision, side)
            for side in (decision.egress, decision.ingress)
            if not side.allowed
        },
    )


def refusals(cluster: Cluster, decision: Decision, side: SideDecision) -> tuple[str, ...]:
    """Why each rule of each policy selecting the side's pod does not admit the connection."""
    rules_key, peers_key = ("ingress", "from") if side.direction == "ingress" else ("egress", "to")
    peer = cluster.pod(decision.source if side.direction == "ingress" else decision.destination)
    destination = cluster.pod(decision.destination)
    policies = {policy.key: policy for policy in cluster.policies}
    wanted = f"{decision.port}/{decision.protocol}"
    reasons: list[str] = []
    for key in side.selecting:
        policy = policies[key]
        rules = policy.spec.get(rules_key) or ()
        if not rules:
            reasons.append(f"{key}: no {side.direction} rule (it admits nothing)")
        for index, rule in enumerate(rules):
            peers = rule.get(peers_key)
            where = f"{key} {side.direction}[{index}]"
            if peers and not any(peer_matches(cluster, policy, entry, peer) for entry in peers):
                reasons.append(f"{where}: {peer.key} is not among its `{peers_key}` peers")
            elif not ports_match(rule.get("ports"), destination, decision.port, decision.protocol):
                reasons.append(f"{where}: {wanted} is not among its ports")
    return tuple(reasons)


def blocked_by(decision: Decision) -> str | None:
    """ "ingress", "egress" or "both": which side's policies block it (None: allowed)."""
    sides = [side.direction for side in (decision.egress, decision.ingress) if not side.allowed]
    return "both" if len(sides) == 2 else (sides[0] if sides else None)


def explain_probes(
    cluster: Cluster, probes: Iterable[Probe], placement: Placement | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Every probe with its verdict, the side that blocks it and where its lines can be:
    `{"probes": [{from, to, port, protocol, allowed, blocked_by, evidence}]}` (verify's plan)."""
    placement = placement or Placement()
    documents = []
    for probe in probes:
        source, destination = cluster.pod(probe.source), cluster.pod(probe.destination)
        decision = decide(cluster, source, destination, probe.port, probe.protocol)
        explanation = explain_decision(cluster, decision, placement)
        documents.append(
            {
                "from": probe.source,
                "to": probe.destination,
                "port": probe.port,
                "protocol": probe.protocol,
                "allowed": decision.allowed,
                "blocked_by": blocked_by(decision),
                "evidence": explanation.evidence.to_dict(),
            }
        )
    return {"probes": documents}


def _node_of(key: str, manifest_node: str | None, placement: Placement) -> str:
    return placement.nodes.get(key) or manifest_node or UNKNOWN_NODE


def _evidence(outcomes: Sequence[ChainOutcomes], routed: bool) -> Evidence:
    egress = outcomes[0]
    rejecting = [outcome for outcome in outcomes if outcome.rejects]
    if routed and egress.rejects:
        # The source's node rejects it first; the packet never reaches the destination's node.
        rejecting = [egress]
    chains = tuple((outcome.node, outcome.pod) for outcome in rejecting)
    policies: list[str] = []
    for outcome in rejecting:
        for key in outcome.always:
            if key != POD_CHAIN_LINE and key not in policies:
                policies.append(key)
    return Evidence(
        nodes=tuple(dict.fromkeys(node for node, _ in chains)),
        chains=chains,
        policies=tuple(policies),
    )


# --------------------------------------------------------------------------- placement


def load_placement(path: Path) -> Placement:
    """`placement_from_lab` of a lab.json file; ExplainError naming the file when unreadable."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ExplainError(f"{path}: cannot read: {error.strerror}") from None
    except ValueError as error:
        raise ExplainError(f"{path}: not JSON: {error}") from None
    return placement_from_lab(document, str(path))


def placement_from_lab(document: Any, where: str = "lab.json") -> Placement:
    """Pod nodes and jump orders from the lab's lab.json (or any `{"pods": [...]}` document).

    Reads `pods[].namespace/name/node` (a single-node lab's top-level `node` otherwise), and,
    as the lab compiles them, `seed`, `nodes[].name/pod_order` (pod keys in
    `KUBE-ROUTER-FORWARD` order) and `pods[].policy_jumps` (policy keys in the chain's order).
    """
    if not isinstance(document, Mapping):
        raise ExplainError(f"{where}: expected a mapping with `pods`")
    pods = document.get("pods")
    if not isinstance(pods, list):
        raise ExplainError(f"{where}: pods: expected a list")
    default_node = document.get("node") if isinstance(document.get("node"), str) else None
    nodes: dict[str, str] = {}
    policy_orders: dict[str, tuple[str, ...]] = {}
    for index, item in enumerate(pods):
        if not isinstance(item, Mapping):
            raise ExplainError(f"{where}: pods[{index}]: expected a mapping")
        namespace, name = item.get("namespace"), item.get("name")
        if not isinstance(namespace, str) or not isinstance(name, str):
            raise ExplainError(f"{where}: pods[{index}]: expected string namespace and name")
        key = f"{namespace}/{name}"
        node = item.get("node", default_node)
        if isinstance(node, str) and node:
            nodes[key] = node
        if "policy_jumps" in item:
            policy_orders[key] = _strings(
                item["policy_jumps"], f"{where}: pods[{index}].policy_jumps"
            )
    pod_orders: dict[str, tuple[str, ...]] = {}
    described = document.get("nodes", [])
    if not isinstance(described, list):
        raise ExplainError(f"{where}: nodes: expected a list")
    for index, item in enumerate(described):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ExplainError(f"{where}: nodes[{index}]: expected a mapping with a name")
        if "pod_order" in item:
            pod_orders[item["name"]] = _strings(
                item["pod_order"], f"{where}: nodes[{index}].pod_order"
            )
    seed = document.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ExplainError(f"{where}: seed: expected an integer, got {seed!r}")
    orders = None
    if seed is not None or pod_orders or policy_orders:
        orders = JumpOrders(pods=pod_orders, policies=policy_orders, seed=seed)
    return Placement(nodes=nodes, orders=orders)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ExplainError(f"{where}: expected a list of names")
    return tuple(value)


# --------------------------------------------------------------------------- text


def render_explanation(explanation: Explanation) -> str:
    """The explanation as text: verdict, each side's reasons, the deciding chain, the lines."""
    decision = explanation.decision
    out: list[str] = []
    verdict = "ALLOWED" if decision.allowed else "BLOCKED"
    out.append(
        f"{decision.source} -> {decision.destination} {decision.port}/{decision.protocol}: "
        f"{verdict}"
    )
    for side in (decision.egress, decision.ingress):
        out.append(f"  {side.direction} ({side.pod}): {_side_reason(side)}")
        out.extend(f"    - {reason}" for reason in explanation.refusals.get(side.direction, ()))
    where = (
        f"routed: {decision.source} on {explanation.source_node}, {decision.destination} on "
        f"{explanation.destination_node} (over flannel.1, one pass per node)"
        if explanation.routed
        else f"bridged: both on {explanation.source_node} (a let-through packet passes each "
        "chain twice)"
    )
    out.append(f"  placement: {where}")
    rejecting = explanation.current.rejected_by
    if rejecting is None:
        out.append("  decided: no chain rejects it")
    else:
        out.append(
            f"  decided by: {rejecting.pod}'s chain on {rejecting.node} ({rejecting.direction})"
        )
    if explanation.kernel_allows == (not decision.allowed):
        out.append(
            "  note: kube-router's chains and the policies disagree here (a policy of both types "
            "runs its ingress and egress rules in one chain)"
        )
    seed = f", seed {explanation.seed}" if explanation.seed is not None else ""
    order = (
        "the lab's jump orders"
        if explanation.seed is not None
        else "the manifest order; a node's own order changes at every sync"
    )
    out.append(f"Lines in the current order ({order}{seed}):")
    out.extend(_line_texts(explanation.current) or ["  none"])
    out.append("Under the other jump orders:")
    for label, prediction in explanation.pod_orders:
        first = "current" if prediction == explanation.current else "other"
        texts = _line_texts(prediction)
        summary = "; ".join(text.strip() for text in texts) or "no line"
        out.append(f"  {label}'s chain first ({first} pod order): {summary}")
    for outcome in explanation.outcomes:
        out.append(f"  {_outcome_text(outcome, explanation.routed)}")
    out.append(f"Verify looks for: {explanation.evidence.describe()}")
    return "\n".join(out) + "\n"


def _side_reason(side: SideDecision) -> str:
    if not side.isolated:
        return f"allowed: no {side.direction} policy selects {side.pod}"
    selecting = ", ".join(side.selecting)
    if side.allowing:
        rules = ", ".join(f"{key} {side.direction}[{index}]" for key, index in side.allowing)
        return f"allowed by {rules} (selected by {selecting})"
    return f"blocked: selected by {selecting}, and no {side.direction} rule of them admits it"


def _line_texts(prediction: Prediction) -> list[str]:
    return [
        f"  {line.node}: {line.text}  ({line.chain_pod}'s chain, pass {line.pass_number})"
        for line in prediction.lines
    ]


def _outcome_text(outcome: ChainOutcomes, routed: bool) -> str:
    chain = f"{outcome.pod}'s {outcome.direction} chain on {outcome.node}"
    if outcome.admitted_by == ("default",):
        return f"{chain}: no policy, no line in any order"
    if outcome.rejects:
        policies = [key for key in outcome.always if key != POD_CHAIN_LINE]
        return (
            f"{chain}: in every order, DROP by policy lines of {', '.join(policies)} "
            "(in that chain's order) and the pod-chain line, when it runs"
        )
    admitted = ", ".join(outcome.admitted_by)
    if not outcome.sometimes:
        return f"{chain}: admitted by {admitted}, no line in any order"
    return (
        f"{chain}: admitted by {admitted}; a false DROP by policy line from each of "
        f"{', '.join(outcome.sometimes)} that runs before it (none when an admitting policy "
        "comes first); "
        + ("once: the packet is routed" if routed else "twice: the bridged packet passes twice")
    )
