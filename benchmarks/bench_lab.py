"""Lab figures: compile time, set-up time, and the x/y/z x a/b/c matrix on two ports (144 probes)
with log checks. Prints figures; asserts nothing.

1. compile: the tutorial bundle + lab workloads, and the upstream x/y/z topology.
2. host (root): the node as a network namespace on this host, set up by the role's helper;
   144 curls; the log check reads the NFLOG rules' packet counters (no ulogd on the host).
3. container (podman and the project image): the same in a throwaway privileged systemd
   container with ulogd2 installed and listening on NFLOG group 100 (netlink_qthreshold=1);
   the log check waits for every blocked probe's unprefixed line in syslogemu.log.
   Installing ulogd2 is not timed. Skip with --no-container.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import yaml  # noqa: E402

from k3s_netpol import kuberouter  # noqa: E402
from k3s_netpol.bundle import BundleConfig, render, render_yaml  # noqa: E402
from k3s_netpol.lab import compile_lab, write_compiled  # noqa: E402
from k3s_netpol.model import Cluster, cluster_from_documents, load_manifests  # noqa: E402

IMAGE = "localhost/k3s-netpol-debian12:latest"
CASES = ROOT / "tests/data/netpol-cases"
NODE_HELPER = ROOT / "roles/netpol_lab/files/netpol_lab_node.py"
SYSCTLS = [
    "--sysctl=net.bridge.bridge-nf-call-iptables=1",
    "--sysctl=net.ipv4.ip_forward=1",
    "--sysctl=net.ipv4.icmp_ratelimit=0",
    "--sysctl=net.ipv4.icmp_msgs_per_sec=100000",
    "--sysctl=net.ipv4.icmp_msgs_burst=10000",
]
ULOGD_CONF = """[global]
logfile="syslog"
loglevel=3
plugin="/usr/lib/x86_64-linux-gnu/ulogd/ulogd_inppkt_NFLOG.so"
plugin="/usr/lib/x86_64-linux-gnu/ulogd/ulogd_filter_IFINDEX.so"
plugin="/usr/lib/x86_64-linux-gnu/ulogd/ulogd_filter_IP2STR.so"
plugin="/usr/lib/x86_64-linux-gnu/ulogd/ulogd_filter_PRINTPKT.so"
plugin="/usr/lib/x86_64-linux-gnu/ulogd/ulogd_raw2packet_BASE.so"
plugin="/usr/lib/x86_64-linux-gnu/ulogd/ulogd_output_LOGEMU.so"
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU
[log1]
group=100
netlink_qthreshold=1
[emu1]
file="/var/log/ulog/syslogemu.log"
sync=1
"""
# Runs inside the container: set up, serve, probe, wait for the log lines; prints JSON timings.
IN_CONTAINER = r"""
import json, subprocess, sys, time, threading
from concurrent.futures import ThreadPoolExecutor
lab = json.load(open("/bench/lab.json"))
sysctls = sys.argv[1:]
figures = {}
start = time.monotonic()
subprocess.run(["python3", "/bench/netpol_lab_node.py", "pods", "/bench/lab.json", *sysctls,
                "--state-dir", "/run/bench"], check=True, capture_output=True)
subprocess.run(["python3", "/bench/netpol_lab_node.py", "load", "/bench"], check=True,
               capture_output=True)
figures["setup_seconds"] = time.monotonic() - start
server = "import socket,threading\n" \
    "def serve(p):\n s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n" \
    " s.bind(('0.0.0.0',p));s.listen(128)\n while True:\n  c,_=s.accept()\n" \
    "  try:\n   c.recv(4096);c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nok')\n" \
    "  except OSError: pass\n" \
    "  c.close()\n" \
    "import sys\nfor p in sys.argv[1:]: threading.Thread(target=serve,args=(int(p),)).start()\n" \
    "print('ready',flush=True)\n"
servers = []
for pod in lab["pods"]:
    process = subprocess.Popen(["ip", "netns", "exec", pod["netns"], "python3", "-c", server,
                                *map(str, pod["tcp_ports"])], stdout=subprocess.PIPE, text=True)
    servers.append(process)
for process in servers:
    process.stdout.readline()
pods = {f"{p['namespace']}/{p['name']}": p for p in lab["pods"]}
log = "/var/log/ulog/syslogemu.log"
offset = len(open(log, "rb").read())
start = time.monotonic()
by_source = {}
for probe in lab["probes"]:
    url = f"http://{pods[probe['to']]['ip']}:{probe['port']}/"
    by_source.setdefault(probe["from"], []).append((probe, url))
def curl(source):
    args = []
    for _, url in by_source[source]:
        args += ["-o", "/dev/null", url]
    out = subprocess.run(["ip", "netns", "exec", pods[source]["netns"], "curl", "-s", "--parallel",
                          "--parallel-max", "64", "--connect-timeout", "2", "-w",
                          "%{url} %{http_code}\\n", *args], capture_output=True, text=True).stdout
    codes = dict(line.split() for line in out.splitlines() if line.strip())
    return [(probe, codes.get(url) == "200") for probe, url in by_source[source]]
with ThreadPoolExecutor(len(by_source)) as pool:
    observed = [item for batch in pool.map(curl, by_source) for item in batch]
figures["probe_seconds"] = time.monotonic() - start
figures["probes"] = len(observed)
figures["mismatches"] = sum(1 for probe, ok in observed if ok != probe["allowed"])
wanted = {(pods[p["from"]]["ip"], pods[p["to"]]["ip"], str(p["port"]))
          for p, ok in observed if not ok}
