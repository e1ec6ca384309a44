"""The precomputed tables expect and the summary read (ClusterIndex, ProbeColumn) say exactly what
decide() says, probe by probe, on the upstream e2e cases and on random clusters."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_model import _random_cluster
from test_netpol_cases import CASE_FILES, load_case

from k3s_netpol.model import (
    Cluster,
    ClusterIndex,
    bit_indices,
    decide,
    probe_columns,
)


def assert_columns_agree_with_decide(cluster: Cluster, ports: list[tuple[int, str]] | None) -> int:
    """Check every probe; return how many there were."""
    index = ClusterIndex(cluster)
    checked = 0
    for column in probe_columns(index, ports):
        destination = cluster.pods[column.destination]
        for source_index, source in enumerate(cluster.pods):
            if source_index == column.destination:
                assert not column.allowed_from >> source_index & 1
                continue
            decision = decide(cluster, source, destination, column.port, column.protocol)
            where = f"{source.key} -> {destination.key} {column.port}/{column.protocol}"
            assert bool(column.allowed_from >> source_index & 1) == decision.allowed, where
            assert bool(column.by_ingress >> source_index & 1) == decision.ingress.allowed, where
            assert bool(column.by_egress >> source_index & 1) == decision.egress.allowed, where
            ingress_allowing = tuple(
                (rule.policy, rule.index)
                for rule in column.ingress_rules
                if rule.peers >> source_index & 1
            )
            assert ingress_allowing == decision.ingress.allowing, where
            egress_allowing = {
                (rule.policy, rule.index)
                for rule in column.egress_rules
                if rule.selected >> source_index & 1
            }
            assert egress_allowing == set(decision.egress.allowing), where
            assert tuple(index.ingress_selecting_of[column.destination]) == (
                decision.ingress.selecting
            ), where
            egress_selecting = tuple(
                key
                for key, selected in index.egress_policies_in.get(source.namespace, ())
                if selected >> source_index & 1
            )
            assert egress_selecting == decision.egress.selecting, where
            checked += 1
    return checked


@pytest.mark.parametrize("case_file", CASE_FILES, ids=[path.stem for path in CASE_FILES])
def test_upstream_case_columns_agree_with_decide(case_file: Path) -> None:
    case, cluster = load_case(case_file)
    ports = [(probe_set["port"], probe_set["protocol"]) for probe_set in case["probes"]]
    assert assert_columns_agree_with_decide(cluster, ports) == 9 * 8 * len(ports)


@pytest.mark.parametrize("seed", range(40))
def test_random_cluster_columns_agree_with_decide(seed: int) -> None:
    cluster = _random_cluster(seed)
    assert assert_columns_agree_with_decide(cluster, None) > 0
    assert assert_columns_agree_with_decide(cluster, [(80, "TCP"), (81, "TCP"), (80, "UDP")]) > 0


def test_random_clusters_hold_ignored_and_unaddressed_pods() -> None:
    clusters = [_random_cluster(seed) for seed in range(40)]
    reasons = {
        pod.ignored_reason.split(":")[0].split(",")[0] for c in clusters for pod in c.ignored
    }
    assert reasons == {"hostNetwork", "phase Succeeded", "phase Failed", "phase Pending"}
    assert any(pod.ip is None for c in clusters for pod in c.pods)


@pytest.mark.parametrize("mask", [0, 1, 2, 0b1011, 1 << 100 | 1 << 3, (1 << 3000) - 1])
def test_bit_indices(mask: int) -> None:
    assert bit_indices(mask) == [i for i in range(mask.bit_length()) if mask >> i & 1]
