"""Every upstream e2e NetworkPolicy case (tests/data/netpol-cases) against the model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from k3s_netpol.model import Cluster, cluster_from_documents, expect

CASES_DIR = Path(__file__).parent / "data" / "netpol-cases"
CASE_FILES = sorted((CASES_DIR / "cases").glob("*.yaml"))


def _cluster_documents() -> list[dict[str, Any]]:
    text = (CASES_DIR / "cluster.yaml").read_text(encoding="utf-8")
    return [document for document in yaml.safe_load_all(text) if document]


def _apply_changes(documents: list[dict[str, Any]], changes: list[dict[str, Any]]) -> None:
    for change in changes:
        targets = [
            document
            for document in documents
            if document["kind"] == change["kind"]
            and document["metadata"]["name"] == change["name"]
            and document["metadata"].get("namespace") == change.get("namespace")
        ]
        assert len(targets) == 1, f"cluster_changes names no single object: {change}"
        targets[0]["metadata"].setdefault("labels", {}).update(change["add_labels"])


def test_the_case_catalog_is_present() -> None:
    assert len(CASE_FILES) >= 30


def load_case(case_file: Path) -> tuple[dict[str, Any], Cluster]:
    """A case and the cluster it runs on: the shared pods with its changes and policies."""
    case = yaml.safe_load(case_file.read_text(encoding="utf-8"))
    documents = copy.deepcopy(_cluster_documents())
    _apply_changes(documents, case.get("cluster_changes") or [])
    return case, cluster_from_documents([*documents, *case["policies"]], case_file.name)


@pytest.mark.parametrize("case_file", CASE_FILES, ids=[path.stem for path in CASE_FILES])
def test_upstream_case(case_file: Path) -> None:
    case, cluster = load_case(case_file)
    all_pods = [pod.key for pod in cluster.pods]
    for probe_set in case["probes"]:
        port, protocol = probe_set["port"], probe_set["protocol"]
        expected_blocked = set(probe_set["blocked"])
        probes = expect(cluster, [(port, protocol)])
        pairs = {(probe.source, probe.destination) for probe in probes}
        assert len(probes) == len(pairs) == len(all_pods) * (len(all_pods) - 1)
        got_blocked = {f"{p.source} -> {p.destination}" for p in probes if not p.allowed}
        assert got_blocked == expected_blocked, (
            f"{case['name']} on {port}/{protocol}: "
            f"wrongly allowed {sorted(expected_blocked - got_blocked)}, "
            f"wrongly blocked {sorted(got_blocked - expected_blocked)}"
        )
