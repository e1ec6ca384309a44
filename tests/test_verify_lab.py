"""verify on a real two-node lab: the same matrix under two seeds (two kube-router syncs with
other jump orders) gives the same verdicts, every blocked probe's evidence on its node.

The nodes are network namespaces joined over flannel.1 (test_lab_host.HostCluster), with
kube-router's own pod-chain limit (10/minute, burst 10) and the bundle's nflog annotations as
the lab's inventory sets them; one ulogd2 per node writes its LOGEMU file. The lines go through
the report's own loader (cli.report.load_events) and verify.compare with the manifests.
Run as root, under `flock /tmp/k3s-netpol-root.lock`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_lab_host import HostCluster, require_root_tools

from k3s_netpol.bundle import BundleConfig, render, render_yaml
from k3s_netpol.cli.report import load_events
from k3s_netpol.lab import compile_cluster
from k3s_netpol.model import Cluster, Probe, load_manifests
from k3s_netpol.verify import Report, compare, probe_key

WORKLOADS = Path(__file__).resolve().parents[1] / "src/k3s_netpol/data/lab/workloads.yaml"
SERVER, AGENT = "k3s-netpol-lab-server", "k3s-netpol-lab-agent"
ULOGD_PLUGINS = Path("/usr/lib/x86_64-linux-gnu/ulogd")
ULOGD_CONF = """[global]
logfile="{log_dir}/ulogd.log"
loglevel=5
plugin="{plugins}/ulogd_inppkt_NFLOG.so"
plugin="{plugins}/ulogd_raw2packet_BASE.so"
plugin="{plugins}/ulogd_filter_IFINDEX.so"
plugin="{plugins}/ulogd_filter_IP2STR.so"
plugin="{plugins}/ulogd_filter_PRINTPKT.so"
plugin="{plugins}/ulogd_output_LOGEMU.so"
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU

[log1]
group=100
netlink_qthreshold=1

[emu1]
file="{log_dir}/syslogemu.log"
sync=1
"""
SEEDS = (1, 2)

pytestmark = pytest.mark.root


def require_ulogd() -> None:
    if not shutil.which("ulogd") or not ULOGD_PLUGINS.is_dir():
        pytest.skip(f"needs ulogd2 (the `ulogd` binary and its plugins in {ULOGD_PLUGINS})")


class NodeLogs:
    """One ulogd2 per node, in the node's network namespace, each writing its own file."""

    def __init__(self, lab: HostCluster, work_dir: Path) -> None:
        self.paths: dict[str, Path] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        for name, node in lab.nodes.items():
            log_dir = work_dir / name
            log_dir.mkdir(parents=True)
            config = log_dir / "ulogd.conf"
            config.write_text(ULOGD_CONF.format(log_dir=log_dir, plugins=ULOGD_PLUGINS))
            command = ["ip", "netns", "exec", node.node, "ulogd", "-c", str(config)]
            self.processes.append(subprocess.Popen(command, stderr=subprocess.DEVNULL))
            self.paths[name] = log_dir / "syslogemu.log"
        deadline = time.monotonic() + 10
        while not all(path.exists() for path in self.paths.values()):
            assert time.monotonic() < deadline, "ulogd2 did not open its log files"
            time.sleep(0.05)

    def sizes(self) -> dict[str, int]:
        return {name: path.stat().st_size for name, path in self.paths.items()}

    def gained(self, sizes: dict[str, int], work_dir: Path) -> list[tuple[str | None, Path]]:
        """Wait until no log grows for a second, then the lines each one gained, as files."""
        last, still_since = self.sizes(), time.monotonic()
        while time.monotonic() - still_since < 1.0:
            time.sleep(0.1)
            now = self.sizes()
            if now != last:
                last, still_since = now, time.monotonic()
        saved: list[tuple[str | None, Path]] = []
        for name, path in self.paths.items():
            with path.open("rb") as stream:
                stream.seek(sizes[name])
                part = work_dir / f"{name}.log"
                part.write_bytes(stream.read())
            saved.append((name, part))
        return saved

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HostCluster, NodeLogs]]:
    require_root_tools()
    require_ulogd()
    work = tmp_path_factory.mktemp("verify-lab")
    lab = HostCluster(f"kv{os.getpid()}-", work / "nodes", [SERVER, AGENT])
    logs = None
    try:
        logs = NodeLogs(lab, work / "logs")
        yield lab, logs
    finally:
        if logs is not None:
            logs.close()
        lab.close()


def tutorial(tmp_path: Path) -> Cluster:
    bundle = tmp_path / "bundle.yaml"
    # The annotations the lab's inventory gives the bundle's per-policy log rules.
    config = BundleConfig(nflog_limit="600/minute", nflog_limit_burst=100)
    bundle.write_text(render_yaml(render(config)))
    return load_manifests([bundle, WORKLOADS])


def verify_under(
    lab: HostCluster, logs: NodeLogs, cluster: Cluster, seed: int, work: Path
) -> tuple[Report, dict[str, list[str]]]:
    compiled = compile_cluster(cluster, lab.specs, seed=seed, netns_prefix=lab.prefix)
    lab.apply(compiled)
    lab.start_servers()
    probes = [
        Probe(p["from"], p["to"], int(p["port"]), p["protocol"], bool(p["allowed"]))
        for p in compiled.lab["probes"]
    ]
    before = logs.sizes()
    observed = lab.probe(compiled.lab["probes"])
    work.mkdir()
    events, notes = load_events(logs.gained(before, work))
    assert not notes, notes
    pods = compiled.lab["pods"]
    ips = {f"{pod['namespace']}/{pod['name']}": pod["ip"] for pod in pods}
    nodes = {f"{pod['namespace']}/{pod['name']}": pod["node"] for pod in pods}
    report = compare(
        probes,
        {probe_key(*key): allowed for key, allowed in observed.items()},
        events,
        ips,
        nodes,
        cluster=cluster,
    )
    orders = {node["name"]: node["pod_order"] for node in compiled.lab["nodes"]}
    return report, orders


def test_two_seeds_give_the_same_verdicts_with_evidence_on_the_blocking_node(
    two_nodes: tuple[HostCluster, NodeLogs], tmp_path: Path
) -> None:
    lab, logs = two_nodes
    cluster = tutorial(tmp_path)
    reports = {}
    orders = {}
    for seed in SEEDS:
        reports[seed], orders[seed] = verify_under(lab, logs, cluster, seed, tmp_path / str(seed))
    assert orders[SEEDS[0]] != orders[SEEDS[1]], "the two seeds drew the same pod orders"
    for seed, report in reports.items():
        failures = [f"{row.key}: {row.problems}" for row in report.failures]
        assert report.ok, f"seed {seed}:\n" + "\n".join(failures)
        blocked = [row for row in report.rows if not row.expected]
        assert blocked, "the tutorial blocks some probes"
        assert all(row.evidence in {"pod-chain", "policy-lines"} for row in blocked)
        # Cross-node blocked probes were found on the node whose chain blocks them.
        for row in blocked:
            assert row.expected_evidence is not None
            assert set(row.evidence_nodes) <= set(row.expected_evidence.nodes)
        assert any(row.source_node != row.destination_node for row in blocked)

    def verdicts(report: Report) -> list[tuple[object, ...]]:
        return [(row.key, row.expected, row.observed, row.ok) for row in report.rows]

    assert verdicts(reports[SEEDS[0]]) == verdicts(reports[SEEDS[1]])
