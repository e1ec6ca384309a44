"""`k3s-netpol logs`: explain kube-router's policy drops from ulogd2's files."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import click

from k3s_netpol.logs import (
    DropEvent,
    Enricher,
    EventFilter,
    EventJoiner,
    EventView,
    FlowSummary,
    LogChangedError,
    LogFileError,
    LogRecord,
    ParseStats,
    distinct_files,
    follow_records,
    iter_file_records,
    parse_time_bound,
    rotation_order,
    summarize,
)
from k3s_netpol.logscan import FlowCounts, scan, summary_flows

GATHER_PLAYBOOK = "playbooks/gather_logs.yml"
TABLE_HEADER = ("TIME", "NODE", "SOURCE", "DESTINATION", "PROTO/PORT", "POLICY", "VERDICT")


def _endpoint(pod: str | None, address: str, port: int | None) -> str:
    name = pod or address
    return name if port is None else f"{name}:{port}"


def table_row(view: EventView) -> tuple[str, ...]:
    event = view.event
    port = "" if event.destination_port is None else f"/{event.destination_port}"
    policies = ",".join(event.policies) or "-"
    return (
        event.time or "-",
        event.node or "-",
        _endpoint(view.source_pod, event.source, None),
        view.destination_pod or event.destination,
        f"{event.protocol}{port}",
        policies,
        view.verdict + (" (model allows)" if view.flagged else ""),
    )


def _write_table_line(out: IO[str], cells: tuple[str, ...]) -> None:
    widths = (15, 14, 28, 28, 10, 40, 0)
    out.write("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)))
    out.write("\n")


def _records_of(paths: list[Path], stats: ParseStats, nodes: dict[str, str]) -> Iterator[LogRecord]:
    for path in paths:
        yield from iter_file_records(path, stats, nodes.get(str(path)))


def _events(records: Iterable[LogRecord | None], joiner: EventJoiner) -> Iterator[DropEvent]:
    for record in records:
        if record is None:
            yield from joiner.flush()
        else:
            yield from joiner.add(record)
    yield from joiner.flush()


def gather_from_inventory(inventory: str, workdir: Path) -> tuple[list[Path], dict[str, str]]:
    """Fetch every node's ulogd2 files through Ansible into workdir/<node>/."""
    from k3s_netpol.runner import run_playbook

    result = run_playbook(
        GATHER_PLAYBOOK, inventory=inventory, extravars={"gather_logs_dest": str(workdir)}
    )
    if result.status != "successful":
        failures = "; ".join(
            f"{failure.host}: {failure.task}: {failure.message}" for failure in result.failures
        )
        raise click.ClickException(
            f"gathering logs from {inventory} failed ({result.status}): {failures or 'see above'}"
        )
    paths: list[Path] = []
    nodes: dict[str, str] = {}
    for node_dir in sorted(path for path in workdir.iterdir() if path.is_dir()):
        for path in sorted(node_dir.rglob("*"), key=rotation_order):
            if path.is_file():
                paths.append(path)
                nodes[str(path)] = node_dir.name
    return paths, nodes


class _RunFailed(click.ClickException):
    exit_code = 3


EXIT_INTERRUPTED = 130
EXIT_OUTPUT_CLOSED = 141  # as a tool killed by SIGPIPE: what `| head` expects, quietly


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that the final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        descriptor = os.open(os.devnull, os.O_WRONLY)
        os.dup2(descriptor, sys.stdout.fileno())
        os.close(descriptor)


