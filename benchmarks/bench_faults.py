"""Faults and floods on a node's drop logging. Prints figures; asserts nothing.

Needs root, podman and the project image (scripts/setup.sh builds it); run it under the
machine-wide lock: `flock /tmp/k3s-netpol-root.lock python benchmarks/bench_faults.py`.

One privileged systemd container (`k3s-netpol-bench-faults`, removed at the end) is the node:
ulogd2 is installed and configured by the project's playbooks/ulogd.yml (the ulogd2 role: NFLOG
group 100, LOGEMU with sync=1, logrotate, systemd Restart=on-failure), with
`ulogd2_netlink_qthreshold: 1`. A network namespace `pod` is the pod; its packets to the node go
through a pod chain laid out like the lab's and kube-router's: ACCEPT established, MARK 0x10000
for what a policy allows (TCP 80), then for unmarked packets a rate-limited NFLOG rule on group
100 and REJECT. UDP 82 stands for a policy annotated `kube-router.io/netpol-nflog-limit:
1000/second` (so every drop of the streams below is logged); TCP 81 has kube-router's default
limit, 10/minute with a burst of 10.

(a) ulogd2 killed -9 while 200 drops a second stream in: how long until systemd has it back,
    and which lines are lost (each datagram has its own source port, so every line is known).
(b) logrotate forced three times during a stream: lines counted across the rotated files.
(c) blocked SYNs at full speed from the pod for --flood-seconds (default 60): log growth
    against the limit's bound, ulogd2 still the same process, and allowed curls' latency
    (p50/p99) before and during the flood.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from k3s_netpol.runner import run_playbook  # noqa: E402

IMAGE = "localhost/k3s-netpol-debian12:latest"
NAME = "k3s-netpol-bench-faults"
LOG = "/var/log/ulog/syslogemu.log"

# Runs inside the container as root: the pod, its chain, a web server; then the three parts.
# Prints one JSON document of figures.
IN_CONTAINER = r"""
import json, os, statistics, subprocess, sys, threading, time

FLOOD_SECONDS = float(sys.argv[1])
LOG = "/var/log/ulog/syslogemu.log"
NODE, POD = "10.99.0.1", "10.99.0.2"
STREAM_RATE, STREAM_SECONDS = 200, 8

def sh(command, check=True):
    return subprocess.run(command, shell=True, check=check, capture_output=True, text=True).stdout

sh("ip netns add pod")
sh("ip link add veth-pod type veth peer name eth0 netns pod")
sh(f"ip addr add {NODE}/24 dev veth-pod && ip link set veth-pod up")
sh(f"ip -n pod addr add {POD}/24 dev eth0 && ip -n pod link set eth0 up")
sh("ip -n pod link set lo up")
chain = "KUBE-POD-FW-BENCH"
unmarked = "-m mark ! --mark 0x10000/0x10000"
nflog = "-j NFLOG --nflog-group 100"
for rule in [
    f"-N {chain}",
    f"-I INPUT -i veth-pod -j {chain}",
    f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    f"-A {chain} -p tcp --dport 80 -j MARK --set-xmark 0x10000/0x10000",
    f"-A {chain} -p udp --dport 82 {unmarked} -m limit --limit 1000/s --limit-burst 1000 {nflog}",
    f"-A {chain} -p tcp --dport 81 {unmarked} -m limit --limit 10/min --limit-burst 10 {nflog}",
    f"-A {chain} {unmarked} -j REJECT",
    f"-A {chain} -j ACCEPT",
]:
    sh(f"iptables {rule}")
