#!/usr/bin/python3
"""The lab node's side: pods as network namespaces on a bridge, and loading compiled rules.

Runs on the lab node with the standard library only (the node has python3, iproute2, ipset and
iptables; not the k3s_netpol package). Reads what `k3s-netpol lab compile` wrote:

    netpol_lab_node.py pods LAB_JSON   [--sysctl KEY=VALUE ...] [--check] [--node-netns NS]
                                       [--state-dir DIR]
    netpol_lab_node.py load COMPILED_DIR         [--node-netns NS]
    netpol_lab_node.py down LAB_JSON             [--node-netns NS] [--state-dir DIR]

`pods` makes the bridge, sets the node's sysctls (net.bridge.* exists once a bridge does),
and per pod a network namespace with a veth pair (eth0 in the pod with its IP and a default
route via the bridge; the node side enslaved to the bridge), touching only what is missing or
wrong; namespaces it made for pods no longer listed are removed. With a `flannel` section it
also makes flannel's VXLAN device (flannel.1: VNI, UDP port, MAC, the subnet's .0/32 address)
and, per other node, the route, permanent neighbour and FDB entry flannel's vxlan backend
writes (`<subnet> via <subnet .0> dev flannel.1 onlink`, `<subnet .0> lladdr <MAC>`,
`<MAC> dst <node IP>`). `load`
swaps the ipsets in (ipset restore), replaces the filter table in one transaction
(iptables-restore, after a --test pass), then destroys KUBE-SRC-/KUBE-DST- sets that the new
rules no longer use. Each prints one JSON line: {"changed": bool, "actions": [...]}, and exits
non-zero with a message naming the file and field on bad input, before changing anything.
`--node-netns NS` runs the node's side in network namespace NS instead of the current one (the
pytest suite builds the lab on a bare host that way).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

IPSET_FILE = "ipset.restore"
IPTABLES_FILE = "iptables.rules"
POD_INTERFACE = "eth0"
MANAGED_SET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-")
NETNS_DIR = Path("/run/netns")


class InputError(Exception):
    """Bad input: the message names the file and the field."""


class Node:
    """Runs commands on the node's side (optionally inside a named network namespace)."""

    def __init__(self, netns: str | None, check: bool = False) -> None:
        self.netns = netns
        self.check = check
        self.actions: list[str] = []

    def ip_args(self, namespace: str | None = None) -> list[str]:
        target = namespace if namespace is not None else self.netns
        return ["ip", "-n", target] if target else ["ip"]

    def wrap(self, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *command] if self.netns else command

    @staticmethod
    def run(command: list[str], stdin: str | None = None) -> str:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout

    def change(self, description: str, command: list[str], stdin: str | None = None) -> None:
        self.actions.append(description)
        if not self.check:
            self.run(command, stdin)

    def links(self, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        output = self.run([*self.ip_args(namespace), "-j", "-d", "addr", "show"])
        return {link["ifname"]: link for link in json.loads(output or "[]")}


def read_lab(path: Path) -> dict[str, Any]:
    try:
        lab = json.loads(path.read_text())
    except OSError as error:
        raise InputError(f"{path}: cannot read it: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON: {error}") from error
    if not isinstance(lab, dict):
        raise InputError(f"{path}: expected a JSON object")
    bridge = lab.get("bridge")
    if not isinstance(bridge, dict) or not isinstance(bridge.get("name"), str):
        raise InputError(f"{path}: bridge.name: expected a string")
    try:
        interface = ipaddress.ip_interface(str(bridge.get("address")))
    except ValueError:
        raise InputError(f"{path}: bridge.address: expected address/prefix") from None
    pods = lab.get("pods")
    if not isinstance(pods, list):
        raise InputError(f"{path}: pods: expected a list")
    for index, pod in enumerate(pods):
        where = f"{path}: pods[{index}]"
        if not isinstance(pod, dict):
            raise InputError(f"{where}: expected an object")
        for key in ("netns", "veth", "ip"):
            if not isinstance(pod.get(key), str) or not pod[key]:
                raise InputError(f"{where}.{key}: expected a non-empty string")
        if "/" in pod["netns"] or pod["netns"] in (".", ".."):
            raise InputError(f"{where}.netns: {pod['netns']!r} is not a namespace name")
        if len(pod["veth"]) > 15:
            raise InputError(f"{where}.veth: {pod['veth']!r} is longer than 15 characters")
        try:
            address = ipaddress.ip_address(pod["ip"])
        except ValueError:
            raise InputError(f"{where}.ip: {pod['ip']!r} is not an IP address") from None
        if address not in interface.network:
            raise InputError(f"{where}.ip: {address} is outside {interface.network}")
    flannel = lab.get("flannel")
    if flannel is not None:
        check_flannel(path, flannel)
    return lab


def check_flannel(path: Path, flannel: Any) -> None:
    if not isinstance(flannel, dict):
        raise InputError(f"{path}: flannel: expected an object or null")
    for key in ("device", "mac", "address", "local"):
        if not isinstance(flannel.get(key), str) or not flannel[key]:
            raise InputError(f"{path}: flannel.{key}: expected a non-empty string")
    for key in ("vni", "port"):
        if not isinstance(flannel.get(key), int) or isinstance(flannel[key], bool):
            raise InputError(f"{path}: flannel.{key}: expected an integer")
    try:
        ipaddress.ip_interface(flannel["address"])
        ipaddress.ip_address(flannel["local"])
    except ValueError as error:
        raise InputError(f"{path}: flannel: {error}") from None
    remotes = flannel.get("remotes")
    if not isinstance(remotes, list):
        raise InputError(f"{path}: flannel.remotes: expected a list")
    for index, remote in enumerate(remotes):
        where = f"{path}: flannel.remotes[{index}]"
        if not isinstance(remote, dict):
            raise InputError(f"{where}: expected an object")
        for key in ("subnet", "gateway", "mac", "node_ip"):
            if not isinstance(remote.get(key), str) or not remote[key]:
                raise InputError(f"{where}.{key}: expected a non-empty string")
        try:
            ipaddress.ip_network(remote["subnet"])
            ipaddress.ip_address(remote["gateway"])
            ipaddress.ip_address(remote["node_ip"])
        except ValueError as error:
            raise InputError(f"{where}: {error}") from None


def has_address(link: dict[str, Any] | None, interface: str) -> bool:
    if link is None:
        return False
    wanted = ipaddress.ip_interface(interface)
    return any(
        ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}") == wanted
        for info in link.get("addr_info", [])
        if "local" in info
    )


