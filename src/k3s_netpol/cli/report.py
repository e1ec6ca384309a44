"""`k3s-netpol report`: expected x observed x logged, written as report.json, report.txt and
report.html."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml

from k3s_netpol.cli._exits import ExitCode
from k3s_netpol.files import STDIN, InputFileError, OutputError, read_text, write_file
from k3s_netpol.logs import DropEvent, LogFileError, LogRecord, drop_events, read_records
from k3s_netpol.model import (
    Cluster,
    ManifestError,
    Probe,
    cluster_from_documents,
    load_manifests,
)
from k3s_netpol.report_html import HTML_NAME, write_html
from k3s_netpol.verify import ProbeKey, Report, compare, probe_key, render_matrix, render_table

EXIT_MISMATCH = ExitCode.MISMATCH
EXIT_USAGE = ExitCode.USAGE


class InputError(click.ClickException):
    """Bad input: the message names the file and the field; exits with the usage code."""

    exit_code = EXIT_USAGE


@dataclasses.dataclass(frozen=True)
class PodPlacement:
    ips: dict[str, str]
    nodes: dict[str, str]


def _read(path: Path | str) -> str:
    try:
        return read_text(path)
    except InputFileError as error:
        raise InputError(str(error)) from None


def _load_document(path: Path) -> Any:
    documents = _load_documents(path, _read(path))
    if len(documents) > 1:
        raise InputError(f"{path}: expected one JSON or YAML document, got {len(documents)}")
    return documents[0] if documents else None


def _load_documents(path: Path | str, text: str) -> list[Any]:
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not JSON or YAML: {error}") from None


def _field(path: Path | str, where: str, item: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in item:
        raise InputError(f"{path}: {where}.{name}: missing")
    value = item[name]
    if kind is int and isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{path}: {where}.{name}: expected {kind.__name__}, got {value!r}")
    return value


def _probe_items(path: Path | str, document: Any, key: str) -> list[Mapping[str, Any]]:
    items = document.get(key) if isinstance(document, Mapping) else document
    if not isinstance(items, list):
        raise InputError(f"{path}: {key}: expected a list of probes")
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InputError(f"{path}: {key}[{index}]: expected a mapping")
    return items


def load_expected(path: Path) -> tuple[list[Probe], Any]:
    """The probes of `{"probes": [{"from", "to", "port", "protocol", "allowed"}]}`."""
    document = _load_document(path)
    return expected_probes(path, document), document


def expected_probes(path: Path | str, document: Any) -> list[Probe]:
    probes = []
    for index, item in enumerate(_probe_items(path, document, "probes")):
        where = f"probes[{index}]"
        probes.append(
            Probe(
                source=_field(path, where, item, "from", str),
                destination=_field(path, where, item, "to", str),
                port=_field(path, where, item, "port", int),
                protocol=str(item.get("protocol", "TCP")).upper(),
                allowed=_field(path, where, item, "allowed", bool),
            )
        )
    return probes


def load_observed(path: Path) -> dict[ProbeKey, bool]:
    """Probe results: JSON lines, a list, or `{"results": [...]}`; each with `from`, `to`,
    `port`, `protocol` and `connected` (true, false, or null for a probe that could not run)."""
    text = _read(path)
    stripped = text.lstrip()
    items: list[Mapping[str, Any]]
    if stripped.startswith(("[", "{")) and not _is_json_lines(stripped):
        return observed_results(path, _load_document(path))
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: line {number}: not JSON: {error.msg}") from None
        if not isinstance(item, dict):
            raise InputError(f"{path}: line {number}: expected a JSON object")
        items.append(item)
    return _observations(path, items, "line")


def observed_results(path: Path | str, document: Any) -> dict[ProbeKey, bool]:
    """The observations of `{"results": [...]}` or of a plain list."""
    return _observations(path, _probe_items(path, document, "results"), "results")


def _observations(
    path: Path | str, items: Sequence[Mapping[str, Any]], label: str
) -> dict[ProbeKey, bool]:
    observed: dict[ProbeKey, bool] = {}
    for index, item in enumerate(items):
        where = f"{label}[{index}]" if label == "results" else f"line {index + 1}"
        key = probe_key(
            _field(path, where, item, "from", str),
            _field(path, where, item, "to", str),
            _field(path, where, item, "port", int),
            str(item.get("protocol", "TCP")),
        )
        connected = item.get("connected")
        if connected is None:
            continue
        if not isinstance(connected, bool):
            raise InputError(f"{path}: {where}.connected: expected true, false or null")
        observed[key] = connected
    return observed


def start_times(path: Path | str, document: Any) -> dict[ProbeKey, float]:
    """When each probe was sent: the `started` seconds of `{"results": [...]}` items that have
    it (the netpol_verify node script writes it), for the pod-chain bucket's arithmetic."""
    started: dict[ProbeKey, float] = {}
    for index, item in enumerate(_probe_items(path, document, "results")):
        value = item.get("started")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{path}: results[{index}].started: expected seconds, got {value!r}")
        key = probe_key(
            _field(path, f"results[{index}]", item, "from", str),
            _field(path, f"results[{index}]", item, "to", str),
            _field(path, f"results[{index}]", item, "port", int),
            str(item.get("protocol", "TCP")),
        )
        started[key] = float(value)
    return started


