"""Lab figures: compile time, set-up time, and the x/y/z x a/b/c matrix on two ports (144
probes) over two nodes with log checks. Prints figures; asserts nothing.

The nine x/y/z pods are spread over two nodes (a/c of x and z and b of y on the first, the rest on
the second); every namespace allows ingress from itself only. The lab compiles what kube-router
compiles: the pod chains' log rule at 10/minute burst 10, the jump orders shuffled (random
seed, printed); the nodes keep the kernel's ICMP rate limits. The per-policy rules take the
policies' nflog annotations (1000/second, as a user may set them).

1. compile: the tutorial bundle + lab workloads (two nodes), and the x/y/z topology.
2. host (root): the two nodes as network namespaces joined by a bridge, flannel.1 between them,
   set up by the role's helper with the kernel tests' settings (ICMP rate limits lifted, so this
   part measures the rules, not the kernel's ICMP budget); 144 curls; the evidence is read from
   the rules' packet counters on the node that judges each blocked probe (no ulogd on the host).
3. containers (podman and the project image): two throwaway privileged systemd containers on
   their own podman network, each with ulogd2 (NFLOG group 100, netlink_qthreshold=1); the
   evidence check waits, on the destination pod's node, for any line of every blocked probe
   (the pod chain's or a `DROP by policy` one). Installing ulogd2 is not timed. Skip with
   --no-container.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import yaml  # noqa: E402

from k3s_netpol import kuberouter  # noqa: E402
from k3s_netpol.bundle import BundleConfig, render, render_yaml  # noqa: E402
from k3s_netpol.lab import (  # noqa: E402
    CompiledCluster,
    NodeSpec,
    compile_cluster,
    write_compiled,
)
from k3s_netpol.model import Cluster, cluster_from_documents, load_manifests  # noqa: E402

IMAGE = "localhost/k3s-netpol-debian12:latest"
CASES = ROOT / "tests/data/netpol-cases"
NODE_HELPER = ROOT / "roles/netpol_lab/files/netpol_lab_node.py"
NODES = ("bench-server", "bench-agent")
# As on a K3s node: bridged traffic through iptables, forwarding; ICMP limits left alone.
SYSCTLS = ["--sysctl=net.bridge.bridge-nf-call-iptables=1", "--sysctl=net.ipv4.ip_forward=1"]
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
# Runs inside a node container: `setup` builds its pods and loads its rules and starts a server
# per pod; `probe` curls /bench/probes.json from the node's own pods; `logs` waits until every
# flow of /bench/wanted.json has a line in ulogd2's log. Each prints JSON.
IN_CONTAINER = r"""
import json, os, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
mode = sys.argv[1]
log = "/var/log/ulog/syslogemu.log"
if mode == "setup":
    lab = json.load(open("/bench/lab.json"))
    start = time.monotonic()
    subprocess.run(["python3", "/bench/netpol_lab_node.py", "pods", "/bench/lab.json",
                    *sys.argv[2:], "--state-dir", "/run/bench"], check=True, capture_output=True)
    subprocess.run(["python3", "/bench/netpol_lab_node.py", "load", "/bench"], check=True,
                   capture_output=True)
    seconds = time.monotonic() - start
    server = ("import socket,threading,sys\n"
              "def serve(p):\n s=socket.socket()\n"
              " s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
              " s.bind(('0.0.0.0',p));s.listen(128)\n while True:\n  c,_=s.accept()\n"
              "  try:\n   c.recv(4096);c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nok')\n"
              "  except OSError: pass\n  c.close()\n"
              "for p in sys.argv[1:]: threading.Thread(target=serve,args=(int(p),)).start()\n"
              "print('ready',flush=True)\n")
    for pod in lab["pods"]:
        process = subprocess.Popen(["setsid", "ip", "netns", "exec", pod["netns"], "python3", "-c",
                                    server, *map(str, pod["tcp_ports"])], stdout=subprocess.PIPE,
                                   text=True)
        process.stdout.readline()
    print(json.dumps({"setup_seconds": seconds, "offset": os.path.getsize(log)}))
