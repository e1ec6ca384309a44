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
from k3s_netpol.lab import LabError, compile_lab, write_compiled
from k3s_netpol.model import Cluster, cluster_from_documents, load_manifests

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT / "src/k3s_netpol/data/lab/workloads.yaml"
CASES = ROOT / "tests/data/netpol-cases"
NODE = "k3s-netpol-lab"

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
    compiled = compile_lab(bundle_cluster(tmp_path), NODE)
    for (namespace, policy), name in TUTORIAL_SETS.items():
        assert f"create {name} hash:ip timeout 0\n" in compiled.ipset_restore, (namespace, policy)
        assert f"--match-set {name} dst" in compiled.iptables_rules
    assert f"--match-set {TUTORIAL_SAME_NAMESPACE_SOURCE} src" in compiled.iptables_rules


def test_compile_is_deterministic_and_rewrites_nothing_unchanged(tmp_path: Path) -> None:
    first = compile_lab(bundle_cluster(tmp_path), NODE)
    second = compile_lab(bundle_cluster(tmp_path), NODE)
    assert first.files() == second.files()
    out = tmp_path / "out"
    assert sorted(path.name for path in write_compiled(first, out)) == [
        "ipset.restore",
        "iptables.rules",
        "lab.json",
    ]
    assert write_compiled(second, out) == []


def test_pod_chain_has_kube_routers_order(tmp_path: Path) -> None:
    compiled = compile_lab(bundle_cluster(tmp_path), NODE)
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
    compiled = compile_lab(
        bundle_cluster(tmp_path, nflog_limit="50/second", nflog_limit_burst=200), NODE
    )
    rules = compiled.iptables_rules
    chain = kuberouter.policy_chain("sample2", "deny-by-default", "0")
    body = chain_rules(rules, chain)
    assert body == [
        f'-A {chain} -m comment --comment "rule to log dropped traffic" -m limit --limit '
        "50/second --limit-burst 200 -m mark ! --mark 0x10000/0x10000 -j NFLOG --nflog-group 100 "
        '--nflog-prefix "DROP by policy sample2/deny-by-default"'
    ]
    pod_log = chain_rules(rules, pod_chain(rules, "nginx", "sample2"))[-4]
    assert "--limit 50/second --limit-burst 200" in pod_log
    unselected = chain_rules(rules, pod_chain(rules, "prometheus", "cattle-monitoring-system"))
    assert "--limit 10/minute --limit-burst 10" in unselected[-4]


def test_allow_rules_mark_then_return(tmp_path: Path) -> None:
    rules = compile_lab(bundle_cluster(tmp_path), NODE).iptables_rules
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
    compiled = compile_lab(bundle_cluster(tmp_path), NODE, netns_prefix="t-")
    lab = compiled.lab
    assert lab["node"] == NODE
    assert lab["bridge"] == {"name": "cni0", "address": "10.42.0.1/24"}
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
            document["spec"]["nodeName"] = "elsewhere"
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(render_yaml(render(BundleConfig())))
    cluster = load_manifests([bundle])
    remote = cluster_from_documents(documents, "workloads")
    cluster.pods.extend(remote.pods)
    compiled = compile_lab(cluster, NODE)
    assert "sample2/nginx" not in {f"{p['namespace']}/{p['name']}" for p in compiled.lab["pods"]}
    assert "POD name:nginx namespace: sample2" not in compiled.iptables_rules
    assert "add TMP-" in compiled.ipset_restore
    assert "10.42.0.21" in compiled.ipset_restore


@pytest.mark.parametrize(
    ("ip", "message"),
    [
        ("10.43.0.5", "sample1/nginx: status.podIP 10.43.0.5 is not a free host address"),
        ("10.42.0.1", "sample1/nginx: status.podIP 10.42.0.1 is not a free host address"),
        (
            "10.42.0.12",
            "sample1/client: status.podIP 10.42.0.12 is already the IP of pod sample1/nginx",
        ),
    ],
)
def test_bad_pod_addresses_are_refused_naming_the_pod(ip: str, message: str) -> None:
    documents = list(yaml.safe_load_all(WORKLOADS.read_text()))
    for document in documents:
        metadata = document["metadata"]
        if (metadata.get("namespace"), metadata["name"]) == ("sample1", "nginx"):
            document["status"]["podIP"] = ip
    with pytest.raises(LabError, match=re.escape(message)):
        compile_lab(cluster_from_documents(documents, "workloads.yaml"), NODE)


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
    arguments = ["lab", "compile", "-f", str(bundle), "--builtin-workloads", "--node", NODE]
    first = runner.invoke(main, [*arguments, "--out", str(out), "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["changed"] == ["ipset.restore", "iptables.rules", "lab.json"]
    assert summary["pods"] == 6
    second = runner.invoke(main, [*arguments, "--out", str(out)])
    assert second.exit_code == 0
    assert "unchanged" in second.stdout
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
