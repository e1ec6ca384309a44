"""ipBlock peers that overlap, on a real kernel: the lab's verdict against the model's.

kube-router writes a rule's ipBlock peers into one ``hash:net`` set in the peers' order, each
``except`` as a ``nomatch`` entry, and loads it with ``ipset restore -exist``: when one peer's
``except`` is another peer's ``cidr``, the same network is added twice and the later ``add``
sets its ``nomatch`` flag. The lab writes the entries the same way (tests/test_lab.py checks the
text); here the kernel judges real packets:

- cidr peer after the except (P1 = {10.42.0.0/24 except S/32}, P2 = {S/32}): the later entry
  matches, S is allowed, as the NetworkPolicy API (and the model) says;
- cidr peer first (P2, P1): the later ``nomatch`` wins, so kube-router blocks S although the API
  allows it. The lab reproduces kube-router here, not the API; docs/lab.md says so.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_lab_host import HostLab, require_root_tools

from k3s_netpol.lab import compile_lab
from k3s_netpol.model import cluster_from_documents, is_allowed

CASES_DIR = Path(__file__).parent / "data" / "netpol-cases"
SOURCE, OTHER, TARGET = "x/b", "x/c", "x/a"
SOURCE_IP = "10.42.0.12"

pytestmark = pytest.mark.root


def overlap_policy(peers_first: str) -> dict[str, Any]:
    """Ingress to x/a on port 80 from every 10.42.0.0/24 address except x/b, or from x/b."""
    broad = {"ipBlock": {"cidr": "10.42.0.0/24", "except": [f"{SOURCE_IP}/32"]}}
    narrow = {"ipBlock": {"cidr": f"{SOURCE_IP}/32"}}
    peers = [broad, narrow] if peers_first == "broad" else [narrow, broad]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "overlapping-blocks", "namespace": "x"},
        "spec": {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"port": 80, "protocol": "TCP"}]}],
        },
    }


@pytest.fixture
def host_lab(tmp_path: Path) -> Iterator[HostLab]:
    require_root_tools()
    lab = HostLab(f"ki{os.getpid()}-", tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def verdicts(host_lab: HostLab, peers_first: str) -> tuple[dict[str, bool], dict[str, bool]]:
    documents = [d for d in yaml.safe_load_all((CASES_DIR / "cluster.yaml").read_text()) if d]
    documents.append(overlap_policy(peers_first))
    cluster = cluster_from_documents(copy.deepcopy(documents), "overlap")
    assert cluster.pod(TARGET).labels.get("pod") == "a"
    compiled = compile_lab(cluster, "lab-node", netns_prefix=host_lab.prefix, seed=1)
    host_lab.apply(compiled)
    host_lab.start_servers()
    probes = [
        {"from": source, "to": TARGET, "port": 80, "protocol": "TCP"} for source in (SOURCE, OTHER)
    ]
    observed = host_lab.probe(probes)
    kernel = {source: observed[(source, TARGET, 80, "TCP")] for source in (SOURCE, OTHER)}
    model = {
        source: is_allowed(cluster, cluster.pod(source), cluster.pod(TARGET), 80, "TCP")
        for source in (SOURCE, OTHER)
    }
    return kernel, model


def test_cidr_peer_after_the_except_allows_as_the_model_does(host_lab: HostLab) -> None:
    kernel, model = verdicts(host_lab, "broad")
    assert model == {SOURCE: True, OTHER: True}
    assert kernel == model


def test_cidr_peer_before_the_except_is_blocked_as_kube_router_blocks_it(
    host_lab: HostLab,
) -> None:
    kernel, model = verdicts(host_lab, "narrow")
    assert model == {SOURCE: True, OTHER: True}, "the API allows x/b through the /32 peer"
    # kube-router's later `nomatch` entry for x/b's /32 wins in the kernel's set.
    assert kernel == {SOURCE: False, OTHER: True}
