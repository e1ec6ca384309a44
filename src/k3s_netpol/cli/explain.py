"""`k3s-netpol explain FROM TO PORT/PROTO`: why the policies allow or block one connection."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from k3s_netpol.cli._common import UsageProblem
from k3s_netpol.cli.expect import parse_port
from k3s_netpol.explain import (
    ExplainError,
    Placement,
    explain,
    load_placement,
    render_explanation,
)
from k3s_netpol.model import ManifestError, load_manifests


@click.command("explain")
@click.argument("source", metavar="FROM")
@click.argument("destination", metavar="TO")
@click.argument("port_protocol", metavar="PORT/PROTO")
@click.option(
    "-f",
    "--filename",
    "filenames",
    multiple=True,
    required=True,
    metavar="FILE",
    help="Manifests or a cluster snapshot, as for `expect` (repeatable; - reads standard input).",
)
@click.option(
    "--lab",
    "lab_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The lab's lab.json: each pod's node and the jump orders compiled with its seed.",
)
@click.option("--json", "as_json", is_flag=True, help="The explanation as one JSON object.")
def explain_command(
    source: str,
    destination: str,
    port_protocol: str,
    filenames: tuple[str, ...],
    lab_path: Path | None,
    as_json: bool,
) -> None:
    """Explain the verdict on FROM -> TO (pods as NS/NAME) at PORT/PROTO (e.g. 80/TCP): the
    policies selecting each side, the rule that allows it or why none does, which node's chain
    decides, and the log lines each node writes, in the current jump order and the others.

    \b
    Example:
      k3s-netpol explain -f bundle.yaml -f workloads.yaml sample1/nginx sample2/nginx 80/TCP
    """
    try:
        port, protocol = parse_port(port_protocol)
    except ValueError as error:
        raise UsageProblem(f"PORT/PROTO: {error}") from None
    try:
        cluster = load_manifests(filenames)
    except ManifestError as error:
        raise UsageProblem(str(error)) from None
    try:
        placement = load_placement(lab_path) if lab_path is not None else Placement()
        explanation = explain(cluster, source, destination, port, protocol, placement)
    except ExplainError as error:
        raise UsageProblem(str(error)) from None
    if as_json:
        json.dump(explanation.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        click.echo(render_explanation(explanation), nl=False)
