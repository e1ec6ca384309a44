"""lab.compile_lab and `k3s-netpol lab compile`: the compiled text, without a kernel.

The golden names come from the tutorial's `iptables -L` listing of a real K3s node (the sets
kube-router made for the same five policies in sample1 and sample2), not from our own code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from k3s_netpol import kuberouter
from k3s_netpol.bundle import BundleConfig, render, render_yaml
from k3s_netpol.cli import main
from k3s_netpol.lab import (
    CompiledCluster,
    CompiledLab,
    LabError,
    LogLimit,
    NodeSpec,
    compile_cluster,
    compile_lab,
    write_compiled,
)
from k3s_netpol.model import Cluster, cluster_from_documents, load_manifests

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT / "src/k3s_netpol/data/lab/workloads.yaml"
CASES = ROOT / "tests/data/netpol-cases"
NODE = "k3s-netpol-lab"
# One node hosting every workload pod (server and agent subnets): the laptop lab.
ONE_NODE_BRIDGE = "10.42.0.1/16"

# From the seed tutorial's listing of node2 (policy -> the sets its rules matched).
TUTORIAL_SETS = {
    ("sample1", "allow-all-svclbtraefik-ingress"): "KUBE-DST-AZLS65URBWHIM4LV",
    ("sample1", "allow-from-cattle-monitoring-system"): "KUBE-DST-T5UTRUNREWDWGD44",
    ("sample1", "allow-same-namespace"): "KUBE-DST-5TPLTTXGTPDHQ2AH",
    ("sample2", "allow-all-traefik-v121-ingress"): "KUBE-DST-Z5YXSV5A3HW7QEMX",
    ("sample2", "allow-all-svclbtraefik-ingress"): "KUBE-DST-J3FS6JPAPN6WYKQ3",
    ("sample2", "allow-from-cattle-monitoring-system"): "KUBE-DST-2CMQQKUI4WHO4LO2",
    ("sample2", "allow-same-namespace"): "KUBE-DST-OH37RT6TQZFFFG4U",
}
TUTORIAL_SAME_NAMESPACE_SOURCE = "KUBE-SRC-OPGXQ4TCHJJUUOWB"


def one_node(cluster: Cluster, **options: Any) -> CompiledLab:
    return compile_lab(cluster, NODE, bridge_address=ONE_NODE_BRIDGE, **options)


def bundle_cluster(tmp_path: Path, **settings: Any) -> Cluster:
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(render_yaml(render(BundleConfig(**settings))))
    return load_manifests([bundle, WORKLOADS])


def case_cluster(name: str) -> Cluster:
    case = yaml.safe_load((CASES / "cases" / name).read_text())
    documents = [d for d in yaml.safe_load_all((CASES / "cluster.yaml").read_text()) if d]
    return cluster_from_documents([*documents, *case["policies"]], name)


def chain_rules(rules: str, chain: str) -> list[str]:
    return [line for line in rules.splitlines() if line.startswith(f"-A {chain} ")]


def pod_chain(rules: str, pod_name: str, namespace: str) -> str:
    match = re.search(
        rf'"rule to jump traffic destined to POD name:{pod_name} namespace: {namespace} '
        r'to chain (KUBE-POD-FW-\w+)"',
        rules,
    )
    assert match, f"no jump to the chain of {namespace}/{pod_name}"
    return match.group(1)


def test_set_names_are_the_ones_a_real_k3s_node_made(tmp_path: Path) -> None:
    compiled = one_node(bundle_cluster(tmp_path))
    for (namespace, policy), name in TUTORIAL_SETS.items():
        assert f"create {name} hash:ip timeout 0\n" in compiled.ipset_restore, (namespace, policy)
        assert f"--match-set {name} dst" in compiled.iptables_rules
    assert f"--match-set {TUTORIAL_SAME_NAMESPACE_SOURCE} src" in compiled.iptables_rules


def test_compile_is_deterministic_and_rewrites_nothing_unchanged(tmp_path: Path) -> None:
    first = one_node(bundle_cluster(tmp_path), seed=7)
    second = one_node(bundle_cluster(tmp_path), seed=7)
    assert first.files() == second.files()
    out = tmp_path / "out"
    assert sorted(path.name for path in write_compiled(first, out)) == [
        "ipset.restore",
        "iptables.rules",
        "lab.json",
    ]
    assert write_compiled(second, out) == []


def test_pod_chain_has_kube_routers_order(tmp_path: Path) -> None:
    compiled = one_node(bundle_cluster(tmp_path), manifest_order=True)
    rules = compiled.iptables_rules
    chain = pod_chain(rules, "nginx", "sample1")
    body = chain_rules(rules, chain)
    targets = [line.rsplit(" -j ", 1)[1].split()[0] for line in body]
    assert targets[:3] == [kuberouter.COMMON_NETPOL_CHAIN, "ACCEPT", "KUBE-NWPLCY-DEFAULT"]
    assert "run through default egress network policy chain" in body[2]
    policy_jumps = re.findall(r'"run through nw policy ([\w-]+)"', "\n".join(body))
    # -I 1 per policy in order leaves them reversed; the bundle lists deny-by-default first.
    assert policy_jumps[-1] == "deny-by-default"
    assert set(policy_jumps) == {
        "deny-by-default",
        "allow-same-namespace",
        "allow-from-cattle-monitoring-system",
    }
    assert targets[-4:] == ["NFLOG", "REJECT", "MARK", "MARK"]
    assert "! --mark 0x10000/0x10000" in body[-4]
    assert "--nflog-group 100" in body[-4]
    assert "--nflog-prefix" not in body[-4]
    assert body[-2].endswith("-j MARK --set-xmark 0x0/0x10000")
    assert body[-1].endswith("-j MARK --set-xmark 0x20000/0x20000")
    for builtin in ("INPUT", "FORWARD", "OUTPUT"):
        builtin_rules = chain_rules(rules, builtin)
        assert builtin_rules[0].endswith(f"-j KUBE-ROUTER-{builtin}")
        assert builtin_rules[1].endswith("-m mark --mark 0x20000/0x20000 -j ACCEPT")
    forward = chain_rules(rules, "KUBE-ROUTER-FORWARD")
    assert any("--physdev-is-bridged" in line and f"-j {chain}" in line for line in forward)


def test_policy_chains_log_with_the_annotations_limits(tmp_path: Path) -> None:
    compiled = one_node(
        bundle_cluster(tmp_path, nflog_limit="50/second", nflog_limit_burst=200),
        sync_version="0",
    )
    rules = compiled.iptables_rules
    chain = kuberouter.policy_chain("sample2", "deny-by-default", "0")
    body = chain_rules(rules, chain)
    assert body == [
        f'-A {chain} -m comment --comment "rule to log dropped traffic" -m limit --limit '
        "50/second --limit-burst 200 -m mark ! --mark 0x10000/0x10000 -j NFLOG --nflog-group 100 "
        '--nflog-prefix "DROP by policy sample2/deny-by-default"'
    ]
    # The pod chain's unprefixed rule keeps kube-router's fixed limit, whatever the annotations.
    pod_log = chain_rules(rules, pod_chain(rules, "nginx", "sample2"))[-4]
    assert "-m mark ! --mark 0x10000/0x10000 -m limit --limit 10/minute --limit-burst 10" in (
        pod_log
    )
    assert compiled.lab["pod_log_limit"] == {"limit": "10/minute", "burst": 10}
    assert compiled.lab["deviations"] == []


def test_raised_pod_log_limit_is_a_named_deviation(tmp_path: Path) -> None:
    compiled = one_node(bundle_cluster(tmp_path), pod_log_limit=LogLimit("600/minute", 100))
    rules = compiled.iptables_rules
    for pod in ("nginx", "client"):
        assert (
            "--limit 600/minute --limit-burst 100"
            in (chain_rules(rules, pod_chain(rules, pod, "sample2"))[-4])
        )
    assert [d["variable"] for d in compiled.lab["deviations"]] == ["netpol_lab_pod_log_limit"]
    with pytest.raises(LabError, match="pod log limit"):
        one_node(bundle_cluster(tmp_path), pod_log_limit=LogLimit("fast", 10))


def test_jump_orders_follow_the_seed_and_are_listed_in_lab_json(tmp_path: Path) -> None:
    cluster = bundle_cluster(tmp_path)
    orders = set()
    for seed in range(12):
        compiled = one_node(cluster, seed=seed)
        lab = compiled.lab
        assert lab["seed"] == seed
        rules = compiled.iptables_rules
        for pod in lab["pods"]:
            body = "\n".join(chain_rules(rules, pod["chain"]))
            names = re.findall(r'"run through nw policy ([\w-]+)"', body)
            assert names == [key.split("/")[1] for key in pod["policy_jumps"]]
        forward = re.findall(
            r'-A KUBE-ROUTER-FORWARD -m comment --comment "rule to jump traffic destined to POD '
            r"name:(\S+) namespace: (\S+) to chain",
            rules,
        )
        assert [f"{ns}/{name}" for name, ns in forward] == lab["pod_order"]
        orders.add((tuple(lab["pod_order"]), tuple(lab["policy_order"])))
    assert len(orders) > 6, "the seed does not shuffle the orders"
    manifest = one_node(cluster, seed=3, manifest_order=True).lab
    assert manifest["pod_order"] == [f"{p['namespace']}/{p['name']}" for p in manifest["pods"]]
    assert manifest["policy_order"] == [policy.key for policy in cluster.policies]


def test_allow_rules_mark_then_return(tmp_path: Path) -> None:
    rules = one_node(bundle_cluster(tmp_path), sync_version="0").iptables_rules
    chain = kuberouter.policy_chain("sample1", "allow-same-namespace", "0")
    mark, ret, log = chain_rules(rules, chain)
    match = f"--match-set {TUTORIAL_SAME_NAMESPACE_SOURCE} src -m set --match-set "
    assert match in mark
    assert mark.endswith("-j MARK --set-xmark 0x10000/0x10000")
    assert match in ret
    assert ret.endswith("-m mark --mark 0x10000/0x10000 -j RETURN")
    assert "--nflog-prefix" in log


def test_ip_block_with_except_is_a_hash_net_set_with_nomatch() -> None:
    compiled = compile_lab(case_cluster("043-egress-cidr-except.yaml"), NODE)
    name = kuberouter.rule_destination_set(
        "x", "allow-client-a-via-cidr-egress-rule", 0, "IPv4", "ipblock"
    )
    assert f"create {name} hash:net timeout 0" in compiled.ipset_restore
    assert re.search(r"add TMP-\w+ 0\.0\.0\.0/4 timeout 0\n", compiled.ipset_restore)
    assert re.search(r"add TMP-\w+ 10\.42\.0\.12/32 timeout 0 nomatch\n", compiled.ipset_restore)
    source = kuberouter.policy_source_set("x", "allow-client-a-via-cidr-egress-rule")
    assert f"--match-set {source} src -m set --match-set {name} dst" in compiled.iptables_rules


def test_slash_zero_blocks_are_split_in_halves() -> None:
    cluster = case_cluster("043-egress-cidr-except.yaml")
    spec = dict(cluster.policies[0].spec)
    spec["egress"] = [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["0.0.0.0/0"]}}]}]
    cluster.policies[0] = type(cluster.policies[0])("x", cluster.policies[0].name, spec, {})
    restore = compile_lab(cluster, NODE).ipset_restore
    for half in ("0.0.0.0/1", "128.0.0.0/1"):
        assert re.search(rf"add TMP-\w+ {re.escape(half)} timeout 0\n", restore)
        assert re.search(rf"add TMP-\w+ {re.escape(half)} timeout 0 nomatch\n", restore)


def test_named_port_resolves_to_a_set_of_the_pods_that_declare_it() -> None:
    compiled = compile_lab(case_cluster("018-ingress-one-named-port.yaml"), NODE)
    policy = case_cluster("018-ingress-one-named-port.yaml").policies[0]
    name = kuberouter.named_port_set(policy.namespace, policy.name, "ingressrule", 0, 0)
    assert f"create {name} hash:ip timeout 0" in compiled.ipset_restore
    assert re.search(rf"--match-set {name} dst -p tcp --dport 81 -j MARK", compiled.iptables_rules)


def test_egress_pod_peers_use_the_policy_source_set_and_the_rule_destination_set() -> None:
    cluster = case_cluster("034-egress-to-pod-in-different-ns.yaml")
    policy = cluster.policies[0]
    compiled = compile_lab(cluster, NODE)
    source = kuberouter.policy_source_set(policy.namespace, policy.name)
    destination = kuberouter.rule_destination_set(policy.namespace, policy.name, 0)
    assert f"--match-set {source} src -m set --match-set {destination} dst" in (
        compiled.iptables_rules
    )
    a_chain = pod_chain(compiled.iptables_rules, "a", "x")
    jumps = [line for line in chain_rules(compiled.iptables_rules, a_chain) if "nw policy" in line]
    assert jumps
    assert all(line.startswith(f"-A {a_chain} -s 10.42.0.11 ") for line in jumps)


def test_lab_json_lists_local_pods_and_tcp_probes(tmp_path: Path) -> None:
    compiled = one_node(bundle_cluster(tmp_path), netns_prefix="t-")
    lab = compiled.lab
    assert lab["node"] == NODE
    pods = {f"{pod['namespace']}/{pod['name']}": pod for pod in lab["pods"]}
    assert pods["sample1/nginx"]["netns"] == "t-sample1_nginx"
    assert pods["sample1/nginx"]["ip"] == "10.42.0.11"
    assert pods["sample1/nginx"]["tcp_ports"] == [80]
    assert all(len(pod["veth"]) <= 15 for pod in lab["pods"])
    assert {probe["protocol"] for probe in lab["probes"]} == {"TCP"}
    verdicts = {(p["from"], p["to"]): p["allowed"] for p in lab["probes"]}
    assert verdicts[("sample1/nginx", "sample2/nginx")] is False
    assert verdicts[("cattle-monitoring-system/prometheus", "sample2/nginx")] is True


def test_pods_on_other_nodes_are_peers_only(tmp_path: Path) -> None:
    documents = list(yaml.safe_load_all(WORKLOADS.read_text()))
    for document in documents:
        if document["kind"] == "Pod" and document["metadata"]["namespace"] == "sample2":
            # Outside the node's pod subnet: a pod inside it would be this node's (its podCIDR).
            document["spec"]["nodeName"] = "elsewhere"
            document["status"]["podIP"] = re.sub(
                r"^10\.42\.\d+\.", "10.42.9.", document["status"]["podIP"]
            )
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(render_yaml(render(BundleConfig())))
    cluster = load_manifests([bundle])
    remote = cluster_from_documents(documents, "workloads")
    cluster.pods.extend(remote.pods)
    compiled = compile_lab(cluster, NODE)
    assert "sample2/nginx" not in {f"{p['namespace']}/{p['name']}" for p in compiled.lab["pods"]}
    assert "POD name:nginx namespace: sample2" not in compiled.iptables_rules
    assert "add TMP-" in compiled.ipset_restore
    assert "10.42.9.21" in compiled.ipset_restore


@pytest.mark.parametrize(
    ("ip", "message"),
    [
        ("10.43.0.5", "sample1/nginx: status.podIP 10.43.0.5 is not a free host address"),
        ("10.42.0.1", "sample1/nginx: status.podIP 10.42.0.1 is not a free host address"),
        (
            "10.42.1.12",
            "sample1/client: status.podIP 10.42.1.12 is already the IP of pod sample1/nginx",
        ),
    ],
)
def test_bad_pod_addresses_are_refused_naming_the_pod(ip: str, message: str) -> None:
    documents = list(yaml.safe_load_all(WORKLOADS.read_text()))
    for document in documents:
        metadata = document["metadata"]
        if (metadata.get("namespace"), metadata["name"]) == ("sample1", "nginx"):
            # Unscheduled: the pod must then fit a lab node's pod subnet.
            del document["spec"]["nodeName"]
            document["status"]["podIP"] = ip
    with pytest.raises(LabError, match=re.escape(message)):
        one_node(cluster_from_documents(documents, "workloads.yaml"))


def test_empty_node_and_bad_bridge_are_refused(tmp_path: Path) -> None:
    cluster = bundle_cluster(tmp_path)
    with pytest.raises(LabError, match="node"):
        compile_lab(cluster, "")
    with pytest.raises(LabError, match="bridge address"):
        compile_lab(cluster, NODE, bridge_address="not-an-address")


def test_cli_compile_writes_reports_and_refuses_bad_input(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(render_yaml(render(BundleConfig())))
    out = tmp_path / "lab"
    runner = CliRunner()
    arguments = ["lab", "compile", "-f", str(bundle), "--builtin-workloads"]
    arguments += ["--node", f"{NODE}={ONE_NODE_BRIDGE}"]
    first = runner.invoke(main, [*arguments, "--out", str(out), "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert sorted(summary["changed"]) == [
        f"{NODE}/ipset.restore",
        f"{NODE}/iptables.rules",
        f"{NODE}/lab.json",
        "lab.json",
    ]
    assert summary["pods"] == 6
    assert summary["nodes"] == {NODE: 6}
    second = runner.invoke(main, [*arguments, "--out", str(out)])
    assert second.exit_code == 0
    assert "unchanged" in second.stdout
    assert f"seed {summary['seed']}" in second.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Pod\nmetadata: {name: p, namespace: n}\nstatus: {podIP: nope}\n")
    bad = runner.invoke(
        main, ["lab", "compile", "-f", str(broken), "--node", NODE, "--out", str(out)]
    )
    assert bad.exit_code == 2
    assert "broken.yaml" in bad.output
    assert "status.podIP" in bad.output
    missing = runner.invoke(main, ["lab", "compile", "--node", NODE, "--out", str(out)])
    assert missing.exit_code == 2
    assert "--builtin-workloads" in missing.output
    bad_node = runner.invoke(main, [*arguments[:-2], "--node", "a/b", "--out", str(out)])
    assert bad_node.exit_code == 2
    assert "node 'a/b'" in bad_node.output


def test_cli_keeps_the_stored_seed_until_a_new_sync(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(render_yaml(render(BundleConfig())))
    out = tmp_path / "lab"
    runner = CliRunner()
    arguments = ["lab", "compile", "-f", str(bundle), "--builtin-workloads", "--out", str(out)]
    arguments += ["--node", "k3s-netpol-lab-server", "--node", "k3s-netpol-lab-agent=10.42.1.1/24"]

    def seed_of(*extra: str) -> int:
        result = runner.invoke(main, [*arguments, *extra, "--json"])
        assert result.exit_code == 0, result.output
        seed: int = json.loads(result.stdout)["seed"]
        assert json.loads((out / "lab.json").read_text())["seed"] == seed
        return seed

    first = seed_of()
    assert seed_of() == first
    assert seed_of("--seed", "42") == 42
    assert seed_of() == 42
    assert seed_of("--new-seed") != 42
    (out / "lab.json").write_text('{"seed": "x"}')
    result = runner.invoke(main, arguments)
    assert result.exit_code == 2
    assert "lab.json" in result.output
    assert "seed" in result.output


def two_nodes(cluster: Cluster, **options: Any) -> CompiledCluster:
    nodes = [
        NodeSpec("k3s-netpol-lab-server", "10.42.0.1/24", "10.89.0.2"),
        NodeSpec("k3s-netpol-lab-agent", "10.42.1.1/24", "10.89.0.3"),
    ]
    return compile_cluster(cluster, nodes, **options)


def test_two_nodes_each_compile_their_own_pods_over_every_pod_of_the_cluster(
    tmp_path: Path,
) -> None:
    compiled = two_nodes(bundle_cluster(tmp_path), seed=5)
    lab = compiled.lab
    by_node = {node["name"]: node for node in lab["nodes"]}
    assert by_node["k3s-netpol-lab-server"]["pods"] == [
        "sample1/nginx",
        "sample1/traefik",
        "sample2/client",
    ]
    assert by_node["k3s-netpol-lab-agent"]["pod_cidr"] == "10.42.1.0/24"
    namespaces = {
        name: {key.split("/")[0] for key in node["pods"]} for name, node in by_node.items()
    }
    assert all({"sample1", "sample2"} <= found for found in namespaces.values())
    assert {pod["node"] for pod in lab["pods"]} == set(by_node)
    assert len(lab["probes"]) == 6 * 5
    server = compiled.nodes["k3s-netpol-lab-server"]
    assert "POD name:nginx namespace: sample1" in server.iptables_rules
    assert "POD name:nginx namespace: sample2" not in server.iptables_rules
    # The sets hold every pod of the cluster, as kube-router's do.
    assert "10.42.1.21 timeout 0" in server.ipset_restore
    assert {p["from"] for p in server.lab["probes"]} <= set(
        by_node["k3s-netpol-lab-server"]["pods"]
    )
    flannel = server.lab["flannel"]
    assert flannel["device"] == "flannel.1"
    assert flannel["vni"] == 1
    assert flannel["port"] == 8472
    assert flannel["address"] == "10.42.0.0/32"
    assert flannel["local"] == "10.89.0.2"
    agent = by_node["k3s-netpol-lab-agent"]
    assert flannel["remotes"] == [
        {
            "node": "k3s-netpol-lab-agent",
            "subnet": "10.42.1.0/24",
            "gateway": "10.42.1.0",
            "mac": compiled.nodes["k3s-netpol-lab-agent"].lab["flannel"]["mac"],
            "node_ip": "10.89.0.3",
        }
    ]
    assert agent["node_ip"] == "10.89.0.3"
    # Each node's sync draws its own orders from the one seed.
    assert sorted(agent["policy_order"]) == sorted(by_node["k3s-netpol-lab-server"]["policy_order"])
    assert two_nodes(bundle_cluster(tmp_path), seed=5).files() == compiled.files()


def test_overlapping_subnets_and_misplaced_pods_are_refused(tmp_path: Path) -> None:
    cluster = bundle_cluster(tmp_path)
    nodes = [NodeSpec("a", "10.42.0.1/16"), NodeSpec("b", "10.42.1.1/24")]
    with pytest.raises(
        LabError, match=re.escape("node b: pod subnet 10.42.1.0/24 overlaps node a")
    ):
        compile_cluster(cluster, nodes)
    swapped = [
        NodeSpec("k3s-netpol-lab-server", "10.42.1.1/24"),
        NodeSpec("k3s-netpol-lab-agent", "10.42.0.1/24"),
    ]
    with pytest.raises(
        LabError, match=re.escape("pod sample1/nginx: status.podIP 10.42.0.11 is not a free")
    ):
        compile_cluster(cluster, swapped)


def test_ip_block_entries_keep_the_peers_order_and_repeats() -> None:
    cluster = case_cluster("043-egress-cidr-except.yaml")
    spec = dict(cluster.policies[0].spec)
    spec["egress"] = [
        {
            "to": [
                {"ipBlock": {"cidr": "192.168.1.0/24"}},
                {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}},
            ]
        }
    ]
    cluster.policies[0] = type(cluster.policies[0])("x", cluster.policies[0].name, spec, {})
    restore = compile_lab(cluster, NODE).ipset_restore
    added = re.findall(r"add TMP-\w+ (192\.168\.\S+ timeout 0(?: nomatch)?)\n", restore)
    assert added == [
        "192.168.1.0/24 timeout 0",
        "192.168.0.0/16 timeout 0",
        "192.168.1.0/24 timeout 0 nomatch",
    ]


def test_cli_sync_runs_the_lab_play_as_a_resync_and_prints_the_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from k3s_netpol.cli import lab as lab_cli
    from k3s_netpol.runner import RunResult

    calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def fake_run(command: str, playbooks: tuple[str, ...], params: dict[str, Any]) -> list[Any]:
        calls.append((playbooks, lab_cli._lab_options(params).extra_vars))
        bundle = tmp_path / "bundle.yaml"
        bundle.write_text(render_yaml(render(BundleConfig())))
        compiled = compile_cluster(
            load_manifests([bundle, WORKLOADS]), [NodeSpec(NODE, ONE_NODE_BRIDGE)], seed=31
        )
        write_compiled(compiled, tmp_path / "art" / "lab")
        return [RunResult(playbook=playbooks[0], status="successful", rc=0)]

    monkeypatch.setattr(lab_cli, "_run", fake_run)
    runner = CliRunner()
    result = runner.invoke(
        main, ["lab", "sync", "--seed", "31", "--artifacts-dir", str(tmp_path / "art")]
    )
    assert result.exit_code == 0, result.output
    assert "seed 31" in result.stdout
    assert calls == [
        (("playbooks/lab.yml",), {"netpol_lab_resync": True, "netpol_lab_sync_seed": 31})
    ]
    as_json = runner.invoke(
        main, ["lab", "sync", "--json", "--artifacts-dir", str(tmp_path / "art")]
    )
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document["sync"]["seed"] == 31
    assert document["sync"]["nodes"][NODE]["pod_order"]
    assert calls[-1][1] == {"netpol_lab_resync": True, "netpol_lab_sync_seed": ""}
    (tmp_path / "art" / "lab" / "lab.json").unlink()
    monkeypatch.setattr(lab_cli, "_run", lambda *_: [RunResult("p", "successful", 0)])
    missing = runner.invoke(main, ["lab", "sync", "--artifacts-dir", str(tmp_path / "art")])
    assert missing.exit_code == 2
    assert "lab.json" in missing.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.pop("mac"), "flannel.mac: expected a non-empty string"),
        (lambda f: f.update(vni="1"), "flannel.vni: expected an integer"),
        (lambda f: f.update(local="10.89.0"), "flannel: "),
        (lambda f: f["remotes"][0].pop("node_ip"), "flannel.remotes[0].node_ip"),
        (lambda f: f.update(remotes={}), "flannel.remotes: expected a list"),
    ],
)
def test_node_helper_refuses_a_bad_flannel_section_naming_the_field(
    tmp_path: Path, change: Any, message: str
) -> None:
    import subprocess
    import sys

    compiled = two_nodes(bundle_cluster(tmp_path), seed=1).nodes["k3s-netpol-lab-server"]
    lab = json.loads(json.dumps(compiled.lab))
    change(lab["flannel"])
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(lab))
    helper = ROOT / "roles/netpol_lab/files/netpol_lab_node.py"
    result = subprocess.run(
        [sys.executable, str(helper), "pods", str(path), "--check", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert str(path) in result.stderr
