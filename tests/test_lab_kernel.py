"""The compiled rules on a real kernel: every upstream e2e case and the tutorial's bundle.

Each test builds a lab node on the host (network namespaces only, see test_lab_host.py), loads
the compiled ipsets and filter table with the role's helper, curls every TCP probe from inside
the source pod's namespace, and asserts that the kernel's verdict equals the model's, probe by
probe. Log evidence without ulogd (not installed on the host): the packet counters of the pod
chains' REJECT and unprefixed NFLOG rules must each equal the number of blocked probes (the pod
chains' log rule gets a generous limit, the lab's `netpol_lab_pod_log_limit` deviation, so that
the count is not the bucket's). The jump orders are shuffled with a random seed, as kube-router's
are: the verdicts must not depend on them (a failing case names its seed).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_lab_host import HostLab, model_mismatches, pod_chain_counts, require_root_tools

from k3s_netpol import kuberouter
from k3s_netpol.bundle import BundleConfig, render, render_yaml
from k3s_netpol.lab import LogLimit, compile_lab, new_seed
from k3s_netpol.model import Cluster, cluster_from_documents, load_manifests

CASES_DIR = Path(__file__).parent / "data" / "netpol-cases"
CASE_FILES = sorted((CASES_DIR / "cases").glob("*.yaml"))
WORKLOADS = Path(__file__).resolve().parents[1] / "src/k3s_netpol/data/lab/workloads.yaml"
NODE = "lab-node"
# One node hosting every workload pod (the server's and the agent's subnets).
ONE_NODE_BRIDGE = "10.42.0.1/16"
COUNTABLE_POD_LOG_LIMIT = LogLimit("1000/second", 1000)
GENEROUS_LOG_LIMIT = {
    kuberouter.NFLOG_LIMIT_ANNOTATION: "1000/second",
    kuberouter.NFLOG_BURST_ANNOTATION: "1000",
}

pytestmark = pytest.mark.root


def case_cluster(path: Path) -> tuple[Cluster, dict[str, Any]]:
    """The upstream topology with the case's label changes and policies applied."""
    case = yaml.safe_load(path.read_text())
    documents = [doc for doc in yaml.safe_load_all((CASES_DIR / "cluster.yaml").read_text()) if doc]
    for change in case.get("cluster_changes") or ():
        for document in documents:
            metadata = document["metadata"]
            if (
                document["kind"] == change["kind"]
                and metadata["name"] == change["name"]
                and metadata.get("namespace") == change.get("namespace")
            ):
                metadata.setdefault("labels", {}).update(change["add_labels"])
    for policy in case["policies"]:
        policy = copy.deepcopy(policy)
        policy["metadata"].setdefault("annotations", {}).update(GENEROUS_LOG_LIMIT)
        documents.append(policy)
    return cluster_from_documents(documents, str(path)), case


def upstream_blocked(case: dict[str, Any], port: int, protocol: str) -> set[str] | None:
    for entry in case.get("probes") or ():
        if entry["port"] == port and entry["protocol"] == protocol:
            return set(entry.get("blocked") or ())
    return None


@pytest.fixture(scope="module")
def host_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostLab]:
    require_root_tools()
    lab = HostLab(f"kl{os.getpid()}-", tmp_path_factory.mktemp("host-lab"))
    try:
        yield lab
    finally:
        lab.close()


def check_case(host_lab: HostLab, path: Path) -> None:
    cluster, case = case_cluster(path)
    seed = new_seed()
    compiled = compile_lab(
        cluster,
        NODE,
        netns_prefix=host_lab.prefix,
        seed=seed,
        pod_log_limit=COUNTABLE_POD_LOG_LIMIT,
    )
    host_lab.apply(compiled)
    host_lab.start_servers()
    probes = compiled.lab["probes"]
    assert probes, f"{path.name}: no TCP probes"
    # Pods coming up send a few packets of their own (multicast reports): count from here on.
    before = pod_chain_counts(host_lab.counters())
    observed = host_lab.probe(probes)
    mismatches = model_mismatches(probes, observed)
    assert not mismatches, f"{path.name} (seed {seed}): kernel differs from the model:\n" + (
        "\n".join(mismatches)
    )
    for port, protocol in sorted({(p["port"], p["protocol"]) for p in probes}):
        blocked = upstream_blocked(case, port, protocol)
        if blocked is None:
            continue
        kernel_blocked = {
            f"{p['from']} -> {p['to']}"
            for p in probes
            if (p["port"], p["protocol"]) == (port, protocol)
            and not observed[(p["from"], p["to"], port, protocol)]
        }
        assert kernel_blocked == blocked, f"{path.name} {port}/{protocol}: kernel vs upstream"
    blocked_count = sum(1 for p in probes if not p["allowed"])
    after = pod_chain_counts(host_lab.counters())
    counts = {key: after[key] - before[key] for key in after}
    assert counts["reject"] == blocked_count, f"{path.name}: REJECT counters {counts}"
    assert counts["pod_nflog"] == blocked_count, f"{path.name}: NFLOG counters {counts}"


@pytest.mark.parametrize("path", CASE_FILES, ids=[path.stem for path in CASE_FILES])
def test_upstream_case_on_the_kernel(host_lab: HostLab, path: Path) -> None:
    _, case = case_cluster(path)
    if not any(entry["protocol"] == "TCP" for entry in case.get("probes") or ()):
        pytest.skip(f"{path.name}: no TCP probes (the lab serves TCP only)")
    check_case(host_lab, path)


@pytest.fixture
def sample_lab(tmp_path: Path) -> Iterator[HostLab]:
    require_root_tools()
    lab = HostLab(f"ks{os.getpid()}-", tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def test_tutorial_bundle_outcomes_on_the_kernel(sample_lab: HostLab, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.yaml"
    config = BundleConfig(nflog_limit="100/second", nflog_limit_burst=100)
    bundle.write_text(render_yaml(render(config)))
    cluster = load_manifests([bundle, WORKLOADS])
    compiled = compile_lab(
        cluster, NODE, bridge_address=ONE_NODE_BRIDGE, netns_prefix=sample_lab.prefix, seed=11
    )
    first = sample_lab.apply(compiled)
    assert first["changed"]
    again = sample_lab.apply(compiled)
    assert not again["changed"], f"pods not idempotent: {again['actions']}"
    sample_lab.start_servers()
    probes = compiled.lab["probes"]
    observed = sample_lab.probe(probes)
    verdict = {(s, d): ok for (s, d, _port, _protocol), ok in observed.items()}
    assert verdict[("sample1/nginx", "sample2/nginx")] is False
    assert verdict[("sample2/nginx", "sample1/nginx")] is False
    assert verdict[("sample1/client", "sample1/nginx")] is True
    assert verdict[("sample2/client", "sample2/nginx")] is True
    assert verdict[("cattle-monitoring-system/prometheus", "sample1/nginx")] is True
    assert verdict[("cattle-monitoring-system/prometheus", "sample2/nginx")] is True
    assert verdict[("sample2/nginx", "sample1/traefik")] is True
    for probe in probes:
        key = (probe["from"], probe["to"], probe["port"], probe["protocol"])
        assert observed[key] == probe["allowed"], f"kernel differs from the model on {key}"
    rules = sample_lab.counters()
    deny_logged = sum(
        packets
        for packets, chain, rule in rules
        if chain.startswith("KUBE-NWPLCY-") and '"DROP by policy sample2/deny-by-default"' in rule
    )
    assert deny_logged > 0, "no DROP by policy sample2/deny-by-default line was triggered"