def ensure_bridge(node: Node, name: str, address: str) -> None:
    link = node.links().get(name)
    ip = node.ip_args()
    if link is None:
        node.change(f"create bridge {name}", [*ip, "link", "add", name, "type", "bridge"])
    if not has_address(link, address):
        node.change(f"address {name} {address}", [*ip, "addr", "replace", address, "dev", name])
    if link is None or "UP" not in link.get("flags", []):
        node.change(f"bring {name} up", [*ip, "link", "set", name, "up"])


def ensure_pod(node: Node, pod: dict[str, Any], bridge: str, bridge_address: str) -> None:
    netns, veth = pod["netns"], pod["veth"]
    gateway = str(ipaddress.ip_interface(bridge_address).ip)
    prefix = ipaddress.ip_interface(bridge_address).network.prefixlen
    pod_address = f"{pod['ip']}/{prefix}"
    exists = (NETNS_DIR / netns).exists()
    if not exists:
        node.change(f"create netns {netns}", ["ip", "netns", "add", netns])
    pod_links = node.links(netns) if exists else {}
    node_link = node.links().get(veth)
    if node_link is None or POD_INTERFACE not in pod_links:
        if node_link is not None:
            node.change(f"remove stale {veth}", [*node.ip_args(), "link", "del", veth])
        node.change(
            f"create veth {veth} <-> {netns}:{POD_INTERFACE}",
            [
                *node.ip_args(),
                "link",
                "add",
                veth,
                "type",
                "veth",
                "peer",
                "name",
                POD_INTERFACE,
                "netns",
                netns,
            ],
        )
        node_link, pod_links = None, {}
    if node_link is None or node_link.get("master") != bridge:
        node.change(
            f"attach {veth} to {bridge}", [*node.ip_args(), "link", "set", veth, "master", bridge]
        )
    if node_link is None or "UP" not in node_link.get("flags", []):
        node.change(f"bring {veth} up", [*node.ip_args(), "link", "set", veth, "up"])
    pod_ip = node.ip_args(netns)
    lo = pod_links.get("lo")
    if lo is None or "UP" not in lo.get("flags", []):
        node.change(f"bring {netns}:lo up", [*pod_ip, "link", "set", "lo", "up"])
    eth = pod_links.get(POD_INTERFACE)
    if not has_address(eth, pod_address):
        node.change(
            f"address {netns}:{POD_INTERFACE} {pod_address}",
            [*pod_ip, "addr", "replace", pod_address, "dev", POD_INTERFACE],
        )
    if eth is None or "UP" not in eth.get("flags", []):
        node.change(
            f"bring {netns}:{POD_INTERFACE} up", [*pod_ip, "link", "set", POD_INTERFACE, "up"]
        )
    routes = (
        []
        if eth is None
        else json.loads(node.run([*pod_ip, "-j", "route", "show", "default"]) or "[]")
    )
    if not any(route.get("gateway") == gateway for route in routes):
        node.change(
            f"default route {netns} via {gateway}",
            [*pod_ip, "route", "replace", "default", "via", gateway, "dev", POD_INTERFACE],
        )


