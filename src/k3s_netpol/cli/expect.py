"""`k3s-netpol expect`: which pod may reach which, as the NetworkPolicies say."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

import click

from k3s_netpol.cli._common import UsageProblem
from k3s_netpol.model import (
    PROTOCOLS,
    Cluster,
    ClusterIndex,
    ManifestError,
    load_manifests,
    probe_columns,
    unaddressed_pods_near_ip_blocks,
)
from k3s_netpol.probe_output import (
    MATRIX_MAX_PODS,
    render_summary,
    render_tables,
    summarize,
    write_probes_json,
)

_NAMED_IGNORED_PODS = 10
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
        write_probes_json(sys.stdout, [pod.key for pod in cluster.pods], columns, indent)
        return
    if output == "summary":
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
        names = [f"{pod.key} ({pod.ignored_reason})" for pod in cluster.ignored]
        if len(names) > _NAMED_IGNORED_PODS:
            rest = len(names) - _NAMED_IGNORED_PODS
            names[_NAMED_IGNORED_PODS:] = [f"and {rest} more (-o table lists them all)"]
        click.echo(
            f"note: {len(cluster.ignored)} pod(s) ignored as kube-router does: " + ", ".join(names),
            err=True,
        )
    for pod, policies in unaddressed_pods_near_ip_blocks(cluster):
        click.echo(
            f"warning: pod {pod.key} has no IP, so no ipBlock matches it; the ipBlock peers of "
            f"{', '.join(policies)} could match it once it has one",
            err=True,
        )
