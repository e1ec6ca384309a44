"""`k3s-netpol logs` on 1,000,000 LOGEMU lines beside the shell pipeline a user would write.

Prints figures, asserts nothing. Usage: python benchmarks/bench_logs.py [LINES]
The pipeline: awk pulling SRC/DST/PROTO/DPT | sort | uniq -c | sort -rn.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NAMESPACES = ("tenant-a", "tenant-b", "tenant-c", "monitoring", "ingress", "kube-system")
POLICIES = ("deny-by-default", "allow-same-namespace", "allow-monitoring", "allow-ingress")


def _line(
    stamp: str,
    node: str,
    prefix: str,
    src: str,
    dst: str,
    proto: str,
    sport: int,
    dport: int,
    ip_id: int,
    seq: int,
    mark: str,
) -> str:
    head = f"{stamp} {node} {prefix} IN=cni0 OUT=cni0 MAC=da:f6:6e:6e:f9:ce:ae:66:8d:d5:f8:d1:08:00"
    ip = f"SRC={src} DST={dst} LEN=60 TOS=00 PREC=0x00 TTL=64 ID={ip_id} DF"
    if proto == "TCP":
        tail = (
            f"PROTO=TCP SPT={sport} DPT={dport} SEQ={seq} ACK=0 WINDOW=64240 SYN URGP=0 MARK={mark}"
        )
    else:
        tail = f"PROTO=UDP SPT={sport} DPT={dport} LEN=40 MARK={mark}"
    return f"{head} {ip} {tail}\n"


def synthetic_lines(count: int, seed: int = 7) -> Iterator[str]:
    """Realistic kube-router drops: per-policy lines then the pod-chain line, some false drops."""
    rng = random.Random(seed)
    pods = [f"10.42.{node}.{host}" for node in range(3) for host in range(2, 60)]
    flows = [
        (rng.choice(pods), rng.choice(pods), *rng.choice((("TCP", 80), ("TCP", 8080), ("UDP", 53))))
        for _ in range(3000)
    ]
    weights = [1.0 / (rank + 1) for rank in range(len(flows))]
    written = 0
    second = 0
    while written < count:
        second += 1
        stamp = f"{MONTHS[(second // 2_000_000) % 12]} {1 + (second // 86400) % 28:2d} " + (
            f"{(second // 3600) % 24:02d}:{(second // 60) % 60:02d}:{second % 60:02d}"
        )
        for src, dst, proto, dport in rng.choices(flows, weights, k=50):
            node = f"k3s-node-{dst.split('.')[2]}"
            namespace = NAMESPACES[int(dst.split(".")[3]) % len(NAMESPACES)]
            ip_id = rng.randrange(65536)
            seq = rng.randrange(2**32) if proto == "TCP" else 0
            sport = rng.randrange(32768, 61000)
            mark = rng.choice(("0x0", "0x20000", "20000", "0"))
            policies = rng.sample(POLICIES, rng.choice((1, 1, 2)))
            real = rng.random() < 0.9
            for policy in policies:
                prefix = f"DROP by policy {namespace}/{policy}"
                yield _line(stamp, node, prefix, src, dst, proto, sport, dport, ip_id, seq, mark)
                written += 1
            if real:
                yield _line(stamp, node, "", src, dst, proto, sport, dport, ip_id, seq, mark)
                written += 1
            if written >= count:
                return


def write_synthetic(path: Path, count: int, seed: int = 7) -> None:
    with open(path, "w", encoding="utf-8") as out:
        lines = synthetic_lines(count, seed)
        for _ in range(count):
            out.write(next(lines))


def _timed(command: list[str] | str, shell: bool = False) -> tuple[float, int]:
    start = time.perf_counter()
    completed = subprocess.run(
        command, shell=shell, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False
    )
    return time.perf_counter() - start, len(completed.stdout)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    cli = [sys.executable, "-m", "k3s_netpol", "logs"]
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env_path}"
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as workdir:
        log = Path(workdir) / "syslogemu.log"
        start = time.perf_counter()
        write_synthetic(log, count)
        print(
            f"generated {count:,} LOGEMU lines ({log.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - start:.1f} s"
        )
        awk = (
            'awk \'{for(i=1;i<=NF;i++){split($i,f,"=");'
            'if(f[1]=="SRC")s=f[2];else if(f[1]=="DST")d=f[2];'
            'else if(f[1]=="PROTO")p=f[2];else if(f[1]=="DPT"){t=f[2];break}}'
            f"print s,d,p,t}}' {log} | sort | uniq -c | sort -rn | head -n 10"
        )
        if shutil.which("awk") is None:
            print("awk not found: pipeline not timed")
        else:
            seconds, _ = _timed(awk, shell=True)
            print(
                f"shell pipeline (awk|sort|uniq -c|sort -rn): {seconds:6.2f} s "
                f"{count / seconds:>12,.0f} lines/s"
            )
        for label, extra in (("logs --summary", ["--summary"]), ("logs --json", ["--json"])):
            seconds, size = _timed([*cli, str(log), *extra])
            print(
                f"k3s-netpol {label:<28} {seconds:6.2f} s {count / seconds:>12,.0f} lines/s "
                f"({size / 1e6:.1f} MB out)"
            )


if __name__ == "__main__":
    main()
