"""verify.compare and render_matrix: rows, failures, false drops, nodes."""

from __future__ import annotations

import json

import pytest

from k3s_netpol.logs import DropEvent, drop_events, parse_logemu_line
from k3s_netpol.model import Probe
from k3s_netpol.verify import compare, probe_key, render_matrix, render_table

POD_IPS = {
    "sample1/nginx": "10.42.0.10",
    "sample2/nginx": "10.42.0.11",
    "sample1/client": "10.42.0.12",
}
MAC = "da:f6:6e:6e:f9:ce:ae:66:8d:d5:f8:d1:08:00"
POD_NODES = {"sample1/nginx": "node-a", "sample2/nginx": "node-b", "sample1/client": "node-a"}


def line(
    src: str, dst: str, dpt: int, prefix: str = "", *, host: str = "node-a", ip_id: int = 1
) -> str:
    return (
        f"Mar  7 09:35:43 {host} {prefix} IN=cni0 OUT=cni0 MAC={MAC} "
        f"SRC={src} DST={dst} LEN=60 TOS=00 PREC=0x00 TTL=64 ID={ip_id} DF PROTO=TCP SPT=47750 "
        f"DPT={dpt} SEQ={1000 + ip_id} ACK=0 WINDOW=62377 SYN URGP=0 MARK=0"
    )


def events_of(*lines: str) -> list[DropEvent]:
    return drop_events(parse_logemu_line(text, f"test:{n}") for n, text in enumerate(lines, 1))


def blocked_drop(src_pod: str, dst_pod: str, *, host: str, ip_id: int) -> list[str]:
    """What a real node writes for a blocked SYN: the policy chain's line, then the pod chain's."""
    src, dst = POD_IPS[src_pod], POD_IPS[dst_pod]
    namespace = dst_pod.split("/")[0]
    return [
        line(src, dst, 80, f"DROP by policy {namespace}/deny-by-default", host=host, ip_id=ip_id),
        line(src, dst, 80, host=host, ip_id=ip_id),
    ]


EXPECTED = [
    Probe("sample1/nginx", "sample2/nginx", 80, "TCP", allowed=False),
    Probe("sample2/nginx", "sample1/nginx", 80, "TCP", allowed=False),
    Probe("sample1/client", "sample1/nginx", 80, "TCP", allowed=True),
]


def all_as_expected() -> dict[tuple[str, str, int, str], bool]:
    return {probe_key(p.source, p.destination, p.port, p.protocol): p.allowed for p in EXPECTED}


def tutorial_events() -> list[DropEvent]:
    return events_of(
        *blocked_drop("sample1/nginx", "sample2/nginx", host="node-b", ip_id=7),
        *blocked_drop("sample2/nginx", "sample1/nginx", host="node-a", ip_id=8),
    )


def test_everything_as_expected_is_ok() -> None:
    report = compare(EXPECTED, all_as_expected(), tutorial_events(), POD_IPS, POD_NODES)
    assert report.ok
    assert [row.logged for row in report.rows] == [True, True, False]
    assert report.rows[0].policies == ("sample2/deny-by-default",)
    assert report.rows[0].drop_lines == 2
    document = report.to_dict()
    assert document["ok"] is True
    assert document["summary"]["failed"] == 0
    assert document["rows"][0]["expected"] == "blocked"
    assert document["rows"][2]["observed"] == "allowed"
    json.dumps(document)


def test_observed_differs_from_expected_fails_that_row() -> None:
    observed = all_as_expected()
    observed[("sample1/client", "sample1/nginx", 80, "TCP")] = False
    report = compare(EXPECTED, observed, tutorial_events(), POD_IPS, POD_NODES)
    assert not report.ok
    (failed,) = report.failures
    assert failed.source == "sample1/client"
    assert "expected allowed, observed blocked" in failed.problems[0]


def test_blocked_probe_with_only_its_policy_line_is_logged_as_policy_lines() -> None:
    only_policy_line = events_of(
        blocked_drop("sample1/nginx", "sample2/nginx", host="node-b", ip_id=7)[0],
        *blocked_drop("sample2/nginx", "sample1/nginx", host="node-a", ip_id=8),
    )
    report = compare(EXPECTED, all_as_expected(), only_policy_line, POD_IPS, POD_NODES)
    assert report.ok
    row = report.rows[0]
    assert (row.evidence, row.logged, row.status) == ("policy-lines", False, "ok")
    assert report.rows[1].evidence == "pod-chain"
    assert report.to_dict()["rows"][0]["evidence"] == "policy-lines"
    assert "BBp" in render_matrix(report)


