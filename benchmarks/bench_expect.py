"""Time `k3s-netpol expect` as a user runs it (prints figures, asserts nothing).

Each run is the command a user types, in its own process, output written to a file:

    k3s-netpol expect -f snapshot.yaml -o json > probes.json

with its wall time and its own peak RSS (os.wait4's rusage of that child). The snapshot is shaped
like `kubectl get ns,pods,networkpolicies -A -o yaml` on a K3s cluster (one `kind: List`, every
object with the metadata, spec and status kubectl prints): kube-system's add-ons, the Completed
helm-install pods, a hostNetwork node-exporter per node, then tenant namespaces of 50 pods
(deployments of identical replicas, every pod serving TCP 8080 named `http`, every tenth also
TCP 9100 `metrics`, a few finished job pods), and per namespace ten policies mixing deny-all,
same-namespace, namespaceSelector with matchExpressions, named ports, endPort ranges, ipBlock
with except, and egress rules. The same sizes give the same file on every run.

    python benchmarks/bench_expect.py                      # 1,000 x 200 and 3,000 x 600
    python benchmarks/bench_expect.py --size 500x100 --output summary
    python benchmarks/bench_expect.py --snapshot-format json          # kubectl -o json
    python benchmarks/bench_expect.py --command "python -m k3s_netpol"   # another build
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import yaml

DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
NODES = 3
PODS_PER_NAMESPACE = 50
TIERS = ("web", "api", "db", "cache", "batch")
CREATED = "2026-11-20T09:14:02Z"


def generate(pod_count: int, policy_count: int) -> dict[str, Any]:
    """The snapshot as one `kind: List`: namespaces, pods, then policies."""
    namespace_count = max(1, pod_count // PODS_PER_NAMESPACE)
    namespaces = [_namespace("kube-system", {})] + [
        _namespace(f"tenant-{n:02d}", {"team": f"team-{n % 4}"}) for n in range(namespace_count)
    ]
    pods = _k3s_system_pods()
    for p in range(pod_count):
        namespace = f"tenant-{p % namespace_count:02d}"
        deployment = f"app-{p % 7}-{TIERS[p % len(TIERS)]}"
        ports = [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]
        if p % 10 == 0:
            ports.append({"containerPort": 9100, "name": "metrics", "protocol": "TCP"})
        labels = {
            "app": f"app-{p % 7}",
            "app.kubernetes.io/name": deployment,
            "pod-template-hash": "7d9f8c6b5",
            "tier": TIERS[p % len(TIERS)],
        }
        phase = "Succeeded" if p % 97 == 0 else "Running"
        pods.append(
            _pod(namespace, f"{deployment}-7d9f8c6b5-{p:05x}", labels, ports, p, phase=phase)
        )
    policies = [
        _object(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            {"name": f"policy-{q:03d}", "namespace": f"tenant-{q % namespace_count:02d}"},
            spec=_policy_spec(q),
        )
        for q in range(policy_count)
    ]
    return {
        "apiVersion": "v1",
        "items": [*namespaces, *pods, *policies],
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }


def _object(api: str, kind: str, metadata: dict[str, Any], **rest: Any) -> dict[str, Any]:
    number = zlib.crc32(f"{metadata.get('namespace')}/{metadata['name']}".encode())
    metadata = {
        "creationTimestamp": CREATED,
        "resourceVersion": str(1000 + number % 90_000),
        "uid": f"5b1c{number % 65536:04x}-8c1e-4d7a-9f3e-2a6b{number % 2**32:08x}",
        **metadata,
    }
    return {"apiVersion": api, "kind": kind, "metadata": metadata, **rest}


def _namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return _object(
        "v1",
        "Namespace",
        {"labels": {"kubernetes.io/metadata.name": name, **labels}, "name": name},
        spec={"finalizers": ["kubernetes"]},
        status={"phase": "Active"},
    )


def _pod(
    namespace: str,
    name: str,
    labels: dict[str, str],
    ports: list[dict[str, Any]],
    number: int,
    *,
    phase: str = "Running",
    host_network: bool = False,
) -> dict[str, Any]:
    node = number % NODES
    host_ip = f"192.168.122.{11 + node}"
    pod_ip = host_ip if host_network else f"10.42.{node}.{number // NODES % 250 + 2}"
    container = {
        "env": [{"name": "LOG_LEVEL", "value": "info"}],
        "image": "registry.example/app:1.4.2",
        "imagePullPolicy": "IfNotPresent",
        "name": "main",
        "ports": ports,
        "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "50m"}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "volumeMounts": [
            {
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "name": "kube-api-access",
                "readOnly": True,
            }
        ],
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "dnsPolicy": "ClusterFirst",
        "enableServiceLinks": True,
        "nodeName": f"k3s-node-{node}",
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "serviceAccount": "default",
        "serviceAccountName": "default",
        "terminationGracePeriodSeconds": 30,
        "tolerations": [
            {
                "effect": "NoExecute",
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "tolerationSeconds": 300,
            }
        ],
        "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420}}],
    }
    if host_network:
        spec["hostNetwork"] = True
    state = (
        {"terminated": {"exitCode": 0, "reason": "Completed"}}
        if phase == "Succeeded"
        else {"running": {"startedAt": CREATED}}
    )
    status = {
        "conditions": [
            {"lastProbeTime": None, "lastTransitionTime": CREATED, "status": "True", "type": t}
            for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
        ],
        "containerStatuses": [
            {
                "containerID": f"containerd://{number:064x}",
                "image": container["image"],
                "imageID": "registry.example/app@sha256:" + "0" * 64,
                "lastState": {},
                "name": "main",
                "ready": phase == "Running",
                "restartCount": 0,
                "started": phase == "Running",
                "state": state,
            }
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "phase": phase,
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "qosClass": "Burstable",
        "startTime": CREATED,
    }
    metadata = {
        "generateName": name.rsplit("-", 1)[0] + "-",
        "labels": labels,
        "name": name,
        "namespace": namespace,
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "blockOwnerDeletion": True,
                "controller": True,
                "kind": "ReplicaSet",
                "name": name.rsplit("-", 1)[0],
                "uid": "8e0c2a1d-55b3-4f0e-9a7c-1d2e3f4a5b6c",
            }
        ],
    }
    return _object("v1", "Pod", metadata, spec=spec, status=status)


def _k3s_system_pods() -> list[dict[str, Any]]:
    tcp = "TCP"
    pods = [
        _pod(
            "kube-system",
            "coredns-ccb96694c-7xq2m",
            {"k8s-app": "kube-dns"},
            [
                {"containerPort": 53, "name": "dns", "protocol": "UDP"},
                {"containerPort": 53, "name": "dns-tcp", "protocol": tcp},
                {"containerPort": 9153, "name": "metrics", "protocol": tcp},
            ],
            100_000,
        ),
        _pod(
            "kube-system",
            "metrics-server-5985cbc9d7-ds2rb",
            {"k8s-app": "metrics-server"},
            [{"containerPort": 10250, "name": "https", "protocol": tcp}],
            100_001,
        ),
        _pod(
            "kube-system",
            "local-path-provisioner-5cf85fd84d-k8w4n",
            {"app": "local-path-provisioner"},
            [],
            100_002,
        ),
        _pod(
            "kube-system",
            "traefik-5d45fc8cc9-lw7tj",
            {"app.kubernetes.io/name": "traefik"},
            [{"containerPort": 8000, "name": "web", "protocol": tcp}],
            100_003,
        ),
    ]
    for chart, number in (("traefik-crd", 100_004), ("traefik", 100_005)):
        pods.append(
            _pod(
                "kube-system",
                f"helm-install-{chart}-9hx5c",
                {"job-name": f"helm-install-{chart}"},
                [],
                number,
                phase="Succeeded",
            )
        )
    for node in range(NODES):
        pods.append(
            _pod(
                "kube-system",
                f"svclb-traefik-8a1f29c3-{node:05x}",
                {"svccontroller.k3s.cattle.io/svcname": "traefik"},
                [{"containerPort": 80, "hostPort": 80, "name": "lb-tcp-80", "protocol": tcp}],
                100_010 + node,
            )
        )
        pods.append(
            _pod(
                "kube-system",
                f"node-exporter-{node:05x}",
                {"app.kubernetes.io/name": "node-exporter"},
                [{"containerPort": 9100, "hostPort": 9100, "name": "metrics", "protocol": tcp}],
                100_020 + node,
                host_network=True,
            )
        )
    return pods


def _policy_spec(q: int) -> dict[str, Any]:
    tier = TIERS[q % len(TIERS)]
    shape = (q // 20) % 10
    if shape == 0:
        return {"podSelector": {}, "policyTypes": ["Ingress"]}
    if shape == 1:
        return {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
    if shape == 2:
        return {
            "podSelector": {"matchLabels": {"tier": tier}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {
                                        "key": "team",
                                        "operator": "In",
                                        "values": ["team-1", "team-2"],
                                    }
                                ]
                            },
                            "podSelector": {"matchLabels": {"tier": "web"}},
                        }
                    ],
                    "ports": [{"port": "http"}],
                }
            ],
        }
    if shape == 3:
        return {
            "podSelector": {
                "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["app-1"]}]
            },
            "ingress": [{"ports": [{"port": 9000, "endPort": 9200}]}],
        }
    if shape == 4:
        return {
            "podSelector": {"matchLabels": {"tier": tier}},
            "ingress": [
                {"from": [{"ipBlock": {"cidr": "10.42.0.0/16", "except": ["10.42.2.0/24"]}}]}
            ],
        }
    if shape == 5:
        return {
            "podSelector": {"matchLabels": {"tier": tier}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"tier": "db"}}}]},
                {"ports": [{"port": 53, "protocol": "UDP"}]},
            ],
        }
    if shape == 6:
        return {
            "podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
            "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}],
        }
    if shape == 7:
        return {
            "podSelector": {"matchLabels": {"app": f"app-{q % 7}"}},
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"team": f"team-{q % 4}"}}},
                        {"podSelector": {"matchLabels": {"tier": "api"}}},
                    ],
                    "ports": [{"port": 8080}, {"port": "metrics"}],
                }
            ],
        }
    if shape == 8:
        return {
            "podSelector": {"matchExpressions": [{"key": "legacy", "operator": "DoesNotExist"}]},
            "ingress": [{"from": [{"namespaceSelector": {}}]}],
            "policyTypes": ["Ingress"],
        }
    return {"podSelector": {"matchLabels": {"tier": tier}}, "ingress": [{}]}


def run_once(command: list[str], output: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS in MB of one run, stdout to `output`."""
    errors = output.with_suffix(".stderr")
    with output.open("wb") as stdout, errors.open("wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{shlex.join(command)} exited with {code}:\n{errors.read_text()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _installed_command() -> str:
    script = Path(sys.executable).with_name("k3s-netpol")
    return (
        shlex.quote(str(script))
        if script.exists()
        else shlex.join([sys.executable, "-m", "k3s_netpol"])
    )


def write_snapshot(path: Path, size: str) -> None:
    """The snapshot of PODSxPOLICIES as kubectl writes it: -o json for a .json path, else YAML."""
    pods, policies = (int(n) for n in size.split("x"))
    with path.open("w", encoding="utf-8") as stream:
        if path.suffix == ".json":
            json.dump(generate(pods, policies), stream, indent=4, sort_keys=True)
        else:
            yaml.dump(generate(pods, policies), stream, Dumper=DUMPER, sort_keys=True)


def time_phases(snapshot: Path) -> None:
    """CPU seconds of each step of `expect -o json`, in this process (its own, not the CLI's)."""
    from k3s_netpol.model import ClusterIndex, load_manifests, probe_columns
    from k3s_netpol.probe_output import write_probes_json

    started = time.process_time()
    cluster = load_manifests([snapshot])
    loaded = time.process_time()
    index = ClusterIndex(cluster)
    indexed = time.process_time()
    columns = list(probe_columns(index))
    judged = time.process_time()
    with open(os.devnull, "w", encoding="ascii") as sink:
        write_probes_json(sink, [pod.key for pod in cluster.pods], columns, None)
    written = time.process_time()
    pairs = len(cluster.pods) * (len(cluster.pods) - 1)
    print(
        f"  phases (CPU s): load {loaded - started:.2f}, index {indexed - loaded:.2f}, "
        f"verdicts for {pairs:,} pairs x ports {judged - indexed:.2f}, "
        f"JSON to /dev/null {written - judged:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--size",
        action="append",
        metavar="PODSxPOLICIES",
        help="cluster size; repeatable (default: 1000x200 and 3000x600)",
    )
    parser.add_argument(
        "--output",
        action="append",
        choices=["json", "summary", "table"],
        help="expect's -o; repeatable (default: json and summary)",
    )
    parser.add_argument(
        "--command",
        default=_installed_command(),
        help="how to run k3s-netpol (default: the k3s-netpol script beside this Python, "
        "else python -m k3s_netpol)",
    )
    parser.add_argument(
        "--snapshot-format",
        choices=["yaml", "json"],
        default="yaml",
        help="kubectl's -o yaml (default) or -o json",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure (best is printed)")
    parser.add_argument("--write-snapshot", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--time-phases", metavar="PATH", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.write_snapshot:
        write_snapshot(Path(options.write_snapshot), options.size[0])
        return
    if options.time_phases:
        time_phases(Path(options.time_phases))
        return
    sizes = [
        tuple(int(n) for n in size.split("x")) for size in options.size or ["1000x200", "3000x600"]
    ]
    outputs = options.output or ["json", "summary"]

    with tempfile.TemporaryDirectory() as directory:
        for pods, policies in sizes:
            snapshot = Path(directory) / f"snapshot-{pods}.{options.snapshot_format}"
            # Written by another process: Linux starts a child's peak RSS at its parent's RSS
            # when it forks, so this one must stay small for wait4's figure to be the command's.
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--write-snapshot",
                    str(snapshot),
                    "--size",
                    f"{pods}x{policies}",
                ],
                check=True,
            )
            size_mb = snapshot.stat().st_size / 1e6
            print(
                f"{pods} pods x {policies} policies: {options.snapshot_format} snapshot "
                f"{size_mb:.1f} MB"
            )
            if options.command == parser.get_default("command"):
                subprocess.run(
                    [sys.executable, __file__, "--time-phases", str(snapshot)], check=True
                )
            for output in outputs:
                command = [
                    *shlex.split(options.command),
                    "expect",
                    "-f",
                    str(snapshot),
                    "-o",
                    output,
                ]
                result = Path(directory) / f"out-{pods}.{output}"
                runs = [run_once(command, result) for _ in range(options.repeat)]
                wall, cpu, rss = min(runs)
                print(
                    f"  expect -o {output:7s} > file: {wall:6.2f} s wall  {cpu:6.2f} s CPU  "
                    f"{rss:7.1f} MB peak RSS  output {result.stat().st_size / 1e6:7.1f} MB"
                )
                result.unlink()
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
        "(wall above CPU means other processes shared the cores)"
    )


if __name__ == "__main__":
    main()