web = subprocess.Popen(["python3", "-m", "http.server", "80", "--bind", NODE],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def main_pid():
    return int(sh("systemctl show -p MainPID --value ulogd2").strip() or 0)

def active():
    return sh("systemctl is-active ulogd2", check=False).strip() == "active"

def log_files():
    names = sorted(n for n in os.listdir("/var/log/ulog") if n.startswith("syslogemu.log"))
    return [os.path.join("/var/log/ulog", n) for n in names]

def read_all(path):
    if path.endswith(".gz"):
        return sh(f"zcat {path}")
    with open(path, errors="replace") as stream:
        return stream.read()

def stream_ports(first):
    # Source ports of the stream's logged datagrams (DPT=82), across every log file.
    ports = set()
    for path in log_files():
        for line in read_all(path).splitlines():
            if " DPT=82 " in line:
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                port = int(fields.get("SPT", 0))
                if first <= port < first + STREAM_RATE * STREAM_SECONDS:
                    ports.add(port)
    return ports

SENDER = r'''
import json, socket, sys, time
first, rate, seconds, node = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
sent = []
start = time.monotonic()
for i in range(int(rate * seconds)):
    due = start + i / rate
    time.sleep(max(0.0, due - time.monotonic()))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", first + i))
    s.sendto(b"x", (node, 82))
    s.close()
    sent.append(time.monotonic())
print(json.dumps(sent))
'''

def stream(first, during):
    # Stream STREAM_RATE datagrams a second for STREAM_SECONDS; run `during` meanwhile.
    sender = subprocess.Popen(["ip", "netns", "exec", "pod", "python3", "-c", SENDER, str(first),
                               str(STREAM_RATE), str(STREAM_SECONDS), NODE],
                              stdout=subprocess.PIPE, text=True)
    marks = during()
    sent = json.loads(sender.communicate()[0])
    wanted = len(sent)
    deadline, last, seen = time.monotonic() + 10, -1, set()
    while time.monotonic() < deadline:
        seen = stream_ports(first)
        if len(seen) == wanted or (len(seen) == last and time.monotonic() > deadline - 7):
            break
        last = len(seen)
        time.sleep(0.5)
    return sent, seen, marks

figures = {}
time.sleep(0.5)

# (a) kill -9 during a stream.
def kill_during():
    time.sleep(3)
    old = main_pid()
    killed = time.monotonic()
    os.kill(old, 9)
    while True:
        pid = main_pid()
        if pid and pid != old and active():
            return {"old": old, "new": pid, "killed": killed, "back": time.monotonic()}
        if time.monotonic() - killed > 30:
            return {"old": old, "new": pid, "killed": killed, "back": None}
        time.sleep(0.01)

sent, seen, marks = stream(30000, kill_during)
lost = [sent[i] - marks["killed"] for i in range(len(sent)) if 30000 + i not in seen]
back = marks["back"]
gap_end = 1e18 if back is None else back - marks["killed"] + 0.5
figures["a"] = {
    "sent": len(sent),
    "logged": len(seen),
    "lost": len(lost),
    "restart_seconds": None if back is None else back - marks["killed"],
    "lost_before_kill": sum(1 for t in lost if t < -0.05),
    "lost_in_gap": sum(1 for t in lost if -0.05 <= t <= gap_end),
    "lost_after_gap": sum(1 for t in lost if t > gap_end),
    "gap_span": [round(lost[0], 3), round(lost[-1], 3)] if lost else None,
    "pid_changed": marks["new"] != marks["old"],
}

# (b) logrotate forced three times during a stream.
def rotate_during():
    rotations = 0
    for _ in range(3):
        time.sleep(2)
        sh("logrotate -f /etc/logrotate.d/ulogd2")
        rotations += 1
    return {"rotations": rotations, "files": log_files()}

sent, seen, marks = stream(40000, rotate_during)
figures["b"] = {
    "sent": len(sent),
    "logged": len(seen),
    "lost": len(sent) - len(seen),
    "rotations": marks["rotations"],
    "files": [os.path.basename(p) for p in log_files()],
}

# (c) blocked SYNs at full speed for FLOOD_SECONDS.
FLOOD = r'''
import socket, struct, sys, time
node, pod, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
packets = []
for sport in range(20000, 21024):
    header = struct.pack("!HHIIBBHHH", sport, 81, sport * 7919, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(pod) + socket.inet_aton(node) + struct.pack("!BBH", 0, 6, len(header))
    packets.append(header[:16] + struct.pack("!H", checksum(pseudo + header)) + header[18:])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
end, sent = time.monotonic() + seconds, 0
while time.monotonic() < end:
    for packet in packets:
        try:
            s.sendto(packet, (node, 0))
            sent += 1
        except OSError:
            pass
print(sent)
'''

CURL = f"ip netns exec pod curl -s -o /dev/null -m 5 -w '%{{time_total}} %{{http_code}}' http://{NODE}/"

def curl_times(count=None, until=None, pause=0.05):
    times = []
    while len(times) < (count or 0) or (until is not None and time.monotonic() < until):
        out = sh(CURL, check=False)
        seconds, _, code = out.partition(" ")
        times.append(float(seconds) if code == "200" else float("inf"))
        time.sleep(pause)
    return times

def percentiles(times):
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"n": len(ordered), "p50_ms": pick(0.50) * 1000, "p99_ms": pick(0.99) * 1000,
            "failed": sum(1 for t in ordered if t == float("inf"))}

def flood_lines():
    return sum(read_all(p).count(" DPT=81 ") for p in log_files())

def log_bytes():
    return sum(os.path.getsize(p) for p in log_files())

before = percentiles(curl_times(count=100))
pid_before, lines_before, bytes_before = main_pid(), flood_lines(), log_bytes()
started = time.monotonic()
flood = subprocess.Popen(["ip", "netns", "exec", "pod", "python3", "-c", FLOOD, NODE, POD,
                          str(FLOOD_SECONDS)], stdout=subprocess.PIPE, text=True)