elif mode == "probe":
    by_source = json.load(open("/bench/probes.json"))
    def curl(netns):
        args = []
        for url in by_source[netns]:
            args += ["-o", "/dev/null", url]
        out = subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", "--parallel",
                              "--parallel-max", "64", "--connect-timeout", "3", "-w",
                              "%{url} %{http_code}\n", *args],
                             capture_output=True, text=True).stdout
        pairs = (line.split() for line in out.splitlines() if line.strip())
        return {f"{netns} {url}": code for url, code in pairs}
    with ThreadPoolExecutor(max(1, len(by_source))) as pool:
        codes = {}
        for result in pool.map(curl, by_source):
            codes.update(result)
    print(json.dumps(codes))
elif mode == "logs":
    wanted = {tuple(flow) for flow in json.load(open("/bench/wanted.json"))["flows"]}
    offset = json.load(open("/bench/wanted.json"))["offset"]
    deadline = time.monotonic() + float(sys.argv[2])
    seen, kinds = set(), {"pod_chain": 0, "policy_only": 0}
    while True:
        found = {}
        with open(log, "rb") as stream:
            stream.seek(offset)
            for line in stream.read().decode(errors="replace").splitlines():
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                flow = (fields.get("SRC"), fields.get("DST"), fields.get("DPT"))
                if flow in wanted:
                    found.setdefault(flow, set()).add(" DROP by policy " not in line)
        seen = set(found)
        if wanted <= seen or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    kinds["pod_chain"] = sum(1 for flow in seen if True in found[flow])
    kinds["policy_only"] = len(seen) - kinds["pod_chain"]
    print(json.dumps({"wanted": len(wanted), "seen": len(seen & wanted), **kinds}))
"""


def xyz_cluster() -> Cluster:
    """The upstream x/y/z topology on two nodes, each namespace open to itself only."""
    documents = [d for d in yaml.safe_load_all((CASES / "cluster.yaml").read_text()) if d]
    pods = [d for d in documents if d["kind"] == "Pod"]
    for index, pod in enumerate(pods):
        node = index % 2
        last = pod["status"]["podIP"].rsplit(".", 1)[1]
        pod["status"]["podIP"] = f"10.42.{node}.{last}"
        pod["status"]["podIPs"] = [{"ip": pod["status"]["podIP"]}]
        pod["spec"]["nodeName"] = NODES[node]
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


def node_specs(addresses: dict[str, str] | None = None) -> list[NodeSpec]:
    return [
        NodeSpec(name, f"10.42.{index}.1/24", (addresses or {}).get(name))
        for index, name in enumerate(NODES)
    ]


def timed(label: str, function: Any, repeat: int = 20) -> None:
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    print(f"{label}: {(time.perf_counter() - start) / repeat * 1000:.1f} ms")


def bench_compile(work: Path) -> None:
    bundle = work / "bundle.yaml"
    bundle.write_text(render_yaml(render(BundleConfig(nflog_limit="100/second"))))
    workloads = ROOT / "src/k3s_netpol/data/lab/workloads.yaml"
    tutorial = [
        NodeSpec("k3s-netpol-lab-server", "10.42.0.1/24", "10.89.0.2"),
        NodeSpec("k3s-netpol-lab-agent", "10.42.1.1/24", "10.89.0.3"),
    ]
    timed(
        "compile bundle + lab workloads (6 pods on 2 nodes, 10 policies)",
        lambda: compile_cluster(load_manifests([bundle, workloads]), tutorial),
    )
    cluster = xyz_cluster()
    timed(
        "compile x/y/z (9 pods on 2 nodes, 3 policies, 144 probes)",
        lambda: compile_cluster(cluster, node_specs({"bench-server": "10.89.0.2"})),
    )


def blocked_flows(compiled: CompiledCluster) -> dict[str, set[tuple[str, str, str]]]:
    """Per node, the (SRC, DST, DPT) of the blocked probes that node's chains judge (the
    x/y/z policies are ingress: the destination's node)."""
    pods = {f"{p['namespace']}/{p['name']}": p for p in compiled.lab["pods"]}
    flows: dict[str, set[tuple[str, str, str]]] = {name: set() for name in NODES}
    for probe in compiled.lab["probes"]:
        if not probe["allowed"]:
            destination = pods[probe["to"]]
            flows[destination["node"]].add(
                (pods[probe["from"]]["ip"], destination["ip"], str(probe["port"]))
            )
    return flows


