"""`k3s-netpol logs` on 1,000,000 LOGEMU lines of a busy cluster beside the shell pipeline a user
would write.

Prints figures, asserts nothing. Usage: python benchmarks/bench_logs.py [LINES [ROUNDS]]
Times, interleaved in the same run, `logs --summary`, `logs --json` and two shell pipelines
(awk pulling SRC/DST/PROTO/DPT | sort | uniq -c | sort -rn, written with a field loop and with
match()); the faster pipeline is "the shell pipeline". Wall time is what a user waits; CPU time
(every process of the command) shows what a loaded machine hides. The load average is printed.
"""

from __future__ import annotations

import itertools
import os
import random
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NODES = 5
PODS_PER_NODE = 120
FLOWS = 120_000
NAMESPACES = ("tenant-a", "tenant-b", "tenant-c", "monitoring", "ingress", "kube-system")
POLICIES = ("deny-by-default", "allow-same-namespace", "allow-monitoring", "allow-ingress")
PORTS = (("TCP", 80), ("TCP", 443), ("TCP", 8080), ("TCP", 5432), ("TCP", 6379), ("UDP", 53))
MAC = "MAC=da:f6:6e:6e:f9:ce:ae:66:8d:d5:f8:d1:08:00"


def _line(
    stamp: str,
    node: str,
    prefix: str,
    interfaces: str,
    src: str,
    dst: str,
    proto: str,
    sport: int,
    dport: int,
    ip_id: int,
    seq: int,
    mark: str,
) -> str:
    ip = f"SRC={src} DST={dst} LEN=60 TOS=00 PREC=0x00 TTL=63 ID={ip_id} DF"
    if proto == "TCP":
        tail = (
            f"PROTO=TCP SPT={sport} DPT={dport} SEQ={seq} ACK=0 WINDOW=64240 SYN URGP=0 MARK={mark}"
        )
    else:
        tail = f"PROTO=UDP SPT={sport} DPT={dport} LEN=40 MARK={mark}"
    return f"{stamp} {node} {prefix} {interfaces} {MAC} {ip} {tail}\n"


def _packet(
    fields: tuple[str, str, str, str, str, str, int, int],
    prefixes: tuple[str, ...],
    ip_id: int,
    seq: int,
    mark: str,
) -> list[str]:
    """The lines one packet leaves, one per prefix; fields: stamp, node, interfaces, source,
    destination, protocol, source port, destination port."""
    stamp, node, interfaces, source, destination, proto, sport, dport = fields
    return [
        _line(
            stamp,
            node,
            prefix,
            interfaces,
            source,
            destination,
            proto,
            sport,
            dport,
            ip_id,
            seq,
            mark,
        )
        for prefix in prefixes
    ]


def _stamp(second: int) -> str:
    day, rest = divmod(second, 86400)
    return (
        f"{MONTHS[(day // 28) % 12]} {1 + day % 28:2d} "
        f"{rest // 3600:02d}:{(rest // 60) % 60:02d}:{rest % 60:02d}"
    )


def synthetic_lines(count: int, seed: int = 7) -> Iterator[str]:
    """A busy cluster's drop log, as kube-router and ulogd2 write it (see docs/logs.md facts):

    NODES nodes of PODS_PER_NODE pods, FLOWS distinct flows (source, destination, protocol,
    port) drawn with a long tail; every packet has its own IP ID, source port and TCP SEQ. A
    real drop leaves one `DROP by policy` line per selecting policy, then the pod chain's
    unprefixed line; a false drop (another policy allows it) leaves only the policy lines, and
    when source and destination share a node (bridged) each of them twice (two passes, same IP
    ID and SEQ). A blocked SYN is retransmitted (same SEQ and port, new IP ID) now and then.
    Lines are written on the destination's node (IN=flannel.1 when routed from another node);
    half the nodes print the mark as MARK=20000, the others as MARK=0x20000.
    """
    rng = random.Random(seed)
    pods = [
        (node, f"10.42.{node}.{host}")
        for node in range(NODES)
        for host in range(2, 2 + PODS_PER_NODE)
    ]
    flows = []
    for _ in range(FLOWS):
        (source_node, source), (node, destination) = rng.choice(pods), rng.choice(pods)
        proto, port = rng.choice(PORTS)
        namespace = NAMESPACES[int(destination.split(".")[3]) % len(NAMESPACES)]
        policies = tuple(
            f"DROP by policy {namespace}/{policy}"
            for policy in rng.sample(POLICIES, rng.choice((1, 1, 2)))
        )
        interfaces = "IN=cni0 OUT=cni0" if source_node == node else "IN=flannel.1 OUT=cni0"
        flows.append(
            (
                source,
                destination,
                proto,
                port,
                policies,
                f"k3s-node-{node}",
                interfaces,
                node,
                source_node == node,
            )
        )
    weights = list(itertools.accumulate((rank + 10) ** -0.4 for rank in range(FLOWS)))
    written = 0
    second = 0
    pending: list[str] = []  # SYN retransmissions, written a little later
    while written < count:
        second += 1
        stamp = _stamp(second)
        batch: list[str] = pending
        pending = []
        for flow in rng.choices(flows, cum_weights=weights, k=400):
            source, destination, proto, port, policies, node, interfaces, node_index, bridged = flow
            tcp = proto == "TCP"
            sport = rng.randrange(32768, 61000)
            seq = rng.randrange(2**32) if tcp else 0
            zero, passed = ("0", "20000") if node_index % 2 else ("0x0", "0x20000")
            mark = passed if rng.random() < 0.3 else zero
            fields = (stamp, node, interfaces, source, destination, proto, sport, port)
            if rng.random() < 0.7:  # a real drop, perhaps retransmitted
                for attempt in range(1 + (rng.random() < 0.3 if tcp else 0) * rng.choice((1, 2))):
                    lines = _packet(fields, (*policies, ""), rng.randrange(65536), seq, mark)
                    (batch if attempt == 0 else pending).extend(lines)
            else:  # a false drop: another policy allows it; bridged packets pass twice
                lines = _packet(fields, policies[:1], rng.randrange(65536), seq, mark)
                batch.extend(lines * 2 if bridged else lines)
        # Packets from several CPUs: a few neighbours swap places.
        for index in range(0, len(batch) - 1, 7):
            if rng.random() < 0.1:
                batch[index], batch[index + 1] = batch[index + 1], batch[index]
        for line in batch:
            yield line
            written += 1
            if written >= count:
                return


