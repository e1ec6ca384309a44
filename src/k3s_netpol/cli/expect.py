"""`k3s-netpol expect`: which pod may reach which, as the NetworkPolicies say."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from k3s_netpol.cli._common import UsageProblem
from k3s_netpol.model import (
    PROTOCOLS,
    Cluster,
    ClusterIndex,
    ManifestError,
    ProbeColumn,
    load_manifests,
    probe_columns,
    unaddressed_pods_near_ip_blocks,
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
    type=click.Choice(["table", "json", "summary"]),
    default="table",
    show_default=True,
    help="table: a matrix per port (per-destination counts past "
    f"{MATRIX_MAX_PODS} pods) and the pods kube-router ignores; "
    "json: {'probes': [{from, to, port, protocol, allowed}, ...]}, streamed; "
    "summary: per namespace pair and port, allowed/blocked counts and the deciding policies.",
)
@click.option(
    "--indent",
    type=click.IntRange(0, 16),
    default=None,
    metavar="N",
    help="With -o json: indent by N spaces for people (default: compact, for programs).",
)
def expect_command(
    filenames: tuple[str, ...],
    ports: list[tuple[int, str]] | None,
    output: str,
    indent: int | None,
) -> None:
    """Print, for every ordered pair of distinct pods and every port, whether the
    NetworkPolicies allow the connection (the destination's ingress and the source's egress).

    Pods kube-router ignores (hostNetwork, Succeeded/Failed, no podIP yet) are not probed and
    no policy selects or matches them; warnings go to standard error.

    \b
    Example:
      kubectl get ns,pods,networkpolicies -A -o yaml | k3s-netpol expect -f - --port 80/TCP
    """
    if indent is not None and output != "json":
        raise UsageProblem("--indent applies to -o json only")
    try:
        cluster = load_manifests(filenames)
    except ManifestError as error:
        raise UsageProblem(str(error)) from None
    _warn(cluster, listing_ignored=output != "table")
    index = ClusterIndex(cluster)
    columns = probe_columns(index, ports)
    if output == "json":
        from k3s_netpol.probe_output import write_probes_json

        write_probes_json(sys.stdout, [pod.key for pod in cluster.pods], columns, indent)
        return
    if output == "summary":
        from k3s_netpol.probe_output import render_summary, summarize

        click.echo("\n".join(render_summary(cluster, summarize(index, columns))))
        return
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 10_000
    for renderable in render_tables(cluster, list(columns)):
        console.print(renderable)


def _warn(cluster: Cluster, *, listing_ignored: bool) -> None:
    """Name, on standard error, the ignored pods (unless a table lists them) and the pods
    without an IP that an ipBlock could match."""
    if listing_ignored and cluster.ignored:
        names = ", ".join(f"{pod.key} ({pod.ignored_reason})" for pod in cluster.ignored)
        click.echo(
            f"note: {len(cluster.ignored)} pod(s) ignored as kube-router does: {names}", err=True
        )
    for pod, policies in unaddressed_pods_near_ip_blocks(cluster):
        click.echo(
            f"warning: pod {pod.key} has no IP, so no ipBlock matches it; the ipBlock peers of "
            f"{', '.join(policies)} could match it once it has one",
            err=True,
        )


def render_tables(cluster: Cluster, columns: Sequence[ProbeColumn]) -> list[Table | Text]:
    """One source x destination matrix per port (`.` allowed, `X` blocked), or, past
    MATRIX_MAX_PODS pods, one row per destination and port with the counts; then a summary
    line and the pods kube-router ignores."""
    from rich.text import Text

    pod_keys = [pod.key for pod in cluster.pods]
    by_port: dict[tuple[int, str], dict[int, ProbeColumn]] = {}
    for column in columns:
        by_port.setdefault((column.port, column.protocol), {})[column.destination] = column
    renderables: list[Table | Text] = []
    for (port, protocol), port_columns in sorted(by_port.items()):
        if len(pod_keys) <= MATRIX_MAX_PODS:
            heading = f"{port}/{protocol}: each row connects to each column (. allowed, X blocked)"
            renderables.append(Text(heading, style="bold"))
            renderables.append(_matrix(pod_keys, port_columns))
        else:
            renderables.append(Text(f"{port}/{protocol}: sources per destination", style="bold"))
            renderables.append(_per_destination(pod_keys, port_columns))
    probes = len(columns) * max(len(pod_keys) - 1, 0)
    allowed = sum(column.allowed_from.bit_count() for column in columns)
    summary = Text(
        f"{probes} probes over {len(pod_keys)} pods: {allowed} allowed, {probes - allowed} blocked"
    )
    if not columns:
        summary.append(" (no pod declares a containerPort: pass --port)")
    renderables.append(summary)
    if cluster.ignored:
        renderables.append(_ignored(cluster))
    return renderables


def _matrix(pod_keys: Sequence[str], columns: dict[int, ProbeColumn]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table()
    table.add_column("from \\ to", no_wrap=True)
    for number in range(1, len(pod_keys) + 1):
        table.add_column(str(number), justify="center", no_wrap=True)
    for row, source in enumerate(pod_keys):
        cells: list[Text | str] = [f"{row + 1:>2} {source}"]
        for destination in range(len(pod_keys)):
            column = columns.get(destination)
            if source == pod_keys[destination]:
                cells.append(Text("-", style="dim"))
            elif column is None:
                cells.append("")
            elif column.allowed_from >> row & 1:
                cells.append(Text(".", style="green"))
            else:
                cells.append(Text("X", style="bold red"))
        table.add_row(*cells)
    return table


def _per_destination(pod_keys: Sequence[str], columns: dict[int, ProbeColumn]) -> Table:
    from rich.table import Table

    table = Table()
    for heading in ("to", "allowed from", "blocked from"):
        table.add_column(heading, justify="left" if heading == "to" else "right", no_wrap=True)
    for destination, key in enumerate(pod_keys):
        column = columns.get(destination)
        if column is not None:
            allowed = column.allowed_from.bit_count()
            table.add_row(key, str(allowed), str(len(pod_keys) - 1 - allowed))
    return table


def _ignored(cluster: Cluster) -> Table:
    from rich.table import Table

    table = Table(
        title="Pods kube-router ignores: not probed, selected or matched by any policy",
        title_justify="left",
    )
    table.add_column("pod", no_wrap=True)
    table.add_column("why")
    for pod in cluster.ignored:
        table.add_row(pod.key, pod.ignored_reason)
    return table