def load_cluster(paths: Sequence[Path]) -> Cluster:
    """The manifests (Namespaces, Pods, NetworkPolicies) that say which side blocks a probe."""
    try:
        return load_manifests(list(paths))
    except ManifestError as error:
        raise InputError(str(error)) from None


def _is_json_lines(text: str) -> bool:
    """Whether the first line is a whole JSON object that is one result (not `{"results": ...}`)
    or is followed by more lines: a one-line JSON-lines file counts."""
    first, _, rest = text.partition("\n")
    try:
        item = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(item, dict) and (bool(rest.strip()) or "results" not in item)


def load_pods(path: Path | str, document: Any | None = None) -> PodPlacement:
    """Pod IPs and nodes from the lab's `{"pods": [{namespace, name, ip, node}]}` or from
    Kubernetes manifests (`kubectl get pods -A -o yaml`, a List, multi-document YAML)."""
    if document is None:
        documents = [item for item in _load_documents(path, _read(path)) if item is not None]
        if len(documents) != 1:
            return _placement_of(path, documents)
        document = documents[0]
    if isinstance(document, Mapping) and isinstance(document.get("pods"), list):
        ips: dict[str, str] = {}
        nodes: dict[str, str] = {}
        for index, item in enumerate(document["pods"]):
            where = f"pods[{index}]"
            if not isinstance(item, Mapping):
                raise InputError(f"{path}: {where}: expected a mapping")
            namespace = _field(path, where, item, "namespace", str)
            key = f"{namespace}/{_field(path, where, item, 'name', str)}"
            ip = item.get("ip")
            if isinstance(ip, str) and ip:
                ips[key] = ip
            node = item.get("node")
            if isinstance(node, str) and node:
                nodes[key] = node
        return PodPlacement(ips, nodes)
    return _placement_of(path, [document])


def _placement_of(path: Path | str, documents: list[Any]) -> PodPlacement:
    try:
        cluster = cluster_from_documents(documents, str(path))
    except ManifestError as error:
        raise InputError(str(error)) from None
    return PodPlacement(
        {pod.key: pod.ip for pod in cluster.pods if pod.ip},
        {pod.key: pod.node for pod in cluster.pods if pod.node},
    )


def parse_log_argument(value: str) -> tuple[str | None, Path]:
    """`NODE=FILE` (or just `FILE` when the node is unknown)."""
    node, separator, file = value.partition("=")
    if not separator:
        return None, Path(value)
    if not node or not file:
        raise InputError(f"--log {value}: expected NODE=FILE")
    return node, Path(file)


def load_events(logs: Iterable[tuple[str | None, Path]]) -> tuple[list[DropEvent], list[str]]:
    """Drop events per node (lines of different nodes are never joined), and parse notes."""
    events: list[DropEvent] = []
    notes: list[str] = []
    for node, path in logs:
        if not path.is_file():
            raise InputError(f"--log {node + '=' if node else ''}{path}: no such file")
        try:
            records, stats = read_records([path])
        except LogFileError as error:
            raise InputError(str(error)) from None
        if node is not None:
            records = [_on_node(record, node) for record in records]
        events.extend(drop_events(records))
        if stats.garbled:
            notes.append(f"{path}: {stats.garbled} garbled line(s) skipped")
    return events, notes


def _on_node(record: LogRecord, node: str) -> LogRecord:
    return dataclasses.replace(record, node=node)


@dataclasses.dataclass
class RunDocument:
    """What the netpol_verify role hands over in one piece: `{"results": [...], "logs": [{"node",
    "text"}], "expected": {"probes": [...]}, "pods": ...}` (expected and pods optional)."""

    observed: dict[ProbeKey, bool]
    logs: list[tuple[str, str]]
    expected: list[Probe] | None
    pods: PodPlacement | None
    started: dict[ProbeKey, float] = dataclasses.field(default_factory=dict)
    cluster: Cluster | None = None


