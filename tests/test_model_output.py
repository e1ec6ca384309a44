"""expect's outputs at any size: the streamed probe document and the per-namespace summary."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from test_model import _random_cluster, build, pod, policy

from k3s_netpol.model import (
    Cluster,
    ClusterIndex,
    decide,
    expect,
    probe_columns,
    probes_document,
)
from k3s_netpol.probe_output import render_summary, summarize, write_probes_json

HTTP = [{"name": "http", "containerPort": 80, "protocol": "TCP"}]


class RecordingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, text: str) -> int:
        self.sizes.append(len(text))
        return super().write(text)


def streamed(cluster: Cluster, ports: list[tuple[int, str]] | None, indent: int | None) -> str:
    stream = io.StringIO()
    columns = probe_columns(ClusterIndex(cluster), ports)
    write_probes_json(stream, [p.key for p in cluster.pods], columns, indent)
    return stream.getvalue()


def dumped(document: dict[str, Any], indent: int | None) -> str:
    if indent is None:
        return json.dumps(document, separators=(",", ":")) + "\n"
    return json.dumps(document, indent=indent) + "\n"


@pytest.mark.parametrize("indent", [None, 0, 2, 4])
@pytest.mark.parametrize("seed", range(8))
def test_streamed_json_is_exactly_what_json_dumps_writes(seed: int, indent: int | None) -> None:
    cluster = _random_cluster(seed)
    for ports in (None, [(80, "TCP"), (81, "UDP")]):
        assert streamed(cluster, ports, indent) == dumped(
            probes_document(expect(cluster, ports)), indent
        )


@pytest.mark.parametrize("indent", [None, 2])
def test_streamed_json_without_probes(indent: int | None) -> None:
    assert streamed(build(), None, indent) == dumped({"probes": []}, indent)
    lonely = build(pod("ns/a", "10.0.0.1", {}, HTTP), pod("ns/b", "10.0.0.2"))
    assert streamed(lonely, None, indent) == dumped(probes_document(expect(lonely)), indent)


def test_streamed_json_is_written_a_source_row_at_a_time() -> None:
    documents = [pod(f"ns/p{i:02d}", f"10.0.0.{i + 1}", {}, HTTP) for i in range(60)]
    cluster = build(*documents)
    stream = RecordingStream()
    write_probes_json(
        stream, [p.key for p in cluster.pods], probe_columns(ClusterIndex(cluster)), None
    )
    row = len(json.dumps(probes_document(expect(cluster))["probes"][:59], separators=(",", ":")))
    assert len(stream.sizes) >= 60
    assert max(stream.sizes) <= row


def test_streamed_json_needs_the_columns_destination_by_destination() -> None:
    cluster = build(pod("ns/a", "10.0.0.1", {}, HTTP), pod("ns/b", "10.0.0.2", {}, HTTP))
    a80, a81, b80, _b81 = probe_columns(ClusterIndex(cluster), [(80, "TCP"), (81, "TCP")])
    with pytest.raises(ValueError, match="destination by destination"):
        write_probes_json(io.StringIO(), ["ns/a", "ns/b"], [a80, b80, a81], None)


def oracle_summary(cluster: Cluster) -> dict[tuple[str, str, int, str], Any]:
    """The summary from decide(), probe by probe."""
    groups: dict[tuple[str, str, int, str], Any] = {}
    for probe in expect(cluster):
        source, destination = cluster.pod(probe.source), cluster.pod(probe.destination)
        decision = decide(cluster, source, destination, probe.port, probe.protocol)
        key = (source.namespace, destination.namespace, probe.port, probe.protocol)
        group = groups.setdefault(key, [0, 0, 0, set(), set()])
        if decision.allowed:
            group[0] += 1
            if not decision.ingress.isolated and not decision.egress.isolated:
                group[2] += 1
            for side in (decision.ingress, decision.egress):
                group[3].update((side.direction, name) for name, _ in side.allowing)
        else:
            group[1] += 1
            for side in (decision.ingress, decision.egress):
                if not side.allowed:
                    group[4].update((side.direction, name) for name in side.selecting)
    return groups


@pytest.mark.parametrize("seed", range(30))
def test_summary_is_decide_counted_per_namespace_pair_and_port(seed: int) -> None:
    cluster = _random_cluster(seed)
    index = ClusterIndex(cluster)
    got = {
        (s.source, s.destination, s.port, s.protocol): [
            s.allowed,
            s.blocked,
            s.unpoliced,
            s.allowed_by,
            s.blocked_by,
        ]
        for s in summarize(index, probe_columns(index))
    }
    assert got == oracle_summary(cluster)


def test_summary_lines_name_the_deciding_policies() -> None:
    cluster = build(
        pod("web/a", "10.0.0.1", {"app": "a"}, HTTP),
        pod("web/b", "10.0.0.2", {"app": "b"}, HTTP),
        pod("other/c", "10.0.0.3", {}, HTTP),
        policy("web/deny", {"podSelector": {}, "ingress": []}),
        policy("web/same", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        policy(
            "other/out",
            {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 80}]}]},
        ),
    )
    index = ClusterIndex(cluster)
    lines = render_summary(cluster, summarize(index, probe_columns(index)))
    assert lines == [
        "FROM   TO     PORT    ALLOWED  BLOCKED  DECIDED BY",
        "other  web    80/TCP        0        2  blocked by ingress web/deny, web/same",
        "web    other  80/TCP        2        0  allowed by no policy (2)",
        "web    web    80/TCP        2        0  allowed by ingress web/same",
        "6 probes over 3 pods: 4 allowed, 2 blocked",
    ]