def write_synthetic(path: Path, count: int, seed: int = 7) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(synthetic_lines(count, seed))


# What a user would type: a field loop, and match() on the whole line (faster in mawk and gawk).
AWK_FIELD_LOOP = (
    'awk \'{for(i=1;i<=NF;i++){split($i,f,"=");'
    'if(f[1]=="SRC")s=f[2];else if(f[1]=="DST")d=f[2];'
    'else if(f[1]=="PROTO")p=f[2];else if(f[1]=="DPT"){t=f[2];break}}'
    "print s,d,p,t}' {log} | sort | uniq -c | sort -rn | head -n 10"
)
AWK_MATCH = (
    'awk \'{s=d=p=t="";'
    "if(match($0,/ SRC=[^ ]+/))s=substr($0,RSTART+5,RLENGTH-5);"
    "if(match($0,/ DST=[^ ]+/))d=substr($0,RSTART+5,RLENGTH-5);"
    "if(match($0,/ PROTO=[^ ]+/))p=substr($0,RSTART+7,RLENGTH-7);"
    "if(match($0,/ DPT=[^ ]+/))t=substr($0,RSTART+5,RLENGTH-5);"
    "print s,d,p,t}' {log} | sort | uniq -c | sort -rn | head -n 10"
)


class Timing:
    def __init__(self, label: str) -> None:
        self.label = label
        self.wall = float("inf")  # best of the rounds
        self.cpu = float("inf")  # user + system of every process it ran, best of the rounds
        self.output_bytes = 0


def _run(command: list[str] | str, out_path: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(out_path, "wb") as out:
        subprocess.run(
            command,
            shell=isinstance(command, str),
            stdout=out,
            stderr=subprocess.DEVNULL,
            check=True,
        )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    cli = [sys.executable, "-m", "k3s_netpol", "logs"]
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env_path}"
    print(f"nice {os.nice(0)}; {_load()} (other work on the machine slows every figure)")
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as workdir:
        log = Path(workdir) / "syslogemu.log"
        out_path = Path(workdir) / "out"
        start = time.perf_counter()
        write_synthetic(log, count)
        print(
            f"generated {count:,} LOGEMU lines ({log.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - start:.1f} s"
        )
        commands: list[tuple[Timing, list[str] | str]] = []
        if shutil.which("awk") is None:
            print("awk not found: the shell pipelines are not timed")
        else:
            commands.append((Timing("awk field loop|sort|uniq -c|sort -rn"), AWK_FIELD_LOOP))
            commands.append((Timing("awk match()|sort|uniq -c|sort -rn"), AWK_MATCH))
        commands.append((Timing("k3s-netpol logs --summary"), [*cli, str(log), "--summary"]))
        commands.append((Timing("k3s-netpol logs --json"), [*cli, str(log), "--json"]))
        for _ in range(rounds):  # interleaved, so that load changes hit every command alike
            for timing, command in commands:
                if isinstance(command, str):
                    command = command.replace("{log}", shlex.quote(str(log)))
                wall, cpu = _run(command, out_path)
                timing.wall = min(timing.wall, wall)
                timing.cpu = min(timing.cpu, cpu)
                timing.output_bytes = out_path.stat().st_size
        print(f"best of {rounds} rounds; {_load()}")
        print(f"{'':40} {'wall s':>7} {'lines/s':>11} {'cpu s':>7} {'lines/cpu-s':>12}")
        for timing, _ in commands:
            print(
                f"{timing.label:40} {timing.wall:7.2f} {count / timing.wall:>11,.0f} "
                f"{timing.cpu:7.2f} {count / timing.cpu:>12,.0f}"
                + (f"  ({timing.output_bytes / 1e6:.0f} MB out)" if "json" in timing.label else "")
            )
        shells = [timing for timing, command in commands if isinstance(command, str)]
        summary = next(timing for timing, _ in commands if "summary" in timing.label)
        events = next(timing for timing, _ in commands if "json" in timing.label)
        if shells:
            shell = min(shells, key=lambda timing: timing.wall)
            print(
                f"the shell pipeline (the faster awk: {shell.label.split('|')[0]}): "
                f"{count / shell.wall:,.0f} lines/s; logs --summary is "
                f"{shell.wall / summary.wall:.2f}x its speed (goal: at least 1.00x)"
            )
        print(f"logs --json: {count / events.wall:,.0f} lines/s (goal: at least 250,000)")


if __name__ == "__main__":
    main()