def underlay_device(node: Node, local: str) -> str:
    """The node's interface that holds ``local`` (flannel's --iface)."""
    for name, link in node.links().items():
        for info in link.get("addr_info", []):
            if info.get("local") == local:
                return name
    raise InputError(f"flannel.local: no interface of the node has address {local}")


def ensure_flannel(node: Node, flannel: dict[str, Any]) -> None:
    """flannel.1 and the route, neighbour and FDB entries flannel's vxlan backend writes."""
    device = flannel["device"]
    ip = node.ip_args()
    current = json.loads(node.run([*ip, "-j", "-d", "link", "show"]) or "[]")
    link = next((entry for entry in current if entry.get("ifname") == device), None)
    vxlan = ((link or {}).get("linkinfo") or {}).get("info_data") or {}
    wanted = (flannel["vni"], flannel["local"], flannel["port"])
    if link is not None and (vxlan.get("id"), vxlan.get("local"), vxlan.get("port")) != wanted:
        node.change(f"remove {device} (other VXLAN settings)", [*ip, "link", "del", device])
        link = None
    if link is None:
        parent = underlay_device(node, flannel["local"])
        node.change(
            f"create {device} (VXLAN {flannel['vni']}, port {flannel['port']}, dev {parent})",
            [
                *(*ip, "link", "add", device, "type", "vxlan", "id", str(flannel["vni"])),
                *("local", flannel["local"], "dev", parent, "dstport", str(flannel["port"])),
                "nolearning",
            ],
        )
    if link is None or link.get("address") != flannel["mac"]:
        node.change(
            f"{device} address {flannel['mac']}",
            [*ip, "link", "set", device, "address", flannel["mac"]],
        )
    links = {} if link is None else node.links()
    if not has_address(links.get(device), flannel["address"]):
        node.change(
            f"address {device} {flannel['address']}",
            [*ip, "addr", "replace", flannel["address"], "dev", device],
        )
    if link is None or "UP" not in link.get("flags", []):
        node.change(f"bring {device} up", [*ip, "link", "set", device, "up"])
    routes = [] if link is None else json.loads(node.run([*ip, "-j", "route", "show"]) or "[]")
    neighbours = (
        []
        if link is None
        else json.loads(node.run([*ip, "-j", "neigh", "show", "dev", device]) or "[]")
    )
    fdb_command = ["bridge", "-j", "fdb", "show", "dev", device]
    fdb = [] if link is None else json.loads(node.run(node.wrap(fdb_command)) or "[]")
    for remote in flannel["remotes"]:
        subnet, gateway, mac = remote["subnet"], remote["gateway"], remote["mac"]
        if not any(
            route.get("dst") == subnet
            and route.get("gateway") == gateway
            and route.get("dev") == device
            for route in routes
        ):
            node.change(
                f"route {subnet} via {gateway} dev {device} onlink",
                [*ip, "route", "replace", subnet, "via", gateway, "dev", device, "onlink"],
            )
        if not any(
            entry.get("dst") == gateway
            and entry.get("lladdr") == mac
            and "PERMANENT" in entry.get("state", [])
            for entry in neighbours
        ):
            node.change(
                f"neighbour {gateway} lladdr {mac} dev {device}",
                [
                    *(*ip, "neigh", "replace", gateway, "lladdr", mac),
                    *("dev", device, "nud", "permanent"),
                ],
            )
        if not any(
            entry.get("mac") == mac and entry.get("dst") == remote["node_ip"] for entry in fdb
        ):
            node.change(
                f"fdb {mac} dst {remote['node_ip']} dev {device}",
                node.wrap(
                    [
                        *("bridge", "fdb", "replace", mac, "dev", device),
                        *("dst", remote["node_ip"], "self", "permanent"),
                    ]
                ),
            )


def parse_sysctls(values: list[str]) -> dict[str, str]:
    settings = {}
    for value in values:
        key, separator, wanted = value.partition("=")
        if not separator or not key or "/" in key or ".." in key:
            raise InputError(f"--sysctl {value!r}: expected key=value, e.g. net.ipv4.ip_forward=1")
        settings[key] = wanted
    return settings


