"""`k3s-netpol expect`: options, output formats, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from k3s_netpol.cli import main
from k3s_netpol.cli.expect import parse_port
from k3s_netpol.probe_output import MATRIX_MAX_PODS

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


K3S = Path(__file__).parent / "data" / "k3s-cluster"
K3S_FILES = [str(K3S / name) for name in ("namespaces.yaml", "pods.yaml", "networkpolicies.yaml")]
K3S_ARGS = [arg for path in K3S_FILES for arg in ("-f", path)]
IGNORED = {
    "kube-system/helm-install-traefik-crd-9hx5c": "phase Succeeded: finished",
    "kube-system/helm-install-traefik-2pqvd": "phase Succeeded: finished",
    "monitoring/node-exporter-4tq9d": "hostNetwork",
    "monitoring/node-exporter-x7b2k": "hostNetwork",
    "shop/db-migrate-29386552-8fwhx": "phase Failed: finished",
    "analytics/worker-5c6d7e8f9-p9r7s": "phase Pending, no podIP yet",
}


def test_indent_is_for_people_and_compact_is_the_default(policy_file: Path) -> None:
    args = ["-f", str(CLUSTER), "-f", str(policy_file), "--port", "80", "-o", "json"]
    _, compact, _ = run(*args)
    code, indented, _ = run(*args, "--indent", "2")
    assert code == 0
    assert indented == json.dumps(json.loads(compact), indent=2) + "\n"
    assert compact == json.dumps(json.loads(compact), separators=(",", ":")) + "\n"


def test_indent_needs_json_output(policy_file: Path) -> None:
    code, _, err = run("-f", str(CLUSTER), "--indent", "2", "-o", "summary")
    assert code == 2
    assert "--indent applies to -o json only" in err


def test_summary_output_counts_per_namespace_pair_and_names_the_policies(
    policy_file: Path,
) -> None:
    code, out, _ = run("-f", str(CLUSTER), "-f", str(policy_file), "--port", "80", "-o", "summary")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["FROM", "TO", "PORT", "ALLOWED", "BLOCKED", "DECIDED", "BY"]
    assert lines[-1] == "72 probes over 9 pods: 67 allowed, 5 blocked"
    rows = {tuple(line.split()[:3]): line for line in lines[1:-1]}
    assert rows["y", "x", "80/TCP"].split()[3:] == [
        "9",
        "0",
        "allowed",
        "by",
        "ingress",
        "x/a-from-y;",
        "no",
        "policy",
        "(6)",
    ]
    assert rows["x", "x", "80/TCP"].split()[3:5] == ["4", "2"]
    assert rows["x", "x", "80/TCP"].endswith("| blocked by ingress x/a-from-y")


def test_a_k3s_snapshot_leaves_out_the_pods_kube_router_ignores() -> None:
    code, out, err = run(*K3S_ARGS, "-o", "json")
    assert code == 0
    probes = json.loads(out)["probes"]
    endpoints = {p["from"] for p in probes} | {p["to"] for p in probes}
    assert len(endpoints) == 11
    assert not endpoints & set(IGNORED)
    assert "note: 6 pod(s) ignored as kube-router does" in err
    for key, reason in IGNORED.items():
        assert f"{key} ({reason}" in err
    assert (
        "warning: pod analytics/worker-5c6d7e8f9-p9r7s has no IP, so no ipBlock matches it; "
        "the ipBlock peers of shop/allow-scrape-from-nodes-and-prometheus could match it"
    ) in err

    def verdict(source: str, destination: str, port: int, protocol: str = "TCP") -> bool:
        (found,) = [
            p["allowed"]
            for p in probes
            if (p["from"], p["to"], p["port"], p["protocol"])
            == (source, destination, port, protocol)
        ]
        return bool(found)

    # DNS from the locked-down namespace, nothing else out of it
    assert verdict("shop/backend-7b9f6c5d4-qx8vn", "kube-system/coredns-ccb96694c-7xq2m", 53, "UDP")
    assert not verdict(
        "shop/backend-7b9f6c5d4-qx8vn", "kube-system/metrics-server-5985cbc9d7-ds2rb", 10250
    )
    assert verdict("shop/frontend-6f7c8d9b5-2kzpl", "shop/postgres-0", 5432)
    # traefik reaches the frontend's named port; svclb pods are ordinary pods (hostPort)
    assert verdict("kube-system/traefik-5d45fc8cc9-lw7tj", "shop/frontend-6f7c8d9b5-2kzpl", 8080)
    assert not verdict(
        "kube-system/svclb-traefik-8a1f29c3-hq6zt", "shop/frontend-6f7c8d9b5-2kzpl", 8080
    )
    assert not verdict(
        "shop/frontend-6f7c8d9b5-2kzpl", "kube-system/svclb-traefik-8a1f29c3-5mf2r", 80
    )
    # metrics: Prometheus may scrape; the hostNetwork node exporters are not sources at all
    assert verdict("monitoring/prometheus-0", "shop/backend-7b9f6c5d4-qx8vn", 9100)
    assert not verdict("monitoring/prometheus-0", "shop/backend-7b9f6c5d4-qx8vn", 8080)
    # `egress: []` without policyTypes isolates ingress only
    assert verdict(
        "analytics/worker-5c6d7e8f9-h2j4k", "kube-system/coredns-ccb96694c-7xq2m", 53, "UDP"
    )
    assert verdict("analytics/worker-5c6d7e8f9-h2j4k", "monitoring/prometheus-0", 9090)
    assert not verdict("monitoring/prometheus-0", "analytics/worker-5c6d7e8f9-h2j4k", 8080)


def test_a_k3s_snapshot_table_lists_the_ignored_pods_and_why() -> None:
    code, out, _ = run(*K3S_ARGS, "--port", "80")
    assert code == 0
    assert "Pods kube-router ignores: not probed, selected or matched by any policy" in out
    ignored_rows = {
        cells[0]: cells[1]
        for line in out.splitlines()
        if (cells := [cell.strip() for cell in line.split("│")[1:-1]]) and cells[0] in IGNORED
    }
    assert set(ignored_rows) == set(IGNORED)
    for key, reason in IGNORED.items():
        assert ignored_rows[key].startswith(reason)
    assert "110 probes over 11 pods" in out


def test_a_k3s_snapshot_summary() -> None:
    code, out, _ = run(*K3S_ARGS, "-o", "summary")
    assert code == 0
    rows = {tuple(line.split()[:3]): line for line in out.splitlines()}
    assert rows["shop", "kube-system", "53/UDP"].split()[3:] == [
        "3",
        "0",
        "allowed",
        "by",
        "egress",
        "shop/allow-dns",
    ]
    assert rows["monitoring", "shop", "9100/TCP"].split()[3:] == [
        "1",
        "0",
        "allowed",
        "by",
        "ingress",
        "shop/allow-scrape-from-nodes-and-prometheus",
    ]
    assert rows["kube-system", "analytics", "8080/TCP"].split()[3:] == [
        "0",
        "6",
        "blocked",
        "by",
        "ingress",
        "analytics/deny-all",
    ]
    assert rows["analytics", "kube-system", "53/UDP"].split()[3:] == [
        "1",
        "0",
        "allowed",
        "by",
        "no",
        "policy",
        "(1)",
    ]