_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def load_run(value: str) -> RunDocument:
    label = "--run -" if value == "-" else value
    if value == "-":
        try:
            document = yaml.safe_load(_read(STDIN))
        except yaml.YAMLError as error:
            raise InputError(f"{label}: not JSON or YAML: {error}") from None
    else:
        document = _load_document(Path(value))
    if not isinstance(document, Mapping):
        raise InputError(f"{label}: expected a mapping with `results` and `logs`")
    logs = []
    for index, entry in enumerate(document.get("logs") or []):
        where = f"logs[{index}]"
        if not isinstance(entry, Mapping):
            raise InputError(f"{label}: {where}: expected a mapping with `node` and `text`")
        node = _field(label, where, entry, "node", str)
        if not _NODE_NAME.match(node):
            raise InputError(f"{label}: {where}.node: {node!r} is not a node name")
        logs.append((node, _field(label, where, entry, "text", str)))
    expected = document.get("expected")
    pods = document.get("pods")
    manifests = document.get("manifests")
    cluster = None
    if manifests is not None:
        try:
            cluster = cluster_from_documents([manifests], f"{label}: manifests")
        except ManifestError as error:
            raise InputError(str(error)) from None
    return RunDocument(
        observed=observed_results(label, document),
        logs=logs,
        expected=expected_probes(f"{label}: expected", expected) if expected is not None else None,
        pods=load_pods(f"{label}: pods", pods) if pods is not None else None,
        started=start_times(label, document),
        cluster=cluster,
    )


def save_run_logs(logs: Sequence[tuple[str, str]], out: Path) -> list[tuple[str | None, Path]]:
    """Write the log portions of a run as `<out>/logs/<node>.log`, to be read like any log."""
    directory = out / "logs"
    saved: list[tuple[str | None, Path]] = []
    for node, text in logs:
        path = directory / f"{node}.log"
        try:
            write_file(path, text.encode("utf-8"))
        except OutputError as error:
            raise InputError(f"--out: {error}") from None
        saved.append((node, path))
    return saved


def build_report(
    expected: Sequence[Probe],
    observed: Mapping[ProbeKey, bool],
    events: Sequence[DropEvent],
    pods: PodPlacement,
    protocols: Sequence[str],
    notes: Sequence[str] = (),
    *,
    cluster: Cluster | None = None,
    started: Mapping[ProbeKey, float] | None = None,
) -> Report:
    wanted = {protocol.upper() for protocol in protocols}
    probed = [probe for probe in expected if probe.protocol.upper() in wanted]
    skipped = len(expected) - len(probed)
    report = compare(
        probed, observed, events, pods.ips, pods.nodes, cluster=cluster, started=started
    )
    extra = list(notes)
    if skipped:
        extra.append(
            f"{skipped} expected probe(s) not on {'/'.join(sorted(wanted))} were not checked"
        )
    return dataclasses.replace(report, notes=report.notes + tuple(extra))