def ensure_sysctls(node: Node, settings: dict[str, str]) -> None:
    """Set the node's sysctls (after the bridge exists: net.bridge.* appears with it)."""
    for key, wanted in settings.items():
        try:
            current: str | None = node.run(node.wrap(["sysctl", "-n", key])).strip()
        except RuntimeError:
            if not node.check:
                raise
            current = None  # check mode before the bridge exists: net.bridge.* is not there yet
        if current != wanted:
            node.change(
                f"sysctl {key}={wanted}", node.wrap(["sysctl", "-q", "-w", f"{key}={wanted}"])
            )


def command_pods(args: argparse.Namespace) -> dict[str, Any]:
    lab = read_lab(Path(args.lab_json))
    sysctls = parse_sysctls(args.sysctl)
    node = Node(args.node_netns, check=args.check)
    bridge = lab["bridge"]
    ensure_bridge(node, bridge["name"], bridge["address"])
    ensure_sysctls(node, sysctls)
    for pod in lab["pods"]:
        ensure_pod(node, pod, bridge["name"], bridge["address"])
    if lab.get("flannel") is not None:
        ensure_flannel(node, lab["flannel"])
    state = Path(args.state_dir) / "pods.json"
    wanted = [pod["netns"] for pod in lab["pods"]]
    previous = json.loads(state.read_text()) if state.is_file() else []
    for netns in previous:
        if netns not in wanted and (NETNS_DIR / netns).exists():
            node.change(f"remove netns {netns}", ["ip", "netns", "del", netns])
    if not node.check:
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(wanted) + "\n")
    return {"changed": bool(node.actions), "actions": node.actions}


def sets_in(restore_text: str) -> set[str]:
    names = set()
    for line in restore_text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "create" and words[1].startswith(MANAGED_SET_PREFIXES):
            names.add(words[1])
    return names


def command_load(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(args.compiled_dir)
    texts = {}
    for name in (IPSET_FILE, IPTABLES_FILE):
        try:
            texts[name] = (directory / name).read_text()
        except OSError as error:
            raise InputError(f"{directory / name}: cannot read it: {error.strerror}") from error
    if "*filter" not in texts[IPTABLES_FILE] or "COMMIT" not in texts[IPTABLES_FILE]:
        raise InputError(f"{directory / IPTABLES_FILE}: not an iptables-restore filter table")
    node = Node(args.node_netns)
    wanted = sets_in(texts[IPSET_FILE])
    node.change("ipset restore", node.wrap(["ipset", "restore", "-exist"]), texts[IPSET_FILE])
    node.run(node.wrap(["iptables-restore", "--test"]), texts[IPTABLES_FILE])
    node.change(
        "iptables-restore filter table", node.wrap(["iptables-restore"]), texts[IPTABLES_FILE]
    )
    existing = node.run(node.wrap(["ipset", "list", "-n"])).split()
    for name in sorted(existing):
        if name.startswith(MANAGED_SET_PREFIXES) and name not in wanted:
            node.change(f"destroy stale set {name}", node.wrap(["ipset", "destroy", name]))
    return {"changed": True, "actions": node.actions}


def command_down(args: argparse.Namespace) -> dict[str, Any]:
    lab = read_lab(Path(args.lab_json))
    node = Node(args.node_netns)
    for pod in lab["pods"]:
        if (NETNS_DIR / pod["netns"]).exists():
            node.change(f"remove netns {pod['netns']}", ["ip", "netns", "del", pod["netns"]])
    links = node.links()
    if lab["bridge"]["name"] in links:
        node.change("remove bridge", [*node.ip_args(), "link", "del", lab["bridge"]["name"]])
    flannel = lab.get("flannel")
    if flannel is not None and flannel["device"] in links:
        node.change(
            f"remove {flannel['device']}", [*node.ip_args(), "link", "del", flannel["device"]]
        )
    state = Path(args.state_dir) / "pods.json"
    state.unlink(missing_ok=True)
    return {"changed": bool(node.actions), "actions": node.actions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pods = commands.add_parser("pods", help="create the bridge and the pods' namespaces")
    pods.add_argument("lab_json")
    pods.add_argument("--check", action="store_true", help="report what would change")
    pods.add_argument("--sysctl", action="append", default=[], metavar="KEY=VALUE")
    load = commands.add_parser("load", help="load the compiled ipsets and filter table")
    load.add_argument("compiled_dir")
    down = commands.add_parser("down", help="remove the pods' namespaces and the bridge")
    down.add_argument("lab_json")
    for sub in (pods, load, down):
        sub.add_argument("--node-netns", default=None, help="the node's network namespace")
    for sub in (pods, down):
        sub.add_argument("--state-dir", default="/run/k3s-netpol-lab")
    args = parser.parse_args(argv)
    handlers = {"pods": command_pods, "load": command_load, "down": command_down}
    try:
        result = handlers[args.command](args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
