"""`k3s-netpol report`: files in, report.json + report.txt out, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from k3s_netpol.cli.report import report_command

SAMPLE1, SAMPLE2, MONITOR = "sample1/nginx", "sample2/nginx", "cattle-monitoring-system/probe"
IPS = {SAMPLE1: "10.42.0.2", SAMPLE2: "10.42.0.3", MONITOR: "10.42.0.4"}
EXPECTED = [
    (SAMPLE1, SAMPLE2, False),
    (SAMPLE2, SAMPLE1, False),
    (MONITOR, SAMPLE1, True),
    (MONITOR, SAMPLE2, True),
]


def logemu(src: str, dst: str, ip_id: int, prefix: str = "") -> str:
    return (
        f"Nov 27 13:40:01 lab-node {prefix} IN=cni0 OUT=cni0 SRC={IPS[src]} DST={IPS[dst]} "
        f"LEN=60 TOS=00 PREC=0x00 TTL=64 ID={ip_id} DF PROTO=TCP SPT=40000 DPT=80 "
        f"SEQ={ip_id * 7} ACK=0 WINDOW=64240 SYN URGP=0 MARK=0x20000\n"
    )


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    lab = {
        "pods": [
            {"namespace": key.split("/")[0], "name": key.split("/")[1], "ip": ip, "node": "lab"}
            for key, ip in IPS.items()
        ],
        "probes": [
            {"from": src, "to": dst, "port": 80, "protocol": "TCP", "allowed": allowed}
            for src, dst, allowed in EXPECTED
        ],
    }
    expected = tmp_path / "lab.json"
    expected.write_text(json.dumps(lab))
    observed = tmp_path / "observed.jsonl"
    observed.write_text(
        "".join(
            json.dumps({"from": src, "to": dst, "port": 80, "protocol": "TCP", "connected": ok})
            + "\n"
            for src, dst, ok in EXPECTED
        )
    )
    log = tmp_path / "lab.log"
    log.write_text(
        logemu(SAMPLE1, SAMPLE2, 1, "DROP by policy sample2/deny-by-default")
        + logemu(SAMPLE1, SAMPLE2, 1)
        + logemu(SAMPLE2, SAMPLE1, 2)
    )
    return {"expected": expected, "observed": observed, "log": log, "out": tmp_path / "out"}


def run(inputs: dict[str, Path], *extra: str) -> tuple[int, str]:
    arguments = [
        "--expected",
        str(inputs["expected"]),
        "--observed",
        str(inputs["observed"]),
        "--log",
        f"lab={inputs['log']}",
        "--out",
        str(inputs["out"]),
        *extra,
    ]
    result = CliRunner().invoke(report_command, arguments)
    return result.exit_code, result.output


def test_report_ok_writes_json_and_text(inputs: dict[str, Path]) -> None:
    code, output = run(inputs)
    assert code == 0, output
    assert output.splitlines()[-2] == "OK"
    report = json.loads((inputs["out"] / "report.json").read_text())
    assert report["ok"] is True
    assert report["summary"]["probes"] == 4
    assert report["summary"]["logged"] == 2
    assert report["rows"][0]["policies"] == ["sample2/deny-by-default"]
    text = (inputs["out"] / "report.txt").read_text()
    assert "port 80/TCP" in text
    assert "EXPECTED" in text


def test_missing_drop_line_exits_1(inputs: dict[str, Path]) -> None:
    inputs["log"].write_text(logemu(SAMPLE1, SAMPLE2, 1))
    code, output = run(inputs)
    assert code == 1
    assert (
        "FAIL sample2/nginx -> sample1/nginx 80/TCP: blocked but no drop line on node lab" in output
    )
    assert json.loads((inputs["out"] / "report.json").read_text())["ok"] is False


def test_log_of_another_node_does_not_count(inputs: dict[str, Path]) -> None:
    arguments = ["--expected", str(inputs["expected"]), "--observed", str(inputs["observed"])]
    arguments += ["--log", f"elsewhere={inputs['log']}", "--out", str(inputs["out"])]
    result = CliRunner().invoke(report_command, arguments)
    assert result.exit_code == 1
    assert "no drop line on node lab" in result.output


def test_kubernetes_pod_list_gives_ips_and_nodes(inputs: dict[str, Path], tmp_path: Path) -> None:
    pods = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"namespace": key.split("/")[0], "name": key.split("/")[1]},
                "spec": {"nodeName": "lab", "containers": [{"name": "c", "image": "nginx"}]},
                "status": {"podIP": ip},
            }
            for key, ip in IPS.items()
        ],
    }
    snapshot = tmp_path / "pods.json"
    snapshot.write_text(json.dumps(pods))
    code, output = run(inputs, "--pods", str(snapshot))
    assert code == 0, output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"probes": [{"from": "a/b", "to": "c/d", "port": "http", "allowed": true}]}',
            "probes[0].port",
        ),
        ('{"probes": [{"from": "a/b", "port": 80, "allowed": true}]}', "probes[0].to: missing"),
        ('{"probes": {"from": "a/b"}}', "probes: expected a list"),
    ],
)
def test_bad_expected_file_exits_2_naming_the_field(
    inputs: dict[str, Path], content: str, message: str
) -> None:
    inputs["expected"].write_text(content)
    code, output = run(inputs, "--pods", str(inputs["expected"]))
    assert code == 2
    assert str(inputs["expected"]) in output
    assert message in output
    assert not (inputs["out"] / "report.json").exists()


def test_bad_observed_line_exits_2_naming_the_line(inputs: dict[str, Path]) -> None:
    inputs["observed"].write_text('{"from": "a/b", "to": "c/d", "port": 80}\nnot json\n')
    code, output = run(inputs)
    assert code == 2
    assert "line 2: not JSON" in output


def test_missing_log_file_exits_2(inputs: dict[str, Path]) -> None:
    code, output = run(inputs, "--log", "lab=/nonexistent/syslogemu.log")
    assert code == 2
    assert "/nonexistent/syslogemu.log" in output


def test_udp_probes_are_skipped_with_a_note(inputs: dict[str, Path]) -> None:
    lab = json.loads(inputs["expected"].read_text())
    lab["probes"].append(
        {"from": SAMPLE1, "to": SAMPLE2, "port": 53, "protocol": "UDP", "allowed": False}
    )
    inputs["expected"].write_text(json.dumps(lab))
    code, output = run(inputs)
    assert code == 0, output
    report = json.loads((inputs["out"] / "report.json").read_text())
    assert report["summary"]["probes"] == 4
    assert any("not on TCP" in note for note in report["notes"])


def test_run_document_on_stdin_carries_results_and_logs(inputs: dict[str, Path]) -> None:
    run_document = {
        "results": [
            {"from": src, "to": dst, "port": 80, "protocol": "TCP", "connected": ok}
            for src, dst, ok in EXPECTED
        ],
        "logs": [{"node": "lab", "text": inputs["log"].read_text()}],
    }
    arguments = ["--expected", str(inputs["expected"]), "--run", "-", "--out", str(inputs["out"])]
    result = CliRunner().invoke(report_command, arguments, input=json.dumps(run_document))
    assert result.exit_code == 0, result.output
    assert (inputs["out"] / "logs" / "lab.log").read_text() == inputs["log"].read_text()
    assert json.loads((inputs["out"] / "report.json").read_text())["summary"]["logged"] == 2


def test_run_document_with_a_bad_node_name_exits_2(inputs: dict[str, Path]) -> None:
    run_document = {"results": [], "logs": [{"node": "../etc", "text": ""}]}
    arguments = ["--expected", str(inputs["expected"]), "--run", "-", "--out", str(inputs["out"])]
    result = CliRunner().invoke(report_command, arguments, input=json.dumps(run_document))
    assert result.exit_code == 2
    assert "logs[0].node" in result.output


def test_namespace_option_keeps_only_probes_between_those_namespaces(
    inputs: dict[str, Path],
) -> None:
    code, output = run(inputs, "--namespace", "sample1", "--namespace", "sample2")
    assert code == 0, output
    report = json.loads((inputs["out"] / "report.json").read_text())
    assert {(row["from"], row["to"]) for row in report["rows"]} == {
        (SAMPLE1, SAMPLE2),
        (SAMPLE2, SAMPLE1),
    }


TWO_NODES = Path(__file__).parent / "data" / "verify" / "two-nodes.yaml"
TWO_NODE_IPS = {"x/a": "10.42.0.10", "y/b": "10.42.0.11", "x/c": "10.42.1.10", "y/d": "10.42.1.11"}


def two_node_line(node: str, src: str, dst: str, prefix: str = "", ip_id: int = 1) -> str:
    return (
        f"Nov 29 10:00:01 {node} {prefix} IN=cni0 OUT=flannel.1 SRC={TWO_NODE_IPS[src]} "
        f"DST={TWO_NODE_IPS[dst]} LEN=60 TOS=00 PREC=0x00 TTL=64 ID={ip_id} DF PROTO=TCP "
        f"SPT={40000 + ip_id} DPT=80 SEQ={ip_id} ACK=0 WINDOW=64240 SYN URGP=0 MARK=0\n"
    )


def test_manifests_move_an_egress_blocks_evidence_to_the_sources_node(tmp_path: Path) -> None:
    probe = {"from": "x/c", "to": "x/a", "port": 80, "protocol": "TCP"}
    (tmp_path / "expected.json").write_text(json.dumps({"probes": [{**probe, "allowed": False}]}))
    (tmp_path / "observed.json").write_text(json.dumps([{**probe, "connected": False}]))
    (tmp_path / "node-2.log").write_text(
        two_node_line("node-2", "x/c", "x/a", "DROP by policy x/deny-egress-c")
        + two_node_line("node-2", "x/c", "x/a")
    )
    arguments = [
        "--expected",
        str(tmp_path / "expected.json"),
        "--observed",
        str(tmp_path / "observed.json"),
        "--pods",
        str(TWO_NODES),
        "--log",
        f"node-2={tmp_path / 'node-2.log'}",
        "--out",
        str(tmp_path / "out"),
    ]
    without = CliRunner().invoke(report_command, arguments)
    assert without.exit_code == 1, without.output
    assert "no drop line on node node-1" in without.output
    result = CliRunner().invoke(report_command, [*arguments, "--manifests", str(TWO_NODES)])
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "out" / "report.json").read_text())["rows"][0]
    assert (row["evidence"], row["blocked_by"], row["evidence_nodes"]) == (
        "pod-chain",
        "egress",
        ["node-2"],
    )


def test_run_document_with_manifests_and_start_times_reports_rate_limited(
    tmp_path: Path,
) -> None:
    objects = list(yaml.safe_load_all(TWO_NODES.read_text()))
    results = []
    lines = ""
    for number, port in enumerate(range(80, 92)):
        probe = {"from": "y/d", "to": "y/b", "port": port, "protocol": "TCP"}
        results.append({**probe, "connected": False, "started": 1000.0 + number * 0.01})
        if number < 10:
            lines += two_node_line("node-1", "y/d", "y/b", ip_id=number + 1).replace(
                "DPT=80", f"DPT={port}"
            )
    document = {
        "results": results,
        "logs": [{"node": "node-1", "text": lines}, {"node": "node-2", "text": ""}],
        "expected": {"probes": [{**r, "allowed": False} for r in results]},
        "pods": {"apiVersion": "v1", "kind": "List", "items": objects[2:6]},
        "manifests": {"apiVersion": "v1", "kind": "List", "items": objects},
    }
    result = CliRunner().invoke(
        report_command, ["--run", "-", "--out", str(tmp_path)], input=json.dumps(document)
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["status"] for row in report["rows"]] == ["ok"] * 10 + ["rate-limited"] * 2
    assert report["summary"]["rate_limited"] == 2
    assert report["rows"][11]["rate_limit"]["packets_before"] == 11
    assert "rate-limited: no line on node node-1" in result.output


def test_run_document_with_a_bad_start_time_exits_2(inputs: dict[str, Path]) -> None:
    document = {
        "results": [
            {"from": SAMPLE1, "to": SAMPLE2, "port": 80, "connected": False, "started": "x"}
        ],
        "logs": [],
    }
    result = CliRunner().invoke(
        report_command,
        ["--expected", str(inputs["expected"]), "--run", "-", "--out", str(inputs["out"])],
        input=json.dumps(document),
    )
    assert result.exit_code == 2
    assert "results[0].started: expected seconds" in result.output
