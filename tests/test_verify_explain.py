"""`k3s-netpol explain` and the explain module: verdict, reasons, deciding chain, lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from k3s_netpol.cli import main
from k3s_netpol.explain import (
    ExplainError,
    JumpOrders,
    Placement,
    explain,
    placement_from_lab,
)
from k3s_netpol.model import load_manifests

MANIFESTS = Path(__file__).parent / "data" / "verify" / "two-nodes.yaml"


def run(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["explain", "-f", str(MANIFESTS), *arguments])
    return result.exit_code, result.output


def test_a_blocked_cross_node_probe_names_the_policies_and_the_deciding_node() -> None:
    code, output = run("y/d", "y/b", "80/TCP")
    assert code == 0, output
    assert output.startswith("y/d -> y/b 80/TCP: BLOCKED")
    assert "egress (y/d): allowed: no egress policy selects y/d" in output
    assert (
        "ingress (y/b): blocked: selected by y/deny-ingress, y/allow-from-x-a, and no ingress "
        "rule of them admits it"
    ) in output
    assert "routed: y/d on node-2, y/b on node-1" in output
    assert "decided by: y/b's chain on node-1 (ingress)" in output
    current = output.split("Lines in the current order")[1].split("Under the other")[0]
    assert current.splitlines()[1:] == [
        "  node-1: DROP by policy y/deny-ingress  MARK=0  (y/b's chain, pass 1)",
        "  node-1: DROP by policy y/allow-from-x-a  MARK=0  (y/b's chain, pass 1)",
        "  node-1: pod chain (no prefix)  MARK=0  (y/b's chain, pass 1)",
    ]
    assert "Verify looks for: the pod-chain line of y/b's chain on node-1" in output


def test_an_allowed_bridged_probe_shows_false_drops_twice_and_the_rule() -> None:
    code, output = run("x/a", "y/b", "80")
    assert code == 0, output
    assert "ALLOWED" in output.splitlines()[0]
    assert "allowed by y/allow-from-x-a ingress[0]" in output
    assert "bridged: both on node-1" in output
    assert output.count("DROP by policy y/deny-ingress  MARK=") >= 2
    assert "a false DROP by policy line from each of y/deny-ingress" in output


def test_egress_block_is_decided_on_the_sources_node() -> None:
    code, output = run("x/c", "x/a", "80/tcp", "--json")
    assert code == 0, output
    document = json.loads(output)
    assert document["allowed"] is False
    assert document["decided_on"] == {"node": "node-2", "pod": "x/c", "direction": "egress"}
    assert [line["prefix"] for line in document["lines"]] == ["DROP by policy x/deny-egress-c", ""]
    assert document["evidence"]["nodes"] == ["node-2"]
    sides = {side["direction"]: side for side in document["sides"]}
    assert sides["egress"]["selecting"] == ["x/deny-egress-c"]
    assert sides["ingress"]["isolated"] is False


def test_the_labs_jump_orders_set_the_current_order(tmp_path: Path) -> None:
    lab = {
        "seed": 42,
        "nodes": [{"name": "node-1", "pod_order": ["y/b", "x/a"]}],
        "pods": [
            {"namespace": "x", "name": "a", "node": "node-1", "policy_jumps": []},
            {
                "namespace": "y",
                "name": "b",
                "node": "node-1",
                "policy_jumps": ["y/allow-from-x-a", "y/deny-ingress"],
            },
        ],
    }
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(lab))
    code, output = run("x/a", "y/b", "80/TCP", "--lab", str(path))
    assert code == 0, output
    assert "the lab's jump orders, seed 42" in output
    current = output.split("Lines in the current order")[1].split("Under the other")[0]
    assert current.splitlines()[1:] == ["  none"]
    assert "y/b's chain first (current pod order): no line" in output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("x/a", "y/zz", "80/TCP"), "TO: no pod 'y/zz' in the manifests"),
        (("nope", "y/b", "80/TCP"), "FROM: no pod 'nope' in the manifests"),
        (("x/a", "x/a", "80/TCP"), "FROM and TO are the same pod"),
        (("x/a", "y/b", "80/ICMP"), "PORT/PROTO: '80/ICMP': protocol must be one of TCP"),
        (("x/a", "y/b", "http"), "PORT/PROTO: 'http': expected PORT or PORT/PROTOCOL"),
        (("x/a", "y/b", "0/TCP"), "port must be 1-65535"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(arguments: tuple[str, ...], message: str) -> None:
    code, output = run(*arguments)
    assert code == 2
    assert message in output
    assert "Traceback" not in output


def test_missing_manifest_or_lab_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["explain", "-f", str(tmp_path / "none.yaml"), "x/a", "y/b", "80"]
    )
    assert result.exit_code == 2
    assert "none.yaml: no such file" in result.output
    code, output = run("x/a", "y/b", "80", "--lab", str(tmp_path / "lab.json"))
    assert code == 2
    assert "lab.json: cannot read" in output
    bad = tmp_path / "bad.json"
    bad.write_text('{"pods": [], "nodes": [{"name": "node-1", "pod_order": "x/a"}]}')
    code, output = run("x/a", "y/b", "80", "--lab", str(bad))
    assert code == 2
    assert "nodes[0].pod_order: expected a list of names" in output


def test_placement_from_lab_reads_nodes_seed_and_orders() -> None:
    placement = placement_from_lab(
        {
            "node": "lab",
            "seed": 7,
            "nodes": [{"name": "lab", "pod_order": ["x/a"]}],
            "pods": [
                {"namespace": "x", "name": "a", "policy_jumps": ["x/p"]},
                {"namespace": "y", "name": "b", "node": "n2"},
            ],
        }
    )
    assert placement.nodes == {"x/a": "lab", "y/b": "n2"}
    assert placement.orders == JumpOrders(
        pods={"lab": ("x/a",)}, policies={"x/a": ("x/p",)}, seed=7
    )
    with pytest.raises(ExplainError, match="seed: expected an integer"):
        placement_from_lab({"pods": [], "seed": "7"})


def test_a_policy_order_that_puts_the_admitting_policy_first_leaves_no_line() -> None:
    cluster = load_manifests([MANIFESTS])
    first = Placement(
        nodes={},
        orders=JumpOrders(policies={"y/d": ("y/allow-from-x-all", "y/deny-ingress")}),
    )
    explanation = explain(cluster, "x/a", "y/d", 81, "TCP", first)
    assert explanation.current.lines == ()
    assert explanation.routed
    last = Placement(
        orders=JumpOrders(
            policies={"y/d": ("y/deny-ingress", "y/allow-from-x-a", "y/allow-from-x-all")}
        ),
    )
    lines = explain(cluster, "x/a", "y/d", 81, "TCP", last).current.lines
    assert [(line.node, line.policy, line.pass_number) for line in lines] == [
        ("node-2", "y/deny-ingress", 1),
        ("node-2", "y/allow-from-x-a", 1),
    ]


def test_a_let_through_bridged_packet_passes_the_destinations_chain_twice() -> None:
    cluster = load_manifests([MANIFESTS])
    explanation = explain(cluster, "x/a", "y/b", 80, "TCP")
    assert not explanation.routed
    assert [(one.pod, one.bridged) for one in explanation.current.passes] == [
        ("x/a", False),
        ("x/a", True),
        ("y/b", False),
        ("y/b", True),
    ]
    assert [(line.policy, line.mark, line.pass_number) for line in explanation.current.lines] == [
        ("y/deny-ingress", 0x20000, 3),
        ("y/deny-ingress", 0x20000, 4),
    ]


BOTH_TYPES = """
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: z, labels: {app: z}}
spec: {nodeName: n1, containers: [{name: c, image: nginx}]}
status: {podIP: 10.42.0.20}
---
apiVersion: v1
kind: Pod
metadata: {name: q, namespace: z, labels: {app: z}}
spec: {nodeName: n1, containers: [{name: c, image: nginx}]}
status: {podIP: 10.42.0.21}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-only-open, namespace: z}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  egress: [{}]
"""


def test_a_policy_of_both_types_can_mark_in_the_other_sides_chain(tmp_path: Path) -> None:
    manifests = tmp_path / "both.yaml"
    manifests.write_text(BOTH_TYPES)
    result = CliRunner().invoke(main, ["explain", "-f", str(manifests), "z/p", "z/q", "80"])
    assert result.exit_code == 0, result.output
    assert "BLOCKED" in result.output.splitlines()[0]
    assert "decided: no chain rejects it" in result.output
    assert "kube-router's chains and the policies disagree here" in result.output


def test_a_pod_kube_router_ignores_is_named_with_the_reason(tmp_path: Path) -> None:
    manifests = tmp_path / "host.yaml"
    manifests.write_text(
        BOTH_TYPES
        + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: h, namespace: z}\n"
        + "spec: {hostNetwork: true, containers: [{name: c, image: nginx}]}\n"
        + "status: {podIP: 10.0.0.5}\n"
    )
    result = CliRunner().invoke(main, ["explain", "-f", str(manifests), "z/h", "z/q", "80"])
    assert result.exit_code == 2
    assert "FROM: pod 'z/h' is one kube-router ignores (" in result.output


def test_all_gives_every_probe_the_side_and_the_nodes_verify_looks_at() -> None:
    code, output = run("--all", "--port", "80")
    assert code == 0, output
    probes = {(p["from"], p["to"]): p for p in json.loads(output)["probes"]}
    assert len(probes) == 12
    assert probes[("x/c", "x/a")]["blocked_by"] == "egress"
    assert probes[("x/c", "x/a")]["evidence"]["nodes"] == ["node-2"]
    assert probes[("y/d", "y/b")]["evidence"]["chains"] == [{"node": "node-1", "pod": "y/b"}]
    assert probes[("x/a", "y/b")]["allowed"] is True
    assert probes[("x/a", "y/b")]["evidence"]["nodes"] == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--all", "x/a"), "--all explains every probe"),
        (("x/a", "y/b"), "expected FROM TO PORT/PROTO (3 arguments), got 2"),
        (("--all", "--port", "80/XYZ"), "--port: '80/XYZ': protocol must be one of"),
        (("x/a", "y/b", "80", "--port", "81"), "--port goes with --all"),
    ],
)
def test_all_and_argument_mistakes_exit_2(arguments: tuple[str, ...], message: str) -> None:
    code, output = run(*arguments)
    assert code == 2
    assert message in output


def test_why_no_rule_admits_names_each_rule_and_what_it_misses() -> None:
    code, output = run("x/a", "y/b", "81/TCP")
    assert code == 0, output
    assert "    - y/deny-ingress: no ingress rule (it admits nothing)" in output
    assert "    - y/allow-from-x-a ingress[0]: 81/TCP is not among its ports" in output
    code, output = run("y/d", "y/b", "80/TCP", "--json")
    ingress = json.loads(output)["sides"][1]
    assert ingress["refusals"] == [
        "y/deny-ingress: no ingress rule (it admits nothing)",
        "y/allow-from-x-a ingress[0]: y/d is not among its `from` peers",
    ]


def test_builtin_workloads_are_the_labs_own_manifests() -> None:
    result = CliRunner().invoke(
        main, ["explain", "--builtin-workloads", "sample1/nginx", "sample2/nginx", "80/TCP"]
    )
    assert result.exit_code == 0, result.output
    # The workloads alone carry no policy: nothing selects either side.
    assert (
        "egress (sample1/nginx): allowed: no egress policy selects sample1/nginx" in result.output
    )
    empty = CliRunner().invoke(main, ["explain", "sample1/nginx", "sample2/nginx", "80/TCP"])
    assert empty.exit_code == 2
    assert "give the manifests with -f FILE (or --builtin-workloads)" in empty.output