@click.command("logs")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per drop event (per line).")
@click.option("--summary", is_flag=True, help="The top dropped flows instead of each event.")
@click.option("--namespace", metavar="NS", help="Only events whose pods or policies are in NS.")
@click.option("--pod", metavar="NS/POD", help="Only events from or to this pod (needs --snapshot).")
@click.option("--policy", metavar="NS/NAME", help="Only events a line of which names this policy.")
@click.option("--since", metavar="TIME", help="ISO date-time, HH:MM (today) or 10m/2h/1d ago.")
@click.option("--until", metavar="TIME", help="Same forms as --since.")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep reading appended lines, across rename and copytruncate rotation.",
)
@click.option(
    "--snapshot",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="`kubectl get pods -A -o json` output or manifests (repeatable). With policies in it, "
    "events are checked against the expected reachability.",
)
@click.option("--top", default=10, show_default=True, metavar="N", help="Rows in --summary.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    metavar="N",
    help="Processes reading big files for --json/--summary (default: one per CPU).",
)
@click.option(
    "--inventory",
    metavar="INV",
    help="Gather the ulogd2 files of every node of this Ansible inventory first.",
)
def logs_command(
    files: tuple[Path, ...],
    as_json: bool,
    summary: bool,
    namespace: str | None,
    pod: str | None,
    policy: str | None,
    since: str | None,
    until: str | None,
    follow: bool,
    snapshot: tuple[Path, ...],
    top: int,
    jobs: int | None,
    inventory: str | None,
) -> None:
    """Explain policy drops logged by ulogd2 (LOGEMU or JSON lines; plain, .1 or .gz).

    Joins the lines of each dropped packet on one node (the `DROP by policy ns/name` lines and
    the pod chain's unprefixed line) into one event; a bridged packet that passes the pod chains
    twice is one event with two passes. An event without the unprefixed line is a false drop
    (k3s #9032) or lost its line to the rate limit. Garbled lines (impossible addresses and
    ports too) are counted on stderr. A file named twice (by any path) is read once.

    --follow reads a .gz once and follows the others across rename and copytruncate rotation.
    Exit status: 0 ok; 2 bad input (a file that cannot be read, a .gz that is not gzip, a bad
    option); 3 a file shrank while it was read (the output is incomplete) or gathering failed;
    130 Ctrl-C (the output is partial); 141 standard output closed by its reader (| head).

    \b
    Examples:
      k3s-netpol logs /var/log/ulog/syslogemu.log*
      k3s-netpol logs syslogemu.log --summary --top 20
      k3s-netpol logs syslogemu.log --json --snapshot pods.json --snapshot bundle.yaml
      k3s-netpol logs --inventory inventory/hosts.yml --namespace tenant-a --since 10m
      k3s-netpol logs -f /var/log/ulog/syslogemu.log --policy tenant-a/deny-by-default
    """
    ctx = click.get_current_context()
    if not files and not inventory:
        raise click.UsageError("name at least one log FILE, or --inventory INV")
    if follow and summary:
        raise click.UsageError("--follow prints events as they come; it cannot be --summary")
    if top < 1:
        raise click.BadParameter("must be at least 1", param_hint="--top")
    for path in files:
        if not path.exists():
            raise click.BadParameter(f"{path}: no such file", param_hint="FILE")
    try:
        event_filter = EventFilter(
            namespace=namespace,
            pod=pod,
            policy=policy,
            since=parse_time_bound(since) if since else None,
            until=parse_time_bound(until) if until else None,
        )
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--since/--until") from None
    if event_filter.since and event_filter.until and event_filter.since > event_filter.until:
        raise click.BadParameter(
            f"--since {since} is after --until {until}: no event can match",
            param_hint="--since/--until",
        )
    if pod is not None and (pod.count("/") != 1 or pod.startswith("/") or pod.endswith("/")):
        raise click.BadParameter(f"{pod!r}: expected NAMESPACE/POD", param_hint="--pod")
    if pod is not None and not snapshot:
        raise click.UsageError("--pod needs --snapshot to know which address is which pod")
    enricher = Enricher(_load_snapshot(snapshot) if snapshot else None)

    with contextlib.ExitStack() as cleanup:
        distinct, left_out = distinct_files(files)
        for path, kept in left_out:
            click.echo(f"k3s-netpol logs: {path} is the same file as {kept}: read once", err=True)
        paths = sorted(distinct, key=rotation_order)
        nodes: dict[str, str] = {}
        if inventory:
            import tempfile

            workdir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="k3s-netpol-logs-"))
            gathered, nodes = _gather(inventory, Path(workdir))
            paths.extend(gathered)
        stats = ParseStats()
        try:
            if (as_json or summary) and not follow and event_filter == EventFilter():
                _fast_output(
                    paths,
                    nodes,
                    stats,
                    enricher,
                    as_json=as_json,
                    summary=summary,
                    top=top,
                    jobs=jobs,
                )
            else:
                records: Iterable[LogRecord | None]
                if follow:
                    records = follow_records(paths, stats, nodes=nodes, warn=_warn)
                else:
                    records = _records_of(paths, stats, nodes)
                views = (
                    view
                    for view in map(enricher.view, _events(records, EventJoiner()))
                    if event_filter.accepts(view)
                )
                _output(views, as_json=as_json, summary=summary, top=top, follow=follow)
        except LogChangedError as error:
            _report(stats)
            raise _RunFailed(f"{error}; the output above is incomplete") from None
        except LogFileError as error:
            _report(stats)
            raise click.BadParameter(str(error), param_hint="FILE") from None
        except KeyboardInterrupt:
            _report(stats)
            if not follow:
                click.echo(
                    "k3s-netpol logs: interrupted (Ctrl-C): the output above is partial", err=True
                )
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            _silence_stdout()  # `| head` has what it wanted
            ctx.exit(EXIT_OUTPUT_CLOSED)
        _report(stats)