def bench_host(work: Path) -> None:
    from test_lab_host import HostCluster, missing_requirements

    reason = missing_requirements()
    if reason:
        print(f"host lab: skipped ({reason})")
        return
    lab = HostCluster(f"kb{os.getpid()}-", work / "host", list(NODES))
    try:
        compiled = compile_cluster(xyz_cluster(), lab.specs, netns_prefix=lab.prefix)
        start = time.perf_counter()
        lab.apply(compiled)
        print(
            f"host lab set-up (2 nodes, 9 pod netns, flannel.1, sets, rules; seed "
            f"{compiled.lab['seed']}): {time.perf_counter() - start:.2f} s"
        )
        lab.start_servers()
        before = lab.counters()
        start = time.perf_counter()
        observed = lab.probe(compiled.lab["probes"])
        after = lab.counters()
        elapsed = time.perf_counter() - start
        logged = {
            node: sum(
                packets - old
                for (packets, chain, rule), (old, _, _) in zip(
                    after[node], before[node], strict=True
                )
                if "-j NFLOG" in rule and chain.startswith(("KUBE-POD-FW-", "KUBE-NWPLCY-"))
            )
            for node in NODES
        }
        flows = blocked_flows(compiled)
        mismatches = sum(
            1
            for p in compiled.lab["probes"]
            if observed[(p["from"], p["to"], p["port"], p["protocol"])] != p["allowed"]
        )
        print(
            f"host lab (ICMP limits lifted): {len(observed)} probes over 2 nodes + counter "
            f"check in {elapsed:.2f} s "
            f"({mismatches} mismatches; blocked judged per node "
            f"{ {node: len(flows[node]) for node in NODES} }, NFLOG packets per node {logged})"
        )
    finally:
        lab.close()


def url_of(pods: dict[str, dict[str, Any]], probe: dict[str, Any]) -> str:
    return f"http://{pods[probe['to']]['ip']}:{probe['port']}/"


def podman(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["podman", *args], input=stdin, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}: {result.stderr.strip()}")
    return result.stdout