deadline = time.monotonic() + 10
seen = set()
while time.monotonic() < deadline and not wanted <= seen:
    with open(log, "rb") as stream:
        stream.seek(offset)
        for line in stream.read().decode(errors="replace").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if " DROP by policy " not in line and "SRC" in fields:
                seen.add((fields["SRC"], fields["DST"], fields.get("DPT", "")))
    time.sleep(0.01)
figures["blocked"] = len(wanted)
figures["blocked_logged"] = len(wanted & seen)
figures["probe_and_log_seconds"] = time.monotonic() - start
for process in servers:
    process.kill()
print(json.dumps(figures))
"""


def xyz_cluster() -> Cluster:
    """The upstream x/y/z topology under a deny-all-ingress policy in every namespace."""
    documents = [d for d in yaml.safe_load_all((CASES / "cluster.yaml").read_text()) if d]
    annotations = {
        kuberouter.NFLOG_LIMIT_ANNOTATION: "1000/second",
        kuberouter.NFLOG_BURST_ANNOTATION: "1000",
    }
    for namespace in ("x", "y", "z"):
        documents.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {
                    "name": "allow-same-ns",
                    "namespace": namespace,
                    "annotations": annotations,
                },
                "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
            }
        )
    return cluster_from_documents(documents, "x/y/z")


def timed(label: str, function, repeat: int = 20) -> None:
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    print(f"{label}: {(time.perf_counter() - start) / repeat * 1000:.1f} ms")


def bench_compile(work: Path) -> None:
    bundle = work / "bundle.yaml"
    bundle.write_text(render_yaml(render(BundleConfig(nflog_limit="100/second"))))
    workloads = ROOT / "src/k3s_netpol/data/lab/workloads.yaml"
    timed(
        "compile bundle + lab workloads (6 pods, 10 policies)",
        lambda: compile_lab(load_manifests([bundle, workloads]), "lab"),
    )
    cluster = xyz_cluster()
    timed("compile x/y/z (9 pods, 3 policies, 144 probes)", lambda: compile_lab(cluster, "lab"))


def bench_host(work: Path) -> None:
    from test_lab_host import HostLab, missing_requirements, pod_chain_counts

    reason = missing_requirements()
    if reason:
        print(f"host lab: skipped ({reason})")
        return
    lab = HostLab(f"kb{os.getpid()}-", work / "host")
    try:
        compiled = compile_lab(xyz_cluster(), "lab", netns_prefix=lab.prefix)
        start = time.perf_counter()
        lab.apply(compiled)
        print(
            f"host lab set-up (9 pod netns, bridge, sets, rules): "
            f"{time.perf_counter() - start:.2f} s"
        )
        lab.start_servers()
        before = pod_chain_counts(lab.counters())
        start = time.perf_counter()
        observed = lab.probe(compiled.lab["probes"])
        after = pod_chain_counts(lab.counters())
        counts = {key: after[key] - before[key] for key in after}
        elapsed = time.perf_counter() - start
        blocked = sum(1 for p in compiled.lab["probes"] if not p["allowed"])
        mismatches = sum(
            1
            for p in compiled.lab["probes"]
            if observed[(p["from"], p["to"], p["port"], p["protocol"])] != p["allowed"]
        )
        print(
            f"host lab: {len(observed)} probes + counter log check in {elapsed:.2f} s "
            f"({mismatches} mismatches; {blocked} blocked, REJECT counted {counts['reject']}, "
            f"pod-chain NFLOG counted {counts['pod_nflog']})"
        )
    finally:
        lab.close()


def podman(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["podman", *args], input=stdin, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}: {result.stderr.strip()}")
    return result.stdout


def bench_container(work: Path) -> None:
    if (
        shutil.which("podman") is None
        or subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode
    ):
        print(f"container lab: skipped (needs podman and {IMAGE}; scripts/setup.sh builds it)")
        return
    name = f"k3s-netpol-bench-{os.getpid()}"
    compiled = compile_lab(xyz_cluster(), name)
    write_compiled(compiled, work / "compiled")
    shutil.copy(NODE_HELPER, work / "compiled" / NODE_HELPER.name)
    podman("run", "-d", "--name", name, "--privileged", "--systemd=always", IMAGE, "/sbin/init")
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(
            ["podman", "exec", name, "systemctl", "is-system-running", "--wait"],
            capture_output=True,
            check=False,
        ).stdout.strip() not in (b"running", b"degraded"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: systemd did not finish booting within 60 s")
            time.sleep(0.2)
        start = time.perf_counter()
        podman(
            "exec",
            name,
            "bash",
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            "ulogd2 >/dev/null",
        )
        podman("exec", "-i", name, "tee", "/etc/ulogd.conf", stdin=ULOGD_CONF)
        podman("exec", name, "systemctl", "restart", "ulogd2")
        print(f"container lab: ulogd2 installed in {time.perf_counter() - start:.1f} s (not timed)")
        podman("cp", f"{work / 'compiled'}/.", f"{name}:/bench")
        output = podman("exec", "-i", name, "python3", "-", *SYSCTLS, stdin=IN_CONTAINER)
        figures = json.loads(output.strip().splitlines()[-1])
        print(
            f"container lab set-up (9 pod netns, bridge, sets, rules): "
            f"{figures['setup_seconds']:.2f} s"
        )
        print(
            f"container lab: {figures['probes']} probes in {figures['probe_seconds']:.2f} s; "
            f"with every blocked probe's ulogd2 line: {figures['probe_and_log_seconds']:.2f} s "
            f"({figures['mismatches']} mismatches, {figures['blocked_logged']}/"
            f"{figures['blocked']} blocked probes logged)"
        )
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-container", action="store_true", help="skip the podman part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        bench_compile(work)
        bench_host(work)
        if not args.no_container:
            bench_container(work)


if __name__ == "__main__":
    main()