def _load_snapshot(paths: tuple[Path, ...]) -> Any:
    from k3s_netpol.logs import load_snapshot
    from k3s_netpol.model import ManifestError

    try:
        return load_snapshot(list(paths))
    except ManifestError as error:
        raise click.BadParameter(str(error), param_hint="--snapshot") from None


def _gather(inventory: str, workdir: Path) -> tuple[list[Path], dict[str, str]]:
    try:
        return gather_from_inventory(inventory, workdir)
    except click.ClickException as error:
        raise _RunFailed(error.message) from None
    except (OSError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint="--inventory") from None


def _fast_output(
    paths: list[Path],
    nodes: dict[str, str],
    stats: ParseStats,
    enricher: Enricher,
    *,
    as_json: bool,
    summary: bool,
    top: int,
    jobs: int | None,
) -> None:
    """--json or --summary, unfiltered: logscan's bulk path, with the full path's output."""
    if summary:
        tallies: list[Any] = []
        scan(paths, nodes, stats, "summary", tallies.extend, enricher=enricher, jobs=jobs)
        flows = summary_flows(tallies[0] if tallies else FlowCounts(), enricher, top)
        _write_summary(sys.stdout, flows, as_json=as_json)
        return
    sys.stdout.flush()
    binary = getattr(sys.stdout, "buffer", None)
    write: Callable[[list[Any]], object] = (
        binary.writelines
        if binary is not None
        else lambda pieces: sys.stdout.write(b"".join(pieces).decode())
    )
    scan(paths, nodes, stats, "events", write, enricher=enricher, jobs=jobs)
    if binary is not None:
        binary.flush()


def _output(
    views: Iterable[EventView], *, as_json: bool, summary: bool, top: int, follow: bool
) -> None:
    out = sys.stdout
    if summary:
        _write_summary(out, summarize(views, top), as_json=as_json)
        return
    if as_json:
        dumps = json.JSONEncoder(separators=(", ", ": ")).encode
        for view in views:
            out.write(dumps(view.to_dict()) + "\n")
            if follow:
                out.flush()
        return
    _write_table_line(out, TABLE_HEADER)
    for view in views:
        _write_table_line(out, table_row(view))
        if follow:
            out.flush()


def _write_summary(out: IO[str], flows: list[FlowSummary], *, as_json: bool) -> None:
    if as_json:
        for flow in flows:
            out.write(json.dumps(flow.to_dict()) + "\n")
        return
    header = ("EVENTS", "REAL", "FALSE", "SOURCE", "DESTINATION", "PROTO/PORT", "POLICIES")
    out.write("{:>8}  {:>6}  {:>6}  {:<28}  {:<28}  {:<10}  {}\n".format(*header))
    for flow in flows:
        port = "" if flow.destination_port is None else f"/{flow.destination_port}"
        out.write(
            f"{flow.events:>8}  {flow.real:>6}  {flow.events - flow.real:>6}  "
            f"{flow.source:<28}  {flow.destination:<28}  {flow.protocol + port:<10}  "
            f"{','.join(flow.policies) or '-'}\n"
        )


def _warn(message: str) -> None:
    click.echo(f"k3s-netpol logs: {message}", err=True)


def _report(stats: ParseStats) -> None:
    message = f"k3s-netpol logs: {stats.lines} lines in {len(stats.files)} files, "
    message += f"{stats.garbled} garbled"
    click.echo(message, err=True)
    for sample in stats.garbled_samples[:5]:
        click.echo(f"  garbled: {sample}", err=True)
