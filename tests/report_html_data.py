"""What the report.html tests and benchmark share: the reports they render (the recorded lab run,
a 144-probe x/y/z matrix) and headless Chromium with the network off.

The recorded run (tests/data/report_html/lab-run/report.json) is what `make lab` wrote (see the
README there). The x/y/z report is built by verify.compare() from the model's expectation and
log lines in the form ulogd2 writes them, over two nodes, with one probe of each failure kind
put in on purpose, so that every cell status appears.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from k3s_netpol.logs import drop_events, parse_logemu_line
from k3s_netpol.model import cluster_from_documents, expect, policy_selects
from k3s_netpol.verify import Report, compare, probe_key

DATA = Path(__file__).parent / "data"
LAB_RUN = DATA / "report_html" / "lab-run" / "report.json"

# Cell counts of the recorded lab run (6 pods, 30 probes on ports 80, 8000 and 9090).
LAB_RUN_COUNTS = {"allowed": 10, "false-drop": 10, "blocked-logged": 10}

MAC = "aa:5b:56:53:92:03:7e:37:4c:64:65:8e:08:00"
NODES = {"x": "node-a", "y": "node-b", "z": "node-b"}


def _policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


# x: deny by default, then allow its own namespace; y: its own namespace, and x on port 80 only;
# z: no policy (everything reaches it, nothing is logged).
POLICIES = [
    _policy("x", "deny-by-default", {"podSelector": {}, "policyTypes": ["Ingress"]}),
    _policy(
        "x", "allow-same-ns", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
    ),
    _policy(
        "y", "allow-same-ns", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
    ),
    _policy(
        "y",
        "allow-x-on-80",
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}],
                    "ports": [{"port": 80, "protocol": "TCP"}],
                }
            ],
        },
    ),
]

# One probe of each kind the verification catches (from, to, port).
NOT_LOGGED = ("y/a", "x/b", 81)  # blocked, but the drop line is missing
BLOCKED_INSTEAD = ("x/a", "x/b", 80)  # expected allowed, curl failed (and the drop was logged)
ALLOWED_INSTEAD = ("z/a", "y/c", 81)  # expected blocked, curl connected (no line)
LOGGED_ALLOWED = ("x/c", "y/a", 80)  # allowed and connected, yet a pod-chain line was logged
NOT_PROBED = ("z/b", "x/c", 81)  # curl never ran
OUTSIDER = "10.42.9.9"  # an address of no pod in the matrix: its drop is unexplained

XYZ_COUNTS = {
    "allowed": 60,
    "false-drop": 19,
    "blocked-logged": 60,
    "blocked-unlogged": 1,
    "allowed-logged": 1,
    "mismatch": 2,
    "not-probed": 1,
}


# Where the recorded run's log was when it ran: its events name their lines there.
RECORDED_LOGS = "/work/wt/html/artifacts/logs/"


def lab_run(logs: Path | None = None) -> dict[str, Any]:
    """The recorded report, its events naming their lines under `logs` (default: the copy of the
    log beside it), so that no file at the path of the recording is ever read."""
    text = LAB_RUN.read_text(encoding="utf-8")
    assert RECORDED_LOGS in text
    moved = text.replace(RECORDED_LOGS, f"{logs or LAB_RUN.parent / 'logs'}/")
    document: dict[str, Any] = json.loads(moved)
    return document


def _line(host: str, prefix: str, src: str, dst: str, dpt: int, ip_id: int) -> str:
    return (
        f"Nov 29 10:14:{ip_id % 60:02d} {host} {prefix} IN=cni0 OUT=cni0 MAC={MAC} "
        f"SRC={src} DST={dst} LEN=60 TOS=00 PREC=0x00 TTL=64 ID={ip_id} DF PROTO=TCP "
        f"SPT={40000 + ip_id} DPT={dpt} SEQ={1000003 * ip_id} ACK=0 WINDOW=64240 SYN URGP=0 "
        "MARK=0x0"
    )


def xyz_report() -> dict[str, Any]:
    """The 144-probe report (9 pods x 8 destinations x ports 80 and 81), as report.json holds it."""
    return xyz_run()[0].to_dict()


def xyz_run() -> tuple[Report, dict[str, str]]:
    """The 144-probe report, and the text of each log line it names (`node.log:number`)."""
    documents = [
        document
        for document in yaml.safe_load_all((DATA / "netpol-cases" / "cluster.yaml").read_text())
        if document
    ]
    cluster = cluster_from_documents([*documents, *POLICIES], "x/y/z")
    probes = expect(cluster, ports=[(80, "TCP"), (81, "TCP")])
    pods = {pod.key: pod for pod in cluster.pods}
    ips = {key: pod.ip for key, pod in pods.items() if pod.ip}
    nodes = {key: NODES[pod.namespace] for key, pod in pods.items()}
    observed: dict[tuple[str, str, int, str], bool] = {}
    lines: list[str] = []
    for number, probe in enumerate(probes, start=1):
        flow = (probe.source, probe.destination, probe.port)
        connected = probe.allowed
        if flow == BLOCKED_INSTEAD:
            connected = False
        elif flow == ALLOWED_INSTEAD:
            connected = True
        if flow != NOT_PROBED:
            observed[probe_key(*flow, "TCP")] = connected
        destination = pods[probe.destination]
        selecting = [p.key for p in cluster.policies if policy_selects(p, destination)]
        host = nodes[probe.destination]
        src, dst = ips[probe.source], ips[probe.destination]
        if not connected and flow != NOT_LOGGED:
            lines += [
                _line(host, f"DROP by policy {p}", src, dst, probe.port, number) for p in selecting
            ]
            lines.append(_line(host, "", src, dst, probe.port, number))
        elif connected and flow == LOGGED_ALLOWED:
            lines.append(_line(host, "", src, dst, probe.port, number))
        elif connected and len(selecting) > 1 and not _first_allows(probe, selecting):
            lines.append(
                _line(host, f"DROP by policy {selecting[0]}", src, dst, probe.port, number)
            )
    lines.append(_line("node-a", "", OUTSIDER, ips["x/a"], 80, 999))
    texts = {f"{text.split()[3]}.log:{n}": text for n, text in enumerate(lines, 1)}
    events = drop_events(parse_logemu_line(text, origin) for origin, text in texts.items())
    return compare(probes, observed, events, ips, nodes), texts


def _first_allows(probe: Any, selecting: list[str]) -> bool:
    """Whether the first policy chain a packet runs through allows it (no false line then)."""
    first = selecting[0]
    source_namespace = probe.source.split("/")[0]
    if first.endswith("/allow-same-ns"):
        return source_namespace == first.split("/")[0]
    return False


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
    # The network off: every request goes to a proxy that is not there, no name resolves.
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


class BrowserMissing(Exception):
    """What is missing for the browser test, naming the package that brings it."""


def chromium(profile: Path) -> Any:
    """A selenium driver of Debian's headless Chromium with a fresh profile and no network."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserMissing("needs the Python package selenium (requirements.txt)") from None
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    for path, package in ((binary, "chromium"), (driver, "chromium-driver")):
        if path is None:
            raise BrowserMissing(
                f"needs the Debian package {package} (scripts/setup.sh installs it)"
            )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(driver))
