"""`k3s-netpol expect`: options, output formats, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from k3s_netpol.cli import main
from k3s_netpol.cli.expect import MATRIX_MAX_PODS, parse_port

CLUSTER = Path(__file__).parent / "data" / "netpol-cases" / "cluster.yaml"
DENY_X_A_EXCEPT_FROM_Y = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: serve-80-tcp}]
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(DENY_X_A_EXCEPT_FROM_Y, encoding="utf-8")
    return path


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["expect", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_json_output_is_exactly_the_probes_document(policy_file: Path) -> None:
    code, out, _ = run("-f", str(CLUSTER), "-f", str(policy_file), "--port", "80/TCP", "-o", "json")
    assert code == 0
    assert out.startswith('{"probes":[{"from":"x/a","to":"x/b","port":80,"protocol":"TCP",')
    document = json.loads(out)
    assert list(document) == ["probes"]
    probes = document["probes"]
    assert len(probes) == 9 * 8
    assert all(list(p) == ["from", "to", "port", "protocol", "allowed"] for p in probes)
    blocked = {(p["from"], p["to"]) for p in probes if not p["allowed"]}
    assert blocked == {(f"{ns}/{pod}", "x/a") for ns in "xz" for pod in "abc"} - {("x/a", "x/a")}


def test_default_ports_are_each_destination_container_ports(policy_file: Path) -> None:
    code, out, _ = run("-f", str(CLUSTER), "-f", str(policy_file), "-o", "json")
    assert code == 0
    probes = json.loads(out)["probes"]
    assert {(p["port"], p["protocol"]) for p in probes} == {
        (80, "TCP"),
        (80, "UDP"),
        (81, "TCP"),
        (81, "UDP"),
    }
    assert len(probes) == 9 * 8 * 4
    # x/a on 81/TCP: no rule admits it, so only 80/TCP from y is open.
    assert not any(p["allowed"] for p in probes if p["to"] == "x/a" and p["port"] == 81)


def test_table_output_is_a_matrix_per_port(policy_file: Path) -> None:
    code, out, _ = run(
        "-f", str(CLUSTER), "-f", str(policy_file), "--port", "80", "--port", "81/udp"
    )
    assert code == 0
    assert "80/TCP: each row connects to each column" in out
    assert "81/UDP: each row connects to each column" in out
    row_for_x_b = next(line for line in out.splitlines() if " x/b " in line)  # 80/TCP comes first
    cells = [cell.strip() for cell in row_for_x_b.split("│")[1:-1]]
    assert cells == ["2 x/b", "X", "-", ".", ".", ".", ".", ".", ".", "."]
    assert "144 probes over 9 pods: 131 allowed, 13 blocked" in out


def test_large_clusters_get_a_per_destination_table(tmp_path: Path) -> None:
    pods = "".join(
        f"---\nkind: Pod\nmetadata: {{name: p{i}, namespace: n}}\n"
        f"status: {{podIP: 10.0.0.{i + 1}}}\n"
        for i in range(MATRIX_MAX_PODS + 1)
    )
    path = tmp_path / "pods.yaml"
    path.write_text(pods, encoding="utf-8")
    code, out, _ = run("-f", str(path), "--port", "80")
    assert code == 0
    assert "80/TCP: sources per destination" in out
    assert "n/p40" in out


def test_standard_input(policy_file: Path) -> None:
    code, out, _ = run("-f", "-", "-f", str(policy_file), "-o", "json", stdin=CLUSTER.read_text())
    assert code == 0
    assert len(json.loads(out)["probes"]) == 9 * 8 * 4


def test_pods_without_container_ports_hint_at_port_option(tmp_path: Path) -> None:
    path = tmp_path / "pods.yaml"
    path.write_text("kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: b}\n")
    code, out, _ = run("-f", str(path))
    assert code == 0
    assert "0 probes over 2 pods" in out
    assert "pass --port" in out


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    code, out, err = run("-f", str(tmp_path / "absent.yaml"))
    assert code == 2
    assert out == ""
    assert f"{tmp_path / 'absent.yaml'}: no such file" in err


def test_bad_policy_is_a_usage_error_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(DENY_X_A_EXCEPT_FROM_Y.replace("serve-80-tcp", "99999"))
    code, _, err = run("-f", str(CLUSTER), "-f", str(path))
    assert code == 2
    assert f"{path}: document 1 (NetworkPolicy x/a-from-y): spec.ingress[0].ports[0].port:" in err


@pytest.mark.parametrize("value", ["80/ICMP", "0", "http", "80/", "65536/TCP"])
def test_bad_port_option_is_a_usage_error(value: str) -> None:
    code, _, err = run("-f", str(CLUSTER), "--port", value)
    assert code == 2
    assert "--port" in err
    assert repr(value) in err


def test_filename_is_required() -> None:
    code, _, err = run()
    assert code == 2
    assert "--filename" in err


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("80", (80, "TCP")),
        ("53/udp", (53, "UDP")),
        ("9/SCTP", (9, "SCTP")),
        (" 443/TCP ", (443, "TCP")),
    ],
)
def test_parse_port(value: str, parsed: tuple[int, str]) -> None:
    assert parse_port(value) == parsed


def test_module_entry_point_runs_expect(policy_file: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "k3s_netpol",
            "expect",
            "-f",
            str(CLUSTER),
            "-f",
            str(policy_file),
            "--port",
            "80/TCP",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert len(json.loads(completed.stdout)["probes"]) == 72
