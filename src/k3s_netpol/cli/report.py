"""`k3s-netpol report`: expected x observed x logged, written as report.json and report.txt."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from k3s_netpol.logs import DropEvent, LogFileError, LogRecord, drop_events, read_records
from k3s_netpol.model import ManifestError, Probe, load_manifests
from k3s_netpol.verify import ProbeKey, Report, compare, probe_key, render_matrix, render_table

EXIT_MISMATCH = 1
EXIT_USAGE = 2


class InputError(click.ClickException):
    """Bad input: the message names the file and the field; exits with the usage code."""

    exit_code = EXIT_USAGE


@dataclasses.dataclass(frozen=True)
class PodPlacement:
    ips: dict[str, str]
    nodes: dict[str, str]


def _load_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not JSON or YAML: {error}") from None


def _field(path: Path, where: str, item: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in item:
        raise InputError(f"{path}: {where}.{name}: missing")
    value = item[name]
    if kind is int and isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{path}: {where}.{name}: expected {kind.__name__}, got {value!r}")
    return value


def _probe_items(path: Path, document: Any, key: str) -> list[Mapping[str, Any]]:
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
    return probes, document


def load_observed(path: Path) -> dict[ProbeKey, bool]:
    """Probe results: JSON lines, a list, or `{"results": [...]}`; each with `from`, `to`,
    `port`, `protocol` and `connected` (true, false, or null for a probe that could not run)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None
    stripped = text.lstrip()
    items: list[Mapping[str, Any]]
    if stripped.startswith(("[", "{")) and not _is_json_lines(stripped):
        items = _probe_items(path, _load_document(path), "results")
        label = "results"
    else:
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
        label = "line"
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


def _is_json_lines(text: str) -> bool:
    first, _, rest = text.partition("\n")
    if not rest.strip():
        return False
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    return True


def load_pods(path: Path, document: Any | None = None) -> PodPlacement:
    """Pod IPs and nodes from the lab's `{"pods": [{namespace, name, ip, node}]}` or from
    Kubernetes manifests (`kubectl get pods -A -o yaml`, a List, multi-document YAML)."""
    if document is None:
        document = _load_document(path)
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
    try:
        cluster = load_manifests([path])
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


def build_report(
    expected: Sequence[Probe],
    observed: Mapping[ProbeKey, bool],
    events: Sequence[DropEvent],
    pods: PodPlacement,
    protocols: Sequence[str],
    notes: Sequence[str] = (),
) -> Report:
    wanted = {protocol.upper() for protocol in protocols}
    probed = [probe for probe in expected if probe.protocol.upper() in wanted]
    skipped = len(expected) - len(probed)
    report = compare(probed, observed, events, pods.ips, pods.nodes)
    extra = list(notes)
    if skipped:
        extra.append(
            f"{skipped} expected probe(s) not on {'/'.join(sorted(wanted))} were not checked"
        )
    return dataclasses.replace(report, notes=report.notes + tuple(extra))


def write_report(report: Report, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    text_path = out / "report.txt"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    text_path.write_text(render_matrix(report) + "\n" + render_table(report), encoding="utf-8")
    return json_path, text_path


@click.command("report")
@click.option(
    "--expected",
    "expected_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help='Expected probes: `k3s-netpol expect -o json` output, {"probes": [...]}.',
)
@click.option(
    "--observed",
    "observed_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Probe results, JSON lines: from, to, port, protocol, connected.",
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
    help="Directory for report.json and report.txt.",
)
def report_command(
    expected_path: Path,
    observed_path: Path,
    logs: tuple[str, ...],
    pods_path: Path | None,
    protocols: tuple[str, ...],
    out: Path,
) -> None:
    """Compare expected reachability, probe results and drop logs; write the report.

    A row is ok when the probe's outcome is the expected one, a blocked probe left the pod
    chain's drop line (SRC, DST, DPT, PROTO) on the node hosting the destination pod, and an
    allowed probe left none. Exits 1 when any row is not ok.

    \b
    Example:
      k3s-netpol report --expected expected.json --observed observed.jsonl \\
          --log node1=node1.log --pods lab.json --out artifacts/
    """
    expected, expected_document = load_expected(expected_path)
    observed = load_observed(observed_path)
    if pods_path is not None:
        pods = load_pods(pods_path)
    elif isinstance(expected_document, Mapping) and "pods" in expected_document:
        pods = load_pods(expected_path, expected_document)
    else:
        raise InputError(f"--pods: needed, {expected_path} has no `pods` with the pods' IPs")
    events, notes = load_events(parse_log_argument(value) for value in logs)
    try:
        report = build_report(expected, observed, events, pods, protocols, notes)
    except ValueError as error:
        raise InputError(f"{pods_path or expected_path}: {error}") from None
    json_path, text_path = write_report(report, out)
    click.echo(render_matrix(report), nl=False)
    click.echo(f"wrote {json_path} and {text_path}")
    if not report.ok:
        click.get_current_context().exit(EXIT_MISMATCH)