def boot(name: str, network: str) -> str:
    podman(
        *("run", "-d", "--name", name, "--hostname", name, "--network", network),
        *("--privileged", "--systemd=always", IMAGE, "/sbin/init"),
    )
    deadline = time.monotonic() + 60
    while subprocess.run(
        ["podman", "exec", name, "systemctl", "is-system-running", "--wait"],
        capture_output=True,
        check=False,
    ).stdout.strip() not in (b"running", b"degraded"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: systemd did not finish booting within 60 s")
        time.sleep(0.2)
    podman(
        "exec",
        name,
        "bash",
        "-c",
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        "ulogd2 ipset >/dev/null",
    )
    podman("exec", "-i", name, "tee", "/etc/ulogd.conf", stdin=ULOGD_CONF)
    podman("exec", name, "systemctl", "restart", "ulogd2")
    details = json.loads(podman("inspect", "--format", "json", name))
    address: str = details[0]["NetworkSettings"]["Networks"][network]["IPAddress"]
    return address


def in_node(container: str, *args: str) -> Any:
    output = podman("exec", "-i", container, "python3", "-", *args, stdin=IN_CONTAINER)
    return json.loads(output.strip().splitlines()[-1])


def bench_container(work: Path) -> None:
    if (
        shutil.which("podman") is None
        or subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode
    ):
        print(f"container lab: skipped (needs podman and {IMAGE}; scripts/setup.sh builds it)")
        return
    prefix = f"k3s-netpol-bench-{os.getpid()}"
    network = prefix
    containers = {name: f"{prefix}-{name}" for name in NODES}
    podman("network", "create", network)
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(len(NODES)) as pool:
            addresses = dict(
                zip(NODES, pool.map(lambda n: boot(containers[n], network), NODES), strict=True)
            )
        print(
            f"container lab: 2 nodes booted, ulogd2 installed in "
            f"{time.perf_counter() - start:.1f} s (not timed)"
        )
        compiled = compile_cluster(xyz_cluster(), node_specs(addresses))
        print(
            f"container lab: seed {compiled.lab['seed']}, deviations {compiled.lab['deviations']}"
        )
        write_compiled(compiled, work / "compiled")
        pods = {f"{p['namespace']}/{p['name']}": p for p in compiled.lab["pods"]}
        urls: dict[str, dict[str, list[str]]] = {name: {} for name in NODES}
        for probe in compiled.lab["probes"]:
            source = pods[probe["from"]]
            urls[source["node"]].setdefault(source["netns"], []).append(url_of(pods, probe))
        flows = blocked_flows(compiled)
        for name in NODES:
            directory = work / "compiled" / name
            shutil.copy(NODE_HELPER, directory / NODE_HELPER.name)
            (directory / "probes.json").write_text(json.dumps(urls[name]))
            podman("cp", f"{directory}/.", f"{containers[name]}:/bench")
        with ThreadPoolExecutor(len(NODES)) as pool:
            setups = dict(
                zip(
                    NODES,
                    pool.map(lambda n: in_node(containers[n], "setup", *SYSCTLS), NODES),
                    strict=True,
                )
            )
        print(
            "container lab set-up per node (pods, flannel.1, sets, rules): "
            + ", ".join(f"{n} {setups[n]['setup_seconds']:.2f} s" for n in NODES)
        )
        for name in NODES:
            wanted = {"flows": sorted(flows[name]), "offset": setups[name]["offset"]}
            podman(
                "exec",
                "-i",
                containers[name],
                "tee",
                "/bench/wanted.json",
                stdin=json.dumps(wanted),
            )
        start = time.perf_counter()
        with ThreadPoolExecutor(len(NODES)) as pool:
            codes: dict[str, str] = {}
            for result in pool.map(lambda n: in_node(containers[n], "probe"), NODES):
                codes.update(result)
        probe_seconds = time.perf_counter() - start
        with ThreadPoolExecutor(len(NODES)) as pool:
            evidence = dict(
                zip(
                    NODES,
                    pool.map(lambda n: in_node(containers[n], "logs", "20"), NODES),
                    strict=True,
                )
            )
        total = time.perf_counter() - start
        mismatches = sum(
            1
            for p in compiled.lab["probes"]
            if (codes.get(f"{pods[p['from']]['netns']} {url_of(pods, p)}") == "200") != p["allowed"]
        )
        blocked = sum(e["wanted"] for e in evidence.values())
        found = sum(e["seen"] for e in evidence.values())
        print(
            f"container lab: {len(compiled.lab['probes'])} probes over 2 nodes in "
            f"{probe_seconds:.2f} s; with every blocked probe's evidence on its node: "
            f"{total:.2f} s "
            f"({found}/{blocked} blocked probes with a line; per node {evidence})"
        )
        if mismatches:
            print(f"container lab: {mismatches} probe(s) whose curl result differs from the model")
    finally:
        for container in containers.values():
            subprocess.run(["podman", "rm", "-f", container], capture_output=True, check=False)
        subprocess.run(["podman", "network", "rm", network], capture_output=True, check=False)


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