def test_blocked_probe_without_any_line_fails() -> None:
    one_missing = events_of(*blocked_drop("sample2/nginx", "sample1/nginx", host="node-a", ip_id=8))
    report = compare(EXPECTED, all_as_expected(), one_missing, POD_IPS, POD_NODES)
    assert not report.ok
    (failed,) = report.failures
    assert failed.key == ("sample1/nginx", "sample2/nginx", 80, "TCP")
    assert failed.status == "failed"
    assert "no drop line on node node-b" in failed.problems[0]
    assert "SRC=10.42.0.10 DST=10.42.0.11 DPT=80 PROTO=TCP" in failed.problems[0]
    assert "0 blocked packet(s) reached sample2/nginx's chain" in failed.problems[0]


def test_drop_line_on_another_node_than_the_destinations_does_not_count() -> None:
    wrong_node = events_of(
        *blocked_drop("sample1/nginx", "sample2/nginx", host="node-a", ip_id=7),
        *blocked_drop("sample2/nginx", "sample1/nginx", host="node-a", ip_id=8),
    )
    report = compare(EXPECTED, all_as_expected(), wrong_node, POD_IPS, POD_NODES)
    (failed,) = report.failures
    assert failed.destination == "sample2/nginx"
    assert any("node-a" in note for note in failed.notes)
    assert compare(EXPECTED, all_as_expected(), wrong_node, POD_IPS).ok


def test_a_different_port_or_address_is_not_the_probes_line() -> None:
    other_port = events_of(
        line(POD_IPS["sample1/nginx"], POD_IPS["sample2/nginx"], 8080, host="node-b"),
        *blocked_drop("sample2/nginx", "sample1/nginx", host="node-a", ip_id=8),
    )
    report = compare(EXPECTED, all_as_expected(), other_port, POD_IPS, POD_NODES)
    assert [row.source for row in report.failures] == ["sample1/nginx"]
    assert len(report.unexplained_drops) == 1


def test_false_drop_on_an_allowed_probe_is_a_note_not_a_failure() -> None:
    client, nginx = POD_IPS["sample1/client"], POD_IPS["sample1/nginx"]
    false_drop = line(client, nginx, 80, "DROP by policy sample1/deny-by-default", ip_id=9)
    events = [*tutorial_events(), *events_of(false_drop)]
    report = compare(EXPECTED, all_as_expected(), events, POD_IPS, POD_NODES)
    assert report.ok
    row = report.rows[2]
    assert row.false_drop
    assert not row.logged
    assert row.policies == ("sample1/deny-by-default",)
    assert "k3s #9032" in row.notes[0]
    assert report.summary()["false_drops"] == 1
    assert "f" in render_matrix(report).split("port 80/TCP")[1]


def test_real_drop_line_on_an_allowed_probe_fails() -> None:
    client, nginx = POD_IPS["sample1/client"], POD_IPS["sample1/nginx"]
    events = [*tutorial_events(), *events_of(line(client, nginx, 80, ip_id=9))]
    report = compare(EXPECTED, all_as_expected(), events, POD_IPS, POD_NODES)
    (failed,) = report.failures
    assert failed.source == "sample1/client"
    assert "allowed but the pod chain logged a drop" in failed.problems[0]


def test_missing_observation_fails_as_not_probed() -> None:
    observed = all_as_expected()
    del observed[("sample1/client", "sample1/nginx", 80, "TCP")]
    report = compare(EXPECTED, observed, tutorial_events(), POD_IPS, POD_NODES)
    (failed,) = report.failures
    assert failed.observed is None
    assert failed.to_dict()["observed"] == "not probed"


def test_unknown_pod_ip_is_an_error_naming_the_pod() -> None:
    ips = {key: ip for key, ip in POD_IPS.items() if key != "sample2/nginx"}
    with pytest.raises(ValueError, match="sample2/nginx"):
        compare(EXPECTED, all_as_expected(), [], ips)


def test_duplicate_probe_is_an_error() -> None:
    with pytest.raises(ValueError, match="twice"):
        compare([*EXPECTED, EXPECTED[0]], all_as_expected(), [], POD_IPS)


def test_matrix_and_table_show_expected_observed_logged() -> None:
    observed = all_as_expected()
    observed[("sample2/nginx", "sample1/nginx", 80, "TCP")] = True
    report = compare(EXPECTED, observed, tutorial_events(), POD_IPS, POD_NODES)
    matrix = render_matrix(report)
    assert "port 80/TCP" in matrix
    assert "BBL" in matrix
    assert "BAL*" in matrix
    assert "AA-" in matrix
    assert (
        "FAIL sample2/nginx -> sample1/nginx 80/TCP: expected blocked, observed allowed" in matrix
    )
    assert matrix.rstrip().endswith("MISMATCH")
    table = render_table(report).splitlines()
    assert table[0].split()[:3] == ["FROM", "TO", "PORT"]
    assert len(table) == 1 + len(EXPECTED)