def write_report(report: Report, out: Path) -> tuple[Path, Path, Path]:
    json_path = out / "report.json"
    text_path = out / "report.txt"
    document = report.to_dict()
    try:
        write_file(json_path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
        write_file(text_path, (render_matrix(report) + "\n" + render_table(report)).encode())
    except OutputError as error:
        raise InputError(f"--out: {error}") from None
    return json_path, text_path, _write_html(document, out)


def _write_html(document: Mapping[str, Any], out: Path, written: datetime | None = None) -> Path:
    try:
        return write_html(document, out / HTML_NAME, written)
    except OutputError as error:
        raise InputError(f"--out: {error}") from None


def rewrite_html(out: Path) -> Path:
    """report.html again from OUT/report.json (dated by that file's time), with no other input."""
    json_path = out / "report.json"
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
        written = datetime.fromtimestamp(json_path.stat().st_mtime, UTC)
    except OSError as error:
        raise InputError(f"{json_path}: cannot read: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{json_path}: not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("rows"), list):
        raise InputError(f"{json_path}: rows: missing; not a report written by k3s-netpol report")
    return _write_html(document, out, written)


@click.command("report")
@click.option(
    "--expected",
    "expected_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help='Expected probes: `k3s-netpol expect -o json` output, {"probes": [...]}, or lab.json.',
)
@click.option(
    "--observed",
    "observed_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help='Probe results: JSON lines or {"results": [...]}; from, to, port, protocol, connected.',
)
@click.option(
    "--log",
    "logs",
    multiple=True,
    metavar="NODE=FILE",
    help="A ulogd2 log (LOGEMU or JSON) and the node it came from; repeat per node.",
)
@click.option(
    "--pods",
    "pods_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Pod IPs and nodes: the lab's lab.json or `kubectl get pods -A -o yaml` "
    "(default: the expected file's `pods`).",
)
@click.option(
    "--manifests",
    "manifest_paths",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Namespaces, Pods and NetworkPolicies (repeatable): with them a blocked probe's lines "
    "are looked for on the node whose chain blocks it (source's node for egress).",
)
@click.option(
    "--builtin-workloads",
    is_flag=True,
    help="Add the lab's built-in workloads to --manifests (as `lab compile` does).",
)
@click.option(
    "--run",
    "run_source",
    metavar="FILE|-",
    help="One document with results, logs ([{node, text}]) and optionally expected and pods, "
    "as the netpol_verify role hands it over; its logs are saved as OUT/logs/NODE.log.",
)
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Check only probes between pods of these namespaces (repeatable; default: all).",
)
@click.option(
    "--protocol",
    "protocols",
    multiple=True,
    default=("TCP",),
    show_default=True,
    help="Protocols the probes test; expected probes on others are skipped (curl speaks TCP).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for report.json, report.txt and report.html.",
)
@click.option(
    "--html-only",
    is_flag=True,
    help="Only write OUT/report.html again from OUT/report.json; no other input is read.",
)
@click.option(
    "--open",
    "open_page",
    is_flag=True,
    help="Open report.html in the desktop's browser once written.",
)
def report_command(
    expected_path: Path | None,
    observed_path: Path | None,
    logs: tuple[str, ...],
    pods_path: Path | None,
    manifest_paths: tuple[Path, ...],
    builtin_workloads: bool,
    run_source: str | None,
    namespaces: tuple[str, ...],
    protocols: tuple[str, ...],
    out: Path,
    html_only: bool,
    open_page: bool,
) -> None:
    """Compare expected reachability, probe results and drop logs; write the report.

    A row is ok when the probe's outcome is the expected one, a blocked probe left a line (the
    pod chain's, or its policies' `DROP by policy` lines) for SRC, DST, DPT, PROTO on the node
    whose chain blocks it (with --manifests: the source's node when egress blocks; otherwise the
    destination's node), and an allowed probe left no pod-chain line. A blocked probe without
    lines whose chain's log bucket (10/minute, burst 10) was spent is `rate-limited`, not failed.
    Exits 1 when any row is not ok, 2 on bad input.

    \b
    Examples:
      k3s-netpol report --expected expected.json --observed observed.jsonl \\
          --log node1=node1.log --pods lab.json --out artifacts/
      k3s-netpol report --expected lab.json --run - --out artifacts/ < run.json
      k3s-netpol report --html-only --open --out artifacts/
    """
    if html_only:
        given = [
            name
            for name, value in (
                ("--expected", expected_path),
                ("--observed", observed_path),
                ("--log", logs),
                ("--pods", pods_path),
                ("--run", run_source),
                ("--namespace", namespaces),
            )
            if value
        ]
        if given:
            raise InputError(f"--html-only reads only OUT/report.json; drop {', '.join(given)}")
        html_path = rewrite_html(out)
        click.echo(f"wrote {html_path}")
        if open_page:
            click.launch(str(html_path))
        return
    run = load_run(run_source) if run_source is not None else None
    expected_document: Any = None
    if expected_path is not None:
        expected, expected_document = load_expected(expected_path)
    elif run is not None and run.expected is not None:
        expected = run.expected
    else:
        raise InputError("--expected: needed (or `expected` in the --run document)")
    if observed_path is not None:
        observed = load_observed(observed_path)
    elif run is not None:
        observed = run.observed
    else:
        raise InputError("--observed: needed (or --run)")
    if pods_path is not None:
        pods = load_pods(pods_path)
    elif run is not None and run.pods is not None:
        pods = run.pods
    elif isinstance(expected_document, Mapping) and "pods" in expected_document:
        pods = load_pods(str(expected_path), expected_document)
    else:
        raise InputError("--pods: needed: nothing else gives the pods' IPs")
    if namespaces:
        wanted = set(namespaces)
        expected = [
            probe
            for probe in expected
            if probe.source.split("/")[0] in wanted and probe.destination.split("/")[0] in wanted
        ]
    log_files = [parse_log_argument(value) for value in logs]
    if run is not None:
        log_files += save_run_logs(run.logs, out)
    events, notes = load_events(log_files)
    if builtin_workloads:
        from k3s_netpol.lab.common import BUILTIN_WORKLOADS

        manifest_paths = (*manifest_paths, BUILTIN_WORKLOADS)
    cluster = load_cluster(manifest_paths) if manifest_paths else None
    if cluster is None and run is not None:
        cluster = run.cluster
    started = run.started if run is not None else {}
    try:
        report = build_report(
            expected, observed, events, pods, protocols, notes, cluster=cluster, started=started
        )
    except ValueError as error:
        raise InputError(f"{pods_path or expected_path or run_source}: {error}") from None
    json_path, text_path, html_path = write_report(report, out)
    click.echo(render_matrix(report), nl=False)
    click.echo(f"wrote {json_path}, {text_path} and {html_path}")
    if open_page:
        click.launch(str(html_path))
    if not report.ok:
        click.get_current_context().exit(EXIT_MISMATCH)