time.sleep(1)
during = percentiles(curl_times(until=started + FLOOD_SECONDS - 0.5))
syns = int(flood.communicate()[0])
elapsed = time.monotonic() - started
time.sleep(1.5)
lines = flood_lines() - lines_before
figures["c"] = {
    "seconds": elapsed,
    "syns": syns,
    "lines": lines,
    "bound": 10 + elapsed * 10 / 60,
    "bytes": log_bytes() - bytes_before,
    "same_pid": main_pid() == pid_before,
    "active": active(),
    "restarts": sh("systemctl show -p NRestarts --value ulogd2").strip(),
    "curl_before": before,
    "curl_during": during,
}
web.kill()
print(json.dumps(figures))
"""


def podman(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["podman", *args], input=stdin, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}: {result.stderr.strip()}")
    return result.stdout


def missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("podman") is None:
        return "needs podman"
    if subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode:
        return f"needs the image {IMAGE} (scripts/setup.sh builds it)"
    return None


def boot() -> None:
    podman("rm", "-f", NAME, check=False)
    podman("run", "-d", "--name", NAME, "--privileged", "--systemd=always", IMAGE, "/sbin/init")
    deadline = time.monotonic() + 60
    while podman("exec", NAME, "systemctl", "is-system-running", check=False).strip() not in (
        "running",
        "degraded",
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{NAME}: systemd did not finish booting within 60 s")
        time.sleep(0.2)


def install_ulogd2() -> None:
    inventory = {
        "lab": {
            "hosts": {
                NAME: {
                    "ansible_connection": "containers.podman.podman",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "ansible_become": False,
                    "ulogd2_netlink_qthreshold": 1,
                }
            }
        }
    }
    start = time.perf_counter()
    result = run_playbook("playbooks/ulogd.yml", inventory=inventory, timeout=900)
    if not result.ok:
        raise RuntimeError(result.summary())
    print(f"ulogd2 installed by playbooks/ulogd.yml in {time.perf_counter() - start:.1f} s")
    restart = podman("exec", NAME, "systemctl", "show", "-p", "Restart,RestartUSec", "ulogd2")
    print(f"ulogd2 unit: {' '.join(restart.split())}")


def report(figures: dict[str, dict[str, object]]) -> None:
    a, b, c = figures["a"], figures["b"], figures["c"]
    restart = a["restart_seconds"]
    print(
        f"(a) kill -9 during {a['sent']} drops at 200/s: ulogd2 back in "
        f"{'never (30 s)' if restart is None else f'{restart:.2f} s'} "
        f"(new pid: {a['pid_changed']}); {a['lost']} lines lost: {a['lost_in_gap']} sent in the "
        f"gap (kill to active + 0.5 s), {a['lost_before_kill']} before it, "
        f"{a['lost_after_gap']} after it; lost span relative to the kill: {a['gap_span']}"
    )
    print(
        f"(b) logrotate -f x{b['rotations']} during {b['sent']} drops: {b['logged']} lines "
        f"across {', '.join(map(str, b['files']))} ({b['lost']} lost)"
    )
    before, during = c["curl_before"], c["curl_during"]
    assert isinstance(before, dict)
    assert isinstance(during, dict)
    print(
        f"(c) {c['syns']} blocked SYNs in {c['seconds']:.1f} s "
        f"({c['syns'] / c['seconds']:.0f}/s): {c['lines']} log lines (limit bound "
        f"{c['bound']:.1f}), log grew {c['bytes']} bytes; ulogd2 same process: {c['same_pid']}, "
        f"active: {c['active']}, systemd restarts so far (one is (a)'s): {c['restarts']}"
    )
    print(
        f"    allowed curls before: p50 {before['p50_ms']:.1f} ms, p99 {before['p99_ms']:.1f} ms "
        f"(n={before['n']}, failed {before['failed']}); during: p50 {during['p50_ms']:.1f} ms, "
        f"p99 {during['p99_ms']:.1f} ms (n={during['n']}, failed {during['failed']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--flood-seconds",
        type=float,
        default=60.0,
        help="how long (c) floods blocked SYNs (default 60)",
    )
    args = parser.parse_args()
    reason = missing_requirements()
    if reason:
        print(f"faults and floods: skipped ({reason})")
        return
    default_conf = ROOT / ".cache" / "containers.conf"
    if "CONTAINERS_CONF" not in os.environ and default_conf.is_file():
        os.environ["CONTAINERS_CONF"] = str(default_conf)
    try:
        boot()
        install_ulogd2()
        output = podman(
            "exec", "-i", NAME, "python3", "-", str(args.flood_seconds), stdin=IN_CONTAINER
        )
        report(json.loads(output.strip().splitlines()[-1]))
    finally:
        podman("rm", "-f", NAME, check=False)


if __name__ == "__main__":
    main()
