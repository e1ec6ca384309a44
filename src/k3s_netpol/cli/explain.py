"""`k3s-netpol explain FROM TO PORT/PROTO`: why the policies allow or block one connection;
`--all`: every probe's verdict and where its log lines can be, as verify plans them."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from k3s_netpol.cli._common import UsageProblem
from k3s_netpol.cli.expect import parse_port
from k3s_netpol.explain import (
    ExplainError,
    Placement,
    explain,
    explain_probes,
    load_placement,
    render_explanation,
)
from k3s_netpol.lab.common import BUILTIN_WORKLOADS
from k3s_netpol.model import ManifestError, expect, load_manifests


def _ports(values: Sequence[str], label: str) -> list[tuple[int, str]]:
    try:
        return list(dict.fromkeys(parse_port(value) for value in values))
    except ValueError as error:
        raise UsageProblem(f"{label}: {error}") from None


@click.command("explain")
@click.argument("arguments", nargs=-1, metavar="FROM TO PORT/PROTO")
@click.option(
    "-f",
    "--filename",
    "filenames",
    multiple=True,
    metavar="FILE",
    help="Manifests or a cluster snapshot, as for `expect` (repeatable; - reads standard input).",
)
@click.option(
    "--builtin-workloads",
    is_flag=True,
    help="Add the lab's built-in workloads (as `lab compile --builtin-workloads`).",
)
@click.option(
    "--lab",
    "lab_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The lab's lab.json: each pod's node and the jump orders compiled with its seed.",
)
@click.option(
    "--all",
    "every_probe",
    is_flag=True,
    help="Instead of one connection: every probe `expect` lists, as JSON, with the side that "
    "blocks it and the nodes, chains and policies whose lines verify accepts.",
)
@click.option(
    "--port",
    "ports",
    multiple=True,
    metavar="PORT[/PROTOCOL]",
    help="With --all: probe this port on every pod (repeatable; default: containerPorts).",
)
@click.option("--json", "as_json", is_flag=True, help="The explanation as one JSON object.")
def explain_command(
    arguments: tuple[str, ...],
    filenames: tuple[str, ...],
    builtin_workloads: bool,
    lab_path: Path | None,
    every_probe: bool,
    ports: tuple[str, ...],
    as_json: bool,
) -> None:
    """Explain the verdict on FROM -> TO (pods as NS/NAME) at PORT/PROTO (e.g. 80/TCP): the
    policies selecting each side, the rule that allows it or why none does, which node's chain
    decides, and the log lines each node writes, in the current jump order and the others.

    \b
    Examples:
      k3s-netpol explain -f bundle.yaml -f workloads.yaml sample1/nginx sample2/nginx 80/TCP
      k3s-netpol explain -f bundle.yaml --builtin-workloads --lab lab.json --all
    """
    if every_probe and arguments:
        raise UsageProblem("--all explains every probe: give no FROM TO PORT/PROTO with it")
    if not every_probe and len(arguments) != 3:
        raise UsageProblem(f"expected FROM TO PORT/PROTO (3 arguments), got {len(arguments)}")
    if ports and not every_probe:
        raise UsageProblem("--port goes with --all; one connection names its PORT/PROTO")
    paths: list[str | Path] = [*filenames, *([BUILTIN_WORKLOADS] if builtin_workloads else [])]
    if not paths:
        raise UsageProblem("give the manifests with -f FILE (or --builtin-workloads)")
    wanted = _ports(
        arguments[2:] if not every_probe else ports, "PORT/PROTO" if not every_probe else "--port"
    )
    try:
        cluster = load_manifests(paths)
    except ManifestError as error:
        raise UsageProblem(str(error)) from None
    try:
        placement = load_placement(lab_path) if lab_path is not None else Placement()
        if every_probe:
            document = explain_probes(cluster, expect(cluster, wanted or None), placement)
            json.dump(document, sys.stdout)
            sys.stdout.write("\n")
            return
        ((port, protocol),) = wanted
        explanation = explain(cluster, arguments[0], arguments[1], port, protocol, placement)
    except ExplainError as error:
        raise UsageProblem(str(error)) from None
    if as_json:
        json.dump(explanation.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        click.echo(render_explanation(explanation), nl=False)
