"""`k3s-netpol expect`: which pod may reach which, as the NetworkPolicies say."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from k3s_netpol.cli._common import UsageProblem
from k3s_netpol.model import (
    PROTOCOLS,
    ManifestError,
    Probe,
    expect,
    load_manifests,
    probes_document,
)

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

MATRIX_MAX_PODS = 40
_PORT_ARGUMENT = re.compile(r"^(\d+)(?:/([A-Za-z]+))?$")


def parse_port(value: str) -> tuple[int, str]:
    """`80`, `80/TCP`, `53/udp` -> (port, upper-case protocol); ValueError saying what is wrong."""
    match = _PORT_ARGUMENT.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r}: expected PORT or PORT/PROTOCOL, e.g. 80/TCP")
    port = int(match.group(1))
    protocol = (match.group(2) or "TCP").upper()
    if not 1 <= port <= 65535:
        raise ValueError(f"{value!r}: port must be 1-65535")
    if protocol not in PROTOCOLS:
        raise ValueError(f"{value!r}: protocol must be one of {', '.join(PROTOCOLS)}")
    return port, protocol


def _port_option(
    _context: click.Context, _parameter: click.Parameter, values: Sequence[str]
) -> list[tuple[int, str]] | None:
    if not values:
        return None
    try:
        return list(dict.fromkeys(parse_port(value) for value in values))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command("expect")
@click.option(
    "-f",
    "--filename",
    "filenames",
    multiple=True,
    required=True,
    metavar="FILE",
    help="Manifests: Namespaces, Pods, NetworkPolicies (multi-document YAML or a List); "
    "repeatable; - reads standard input.",
)
@click.option(
    "--port",
    "ports",
    multiple=True,
    metavar="PORT[/PROTOCOL]",
    callback=_port_option,
    help="Probe this port on every pod (protocol TCP, UDP or SCTP; default TCP); repeatable. "
    "Default: each destination pod's containerPorts.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json: {'probes': [{from, to, port, protocol, allowed}, ...]}.",
)
def expect_command(
    filenames: tuple[str, ...], ports: list[tuple[int, str]] | None, output: str
) -> None:
    """Print, for every ordered pair of distinct pods and every port, whether the
    NetworkPolicies allow the connection (the destination's ingress and the source's egress).

    \b
    Example:
      kubectl get ns,pods,networkpolicies -A -o yaml | k3s-netpol expect -f - --port 80/TCP
    """
    try:
        cluster = load_manifests(filenames)
    except ManifestError as error:
        raise UsageProblem(str(error)) from None
    if not cluster.pods:
        sources = ", ".join("<stdin>" if name == "-" else name for name in filenames)
        raise UsageProblem(
            f"{sources}: no pods in input, so nothing to probe (did the command that produced it "
            "fail? `kubectl get ns,pods,networkpolicies -A -o yaml` lists them)"
        )
    probes = expect(cluster, ports)
    if output == "json":
        json.dump(probes_document(probes), sys.stdout)
        sys.stdout.write("\n")
        return
    from rich.console import Console

    pod_keys = [pod.key for pod in cluster.pods]
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 10_000
    for renderable in render_tables(pod_keys, probes):
        console.print(renderable)


def render_tables(pod_keys: Sequence[str], probes: Sequence[Probe]) -> list[Table | Text]:
    """One source x destination matrix per port (`.` allowed, `X` blocked), or, past
    MATRIX_MAX_PODS pods, one row per destination and port with the counts; then a summary."""
    from rich.text import Text

    by_port: dict[tuple[int, str], dict[tuple[str, str], bool]] = {}
    for probe in probes:
        by_port.setdefault((probe.port, probe.protocol), {})[(probe.source, probe.destination)] = (
            probe.allowed
        )
    renderables: list[Table | Text] = []
    for (port, protocol), verdicts in sorted(by_port.items()):
        if len(pod_keys) <= MATRIX_MAX_PODS:
            heading = f"{port}/{protocol}: each row connects to each column (. allowed, X blocked)"
            renderables.append(Text(heading, style="bold"))
            renderables.append(_matrix(pod_keys, verdicts))
        else:
            renderables.append(Text(f"{port}/{protocol}: sources per destination", style="bold"))
            renderables.append(_per_destination(pod_keys, verdicts))
    allowed = sum(probe.allowed for probe in probes)
    summary = Text(
        f"{len(probes)} probes over {len(pod_keys)} pods: {allowed} allowed, "
        f"{len(probes) - allowed} blocked"
    )
    if not probes:
        summary.append(" (no pod declares a containerPort: pass --port)")
    renderables.append(summary)
    return renderables


def _matrix(pod_keys: Sequence[str], verdicts: dict[tuple[str, str], bool]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table()
    table.add_column("from \\ to", no_wrap=True)
    for number in range(1, len(pod_keys) + 1):
        table.add_column(str(number), justify="center", no_wrap=True)
    for row, source in enumerate(pod_keys, start=1):
        cells: list[Text | str] = [f"{row:>2} {source}"]
        for destination in pod_keys:
            verdict = verdicts.get((source, destination))
            if source == destination:
                cells.append(Text("-", style="dim"))
            elif verdict is None:
                cells.append("")
            else:
                cells.append(Text(".", style="green") if verdict else Text("X", style="bold red"))
        table.add_row(*cells)
    return table


def _per_destination(pod_keys: Sequence[str], verdicts: dict[tuple[str, str], bool]) -> Table:
    from rich.table import Table

    table = Table()
    for column in ("to", "allowed from", "blocked from"):
        table.add_column(column, justify="left" if column == "to" else "right", no_wrap=True)
    allowed: dict[str, int] = {}
    blocked: dict[str, int] = {}
    for (_source, destination), verdict in verdicts.items():
        counts = allowed if verdict else blocked
        counts[destination] = counts.get(destination, 0) + 1
    for destination in pod_keys:
        if destination in allowed or destination in blocked:
            table.add_row(
                destination, str(allowed.get(destination, 0)), str(blocked.get(destination, 0))
            )
    return table
