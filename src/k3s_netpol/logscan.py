"""The fast path of `k3s-netpol logs --json/--summary`: same answers as logs.py, in bulk.

logs.py parses one line into one LogRecord and joins records one by one: about a hundred
microseconds a line. Here a file is read in large chunks split at line ends; the C splitter
(_logemu.c), or without it one regex (`findall`), pulls the fields of every canonical ulogd2
LOGEMU line of a chunk into plain tuples, and the packets are joined on those tuples. Chunks run
in worker processes on big inputs; they read them through the parent's one open descriptor of
the file (a rename cannot make them read another file; a file that shrinks is an error).

Exactness with the full path (logs.read_records + logs.EventJoiner, as the CLI runs them):
- The chunk regex (and the C splitter, which takes the same lines and gives the same groups)
  accepts only a subset of the lines logs.parse_logemu_line accepts (single spaces, IPv4, a
  protocol with ports, no IP flag but DF, canonical numbers) and, where both accept a line,
  pulls the same fields. Every other line (IPv6, ICMP, JSON, odd spacing,
  garbled) goes through logs.parse_line itself, so garbled lines are counted and described
  identically.
- Lines are joined by logs.PacketJoiner, the joiner of the full path too. Which lines form one
  event depends only on the lines with the same packet key; every closed event gets an order
  key from the position of the line that closed it (or, closed for age, from its first line's),
  so the order of `--json` output and the tie order of `--summary` are the full path's.
- A worker joins its chunk from an empty state. Only keys first seen in a chunk's first
  `2 * window` records can belong to groups still open from the chunk before; the worker hands
  their lines back unjoined and the parent joins them with the groups left open by the chunk
  before, in order.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import gzip
import heapq
import itertools
import json
import operator
import os
import re
import shutil
import signal
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from k3s_netpol.logs import (
    HEAD,
    JOIN_WINDOW,
    TCP_FLAG_NAMES,
    Emit,
    Enricher,
    FlowSummary,
    Group,
    LogChangedError,
    LogFileError,
    LogParseError,
    LogRecord,
    PacketJoiner,
    ParseStats,
    check_gzip_start,
    parse_line,
)

if TYPE_CHECKING:
    from multiprocessing.pool import Pool

# --summary merges each chunk's per-flow tallies in the parent: fewer, bigger chunks.
CHUNK_BYTES = {"events": 16 << 20, "summary": 32 << 20}
PARALLEL_MIN_BYTES = 32 << 20
# A worker reads and splits its chunk this much at a time (a --summary chunk is a worker's
# whole share of the input: one tally per worker to send back and merge).
SLICE_BYTES = 16 << 20

try:
    from k3s_netpol import _logemu
except ImportError:  # built without a C compiler: the regex below does the same, slower
    _logemu = None  # type: ignore[assignment]

_MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_NUMBER = "(?!0[0-9])([0-9]+)"  # canonical: equal text is an equal int
# A port: canonical, 0 to 65535 (a bigger number leaves the line to the full parser, which
# counts it garbled).
_PORT = (
    "(?!0[0-9])(?![0-9]{6})(?!6553[6-9]|655[4-9][0-9]|65[6-9][0-9]{2}|6[6-9][0-9]{3}|[7-9][0-9]{4})"
    "([0-9]+)"
)
# An IPv4 address, each part 0 to 255 without leading zeros; anything else (IPv6, 999.0.0.1)
# is left to the full parser.
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_ADDRESS = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"


def _canonical_logemu(*, stamp: bool, tail: bool) -> re.Pattern[str]:
    """ulogd2's printpkt output as it really is written; see the module docstring for why.

    A TCP line's SEQ joins its key; any other protocol's line with a SEQ= is left to the full
    parser, which ignores that SEQ.
    """
    capture_stamp = "(" if stamp else "(?:"
    capture_tail = "(" if tail else "(?:"
    return re.compile(
        rf"^{capture_stamp}{_MONTH} [ 1-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]) "
        r"([^ =\n]+) ([^=\n]*)(?<= )IN=[^ \n]* OUT=[^ \n]* (?:MAC=[^ \n]* |)"
        rf"SRC=({_IPV4_ADDRESS} DST={_IPV4_ADDRESS}) "
        rf"LEN=[0-9]+ TOS=[^ \n]+ PREC=[^ \n]+ TTL=[0-9]+ ID={_NUMBER} (?:DF |)"
        r"PROTO=(?:(?=TCP )|(?![A-Z]+ SPT=[0-9]+ DPT=[0-9]+ SEQ=))"
        rf"([A-Z]+) SPT={_PORT} DPT={_PORT}(?: SEQ={_NUMBER}|(?! SEQ=))"
        rf" {capture_tail}[^\n]*)(?<= )MARK=(?:0x|){capture_tail}[0-9A-Fa-f]+)$",
        re.MULTILINE,
    )


# Rows: --json (stamp, node, prefix, "src DST=dst", id, proto, spt, dpt, seq, tail, mark, key);
# --summary (node, prefix, "src DST=dst", proto, dpt, key). Absent numbers are "". The regex's
# groups are a --json row without its key (--summary: with id, spt and seq, which only its key
# needs: see _Layout.fields). The key names the packet: its parts (node,
# "src DST=dst", id, proto, spt, dpt, seq) joined by newlines, one string that hashes and
# compares at C speed; a tuple of the parts when one is not a string without a newline.
_EVENT_ROW = _canonical_logemu(stamp=True, tail=True)
_SUMMARY_ROW = _canonical_logemu(stamp=False, tail=False)
Row = tuple[Any, ...]
PacketKey = str | tuple[Any, ...]


class _Layout(NamedTuple):
    pattern: re.Pattern[str]
    prefix: int  # where a row holds the prefix
    key_parts: Callable[[Row], tuple[Any, ...]]  # of the regex's groups
    fields: Callable[[Row], tuple[Any, ...]] | None  # the groups a row keeps (None: all)
    key: Callable[[Row], PacketKey]


_LAYOUTS = {
    "events": _Layout(
        _EVENT_ROW, 2, operator.itemgetter(1, 3, 4, 5, 6, 7, 8), None, operator.itemgetter(-1)
    ),
    "summary": _Layout(
        _SUMMARY_ROW,
        1,
        operator.itemgetter(0, 2, 3, 4, 5, 6, 7),
        operator.itemgetter(0, 1, 2, 4, 6),
        operator.itemgetter(-1),
    ),
}


def packet_key(parts: tuple[Any, ...]) -> PacketKey:
    """The key of a packet with these parts, as the C splitter writes it."""
    if all(isinstance(part, str) and "\n" not in part for part in parts):
        return "\n".join(parts)
    return parts


def _keyed(groups: tuple[Any, ...], layout: _Layout) -> Row:
    """A row: the regex's groups (or a record's, in their places) it keeps, and the packet key."""
    kept = groups if layout.fields is None else layout.fields(groups)
    return (*kept, packet_key(layout.key_parts(groups)))


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def row_of_record(record: LogRecord, mode: str) -> Row:
    """A record the full parser made, as the row the chunk regex would have made."""
    tail = " " + " ".join(sorted(record.flags))
    row = (
        record.time,
        record.node,
        record.prefix,
        f"{record.source} DST={record.destination}",
        _text(record.ip_id),
        record.protocol,
        _text(record.source_port),
        _text(record.destination_port),
        _text(record.tcp_seq),
        tail,
        None if record.mark is None else format(record.mark, "x"),
    )
    return _keyed(row if mode == "events" else row[1:9], _LAYOUTS[mode])


# --- one chunk: rows, then groups -------------------------------------------------------------


class FileRange(NamedTuple):
    """Bytes [start, end) of a file the parent holds open, read by a worker through the
    parent's descriptor (`source`, /proc/PID/fd/N: the same file even after a rename); end is
    just after a newline but for the file's last range."""

    name: str
    source: str
    start: int
    end: int
    last: bool


class ChunkTask(NamedTuple):
    data: bytes | FileRange
    name: str
    node: str | None
    line_base: int  # lines of this file before the chunk
    final: bool  # the file's last chunk (it may end without a newline)
    mode: str
    window: int
    spool: str | None = None  # a directory for a worker's --json output (see _spooled)


class ChunkResult(NamedTuple):
    lines: int
    records: int
    garbled: list[tuple[int, str]]  # (line number counted from the task's line_base, why)
    # events closed in the chunk: order keys (see logs.PacketJoiner) and payloads; --json
    # sends its JSON lines as one UTF-8 string and where each line ends in it, the string in a
    # spool file when it has one (see _spooled); --summary: the tallies
    keys: list[int]
    payloads: list[Any]
    ends: list[int]
    head: list[tuple[int, Row, Any]]  # (position, row, payload) of keys the chunk before may own
    open_groups: list[Group]


def _lines_of(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _split(data: bytes | memoryview, mode: str) -> tuple[list[Row | None], int] | None:
    """Each line's row from the C splitter (None where it leaves the line to the regex) and
    the None count; None without the splitter or for a chunk it leaves to the regex."""
    if _logemu is None:
        return None
    return _logemu.rows(data, mode == "events")


def chunk_rows(
    task: ChunkTask, data: bytes | memoryview
) -> tuple[list[Row], list[str], list[tuple[int, str]], int]:
    """Rows of a chunk, each row's origin (JSON-quoted; --json only), the garbled lines
    (line number counted from task.line_base, why) and the number of lines."""
    layout = _LAYOUTS[task.mode]
    quoted_name = json.dumps(task.name)[:-1] + ":"
    split = _split(data, task.mode)
    text = ""
    if split is None:
        text = _decode(data)
        rows: list[Row] = [_keyed(groups, layout) for groups in layout.pattern.findall(text)]
        line_count = text.count("\n") + (0 if not text or text.endswith("\n") else 1)
        all_canonical = len(rows) == line_count
        per_line: list[Row | None] | None = None
    else:
        per_line, misses = split
        line_count = len(per_line)
        all_canonical = misses == 0
        rows = per_line  # type: ignore[assignment]  # no None in it when all_canonical
    garbled: list[tuple[int, str]] = []
    if all_canonical:
        base = task.line_base + 1
        origins = (
            [f'{quoted_name}{number}"' for number in range(base, base + line_count)]
            if task.mode == "events"
            else []
        )
        return rows, origins, garbled, line_count
    if per_line is not None:
        text = _decode(data)
    rows = []
    origins = []
    match = layout.pattern.match
    lines = _lines_of(text)
    for index, line in enumerate(lines):
        number = task.line_base + index + 1
        row = None if per_line is None else per_line[index]
        if row is None:
            found = match(line)
            row = None if found is None else _keyed(found.groups(""), layout)
        if row is not None:
            rows.append(row)
        elif not line.strip():
            continue
        else:
            origin = f"{task.name}:{number}"
            unterminated = task.final and index == len(lines) - 1 and not text.endswith("\n")
            try:
                record = parse_line(line if unterminated else line + "\n", origin, task.node)
            except LogParseError as error:
                garbled.append((number, str(error)))
                continue
            rows.append(row_of_record(record, task.mode))
        if task.mode == "events":
            origins.append(f'{quoted_name}{number}"')
    return rows, origins, garbled, line_count


def summary_entry(group: Group, real: bool) -> EventClass:
    """What --summary keeps of an event: its class (see Tallies)."""
    row = group[3]
    return "\n".join([row[2], row[3], row[4], row[0] or "", "1" if real else "", *group[1]])


def _joiner(layout: _Layout, window: int, emit: Emit, *, collect: bool) -> PacketJoiner:
    return PacketJoiner(window, layout.prefix, emit, collect=collect)


# --summary counts events by class: "src DST=dst", protocol, port, node, "1" if real, and the
# policies, joined by newlines (none of them holds one: the splitter's fields cannot, and
# parse_json_line refuses them in a host name or prefix; a string hashes once, a tuple at
# every look-up). A part of the input (a worker's chunk) gives its events per flow and, per
# flow, its classes: {class: [order key of the first such event (where the full path emits
# it, counted from the part's start), events]}. Per-flow work waits until the flows to print
# are known (summary_flows).
EventClass = str
FlowKey = tuple[str, str, str]  # "src DST=dst", protocol, port
PartCounts = tuple[dict[FlowKey, int], dict[FlowKey, dict[EventClass, list[int]]]]


def _part_counts(orders: list[int], classes: list[EventClass]) -> PartCounts:
    """The counts of events of these classes, closed at these (increasing) order keys."""
    # Counting and finding each class's first order key at C speed: a dict keeps the value
    # written last, so the reversed pairs leave each class its first key.
    firsts = dict(zip(reversed(classes), reversed(orders), strict=True))
    totals: dict[FlowKey, int] = {}
    by_flow: dict[FlowKey, dict[EventClass, list[int]]] = {}
    get_total, get_classes = totals.get, by_flow.get
    for event_class, count in Counter(classes).items():
        addresses, protocol, port, _ = event_class.split("\n", 3)
        flow = (addresses, protocol, port)
        totals[flow] = get_total(flow, 0) + count
        known = get_classes(flow)
        if known is None:
            by_flow[flow] = {event_class: [firsts[event_class], count]}
        else:
            known[event_class] = [firsts[event_class], count]
    return totals, by_flow


@dataclass
class FlowCounts:
    """What --summary counted: events per flow, and each part's classes (see PartCounts) with
    the order key its part starts at."""

    totals: dict[FlowKey, int] = field(default_factory=dict)
    parts: list[tuple[int, dict[FlowKey, dict[EventClass, list[int]]]]] = field(
        default_factory=list
    )

    def add(self, base: int, counts: PartCounts) -> None:
        part_totals, by_flow = counts
        if not self.totals:
            self.totals.update(part_totals)
        else:
            get = self.totals.get
            for flow, events in part_totals.items():
                self.totals[flow] = get(flow, 0) + events
        self.parts.append((base, by_flow))

    def classes(self, flow: FlowKey) -> list[tuple[int, int, EventClass]]:
        """(first order key, events, class) of a flow's classes, in the order they came."""
        merged: dict[EventClass, list[int]] = {}
        for base, by_flow in self.parts:
            for event_class, (order, events) in by_flow.get(flow, {}).items():
                seen = merged.get(event_class)
                if seen is None:
                    merged[event_class] = [base + order, events]
                else:
                    seen[0] = min(seen[0], base + order)
                    seen[1] += events
        return sorted(
            (order, events, event_class) for event_class, (order, events) in merged.items()
        )


def _scan_chunk(task: ChunkTask) -> ChunkResult:
    """Worker: parse a chunk and join it from an empty state (positions relative to it),
    SLICE_BYTES at a time."""
    layout = _LAYOUTS[task.mode]
    events = task.mode == "events"
    keys: list[int] = []
    payloads: list[Any] = []
    emit = _WORKER.emitter(task.mode, keys, payloads)
    joiner = _joiner(layout, task.window, emit, collect=events)
    head: list[tuple[int, Row, Any]] | None = None
    garbled: list[tuple[int, str]] = []
    line_count = records = 0
    for data, last in _slices(task.data):
        part = task._replace(line_base=task.line_base + line_count, final=task.final and last)
        rows, origins, part_garbled, part_lines = chunk_rows(part, data)
        garbled.extend(part_garbled)
        items: Iterable[Any] = zip(rows, origins, strict=True) if events else itertools.repeat(None)
        positioned = zip(itertools.count(records), rows, items)
        if head is None:
            head_end = min(2 * task.window, len(rows))
            joiner.open_groups.update(dict.fromkeys(map(layout.key, rows[:head_end]), HEAD))
            head = list(itertools.islice(positioned, head_end))
        joiner.feed(positioned, head=head)
        line_count += part_lines
        records += len(rows)
    ends: list[int] = []
    if events:
        text = "".join(payloads)
        sizes: Iterable[int] = (
            map(len, payloads) if text.isascii() else (len(line.encode()) for line in payloads)
        )
        ends = list(itertools.accumulate(sizes))
        payloads = [_spooled(text.encode(), task.spool)]
    return ChunkResult(
        lines=line_count,
        records=records,
        garbled=garbled,
        keys=keys,
        payloads=payloads if events else [_part_counts(keys, payloads)],
        ends=ends,
        head=head or [],
        open_groups=[group for group in joiner.open_groups.values() if group is not HEAD],
    )


def _spooled(lines: bytes, spool: str | None) -> bytes | Path:
    """A worker's JSON lines, written to a file in `spool` when it has one.

    Megabytes through the pool's pipe cost the parent a copy per 64 KiB read and two more to
    unpickle; from a file it reads them at once. Inline when the spool cannot take them.
    """
    if spool is None:
        return lines
    try:
        handle, name = tempfile.mkstemp(dir=spool, suffix=".jsonl")
        with open(handle, "wb") as out:
            out.write(lines)
    except OSError:
        return lines
    return Path(name)


def _unspooled(payload: bytes | Path) -> bytes:
    if isinstance(payload, bytes):
        return payload
    try:
        return payload.read_bytes()
    except OSError as error:
        raise LogFileError(f"{payload}: a worker's output is gone: {error}") from None
    finally:
        with contextlib.suppress(OSError):
            payload.unlink()


def _decode(data: bytes | memoryview) -> str:
    # As TextIOWrapper(newline=None) reads: \r\n and \r end lines too.
    if isinstance(data, memoryview):
        data = data.tobytes()
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data.decode("utf-8", errors="replace")


# --- what an event becomes: a JSON line, or a summary entry -------------------------------------

_encode: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _json_text(value: str | None) -> str:
    return "null" if value is None else str(_encode(value))


_FLAG_CACHE: dict[str, str] = {}
_MARK_CACHE: dict[str | None, str] = {None: "null"}


def _flags_json(tail: str) -> str:
    text = _FLAG_CACHE.get(tail)
    if text is None:
        names = sorted(TCP_FLAG_NAMES.intersection(tail.split()))
        text = "[" + ", ".join(f'"{name}"' for name in names) + "]"
        if len(_FLAG_CACHE) > 4096:
            _FLAG_CACHE.clear()
        _FLAG_CACHE[tail] = text
    return text


def _mark_json(mark: str | None) -> str:
    text = _MARK_CACHE.get(mark)
    if text is None:
        text = _MARK_CACHE[mark] = str(int(mark, 16)) if mark else "null"
    return text


_EVENT_LINE = (
    '{"time": %s, "node": %s, "source": "%s", "protocol": %s, "source_port": %s, '
    '"destination_port": %s, %s, "real": %s, "ip_id": %s, "tcp_seq": %s, "flags": %s, '
    '"mark": %s, "lines": %d, "passes": %d, "origins": [%s], %s}\n'
)
_BETWEEN_ADDRESSES = '", "destination": "'


def _view_texts(
    source_pod: str | None, destination_pod: str | None, expected: str | None
) -> tuple[str, str]:
    """The view's part of an event's JSON: for a real drop, and for a policy line only."""
    allowed = expected == "allowed"
    view = (
        f'"source_pod": {_json_text(source_pod)}, '
        f'"destination_pod": {_json_text(destination_pod)}, '
        f'"expected": {_json_text(expected)}, "flagged": {"true" if allowed else "false"}'
    )
    real_verdict = "unexpected drop" if allowed else "drop"
    false_verdict = "false drop" if allowed else "policy line only"
    return f'{view}, "verdict": "{real_verdict}"', f'{view}, "verdict": "{false_verdict}"'


_UNKNOWN_VIEW = _view_texts(None, None, None)


class EventFormatter:
    """Writes an event exactly as `json.dumps(EventView.to_dict())` with ", "/": " would.

    The parts that repeat from event to event (a flow's names and verdicts, a policy list, a
    time stamp, a node) are cached as ready JSON text. Addresses need no escaping: the chunk
    regex and the full parser take only IPv4 and IPv6 addresses.
    """

    def __init__(self, enricher: Enricher) -> None:
        self.enricher = enricher
        self._names = bool(enricher.pods)  # else no flow has a pod name or an expectation
        self._views: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._policies: dict[tuple[str, ...], str] = {}
        self._texts: dict[str | None, str] = {}  # time stamps, nodes, protocols

    def _view(self, addresses: str, port: str, protocol: str) -> tuple[str, str]:
        if not self._names:
            return _UNKNOWN_VIEW
        flow_key = (addresses, port, protocol)
        known = self._views.get(flow_key)
        if known is None:
            source, destination = addresses.split(" DST=")
            known = _view_texts(
                *self.enricher.describe(source, destination, int(port) if port else None, protocol)
            )
            if len(self._views) > 1 << 19:
                self._views.clear()
            self._views[flow_key] = known
        return known

    def _policy_text(self, policies: tuple[str, ...]) -> str:
        text = self._policies.get(policies)
        if text is None:
            names = [_json_text(policy) for policy in policies]
            first = names[0] if names else "null"
            text = self._policies[policies] = f'"policy": {first}, "policies": [{", ".join(names)}]'
        return text

    def _text(self, value: str | None) -> str:
        text = self._texts.get(value)
        if text is None:
            if len(self._texts) > 4096:
                self._texts.clear()
            text = self._texts[value] = _json_text(value)
        return text

    def close(self, group: Group, real: bool) -> str:
        records = group[2]  # (row, origin) of each line
        first_row = group[3]
        stamp, node, _, addresses, ip_id, protocol, source_port, destination_port, seq = first_row[
            :9
        ]
        texts = self._texts
        # Cache hits inline (each cached text is non-empty); misses go through the methods.
        view = (
            _UNKNOWN_VIEW if not self._names else self._view(addresses, destination_port, protocol)
        )
        policies = tuple(group[1])
        mark = records[-1][0][10]
        if protocol == "TCP":
            tail = first_row[9]
            flags = _FLAG_CACHE.get(tail) or _flags_json(tail)
            tcp_seq = seq or "null"
        else:
            flags, tcp_seq = "[]", "null"
        return _EVENT_LINE % (
            texts.get(stamp) or self._text(stamp),
            texts.get(node) or self._text(node),
            addresses.replace(" DST=", _BETWEEN_ADDRESSES),
            texts.get(protocol) or self._text(protocol),
            source_port or "null",
            destination_port or "null",
            self._policies.get(policies) or self._policy_text(policies),
            "true" if real else "false",
            ip_id or "null",
            tcp_seq,
            flags,
            _MARK_CACHE.get(mark) or _mark_json(mark),
            len(records),
            group[5],
            records[0][1] if len(records) == 1 else ", ".join([origin for _, origin in records]),
            view[0] if real else view[1],
        )


@dataclass
class _WorkerState:
    formatter: EventFormatter | None = None

    def emitter(self, mode: str, keys: list[int], payloads: list[Any]) -> Emit:
        """Where a worker's closed events go: JSON lines, or event classes (see PartCounts),
        with their order keys."""
        close = self.closer(mode)

        def write(order_key: int, group: Group, real: bool) -> None:
            keys.append(order_key)
            payloads.append(close(group, real))

        return write

    def closer(self, mode: str) -> Callable[[Group, bool], Any]:
        if mode == "summary":
            return summary_entry
        assert self.formatter is not None
        return self.formatter.close


_WORKER = _WorkerState()


def _init_worker(formatter: EventFormatter | None) -> None:
    # A worker ends when the pool terminates it, whatever handler its parent had installed
    # (ansible-runner installs one for SIGTERM); Ctrl-C is the parent's to handle.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.disable()  # as in scan(); a forkserver worker does not inherit the parent's setting
    _WORKER.formatter = formatter


# --- reading: chunks at line ends, plain or gzip ------------------------------------------------


class _FileEnd(NamedTuple):
    name: str
    error: str | None  # why reading stopped early ("file ends badly"), else None
    stream: IO[bytes] | None = None  # the file the workers read through, closed at its end
    size: int = 0  # its size when its ranges were cut


def _read_chunks(path: Path, chunk_bytes: int) -> Iterator[tuple[bytes, bool] | _FileEnd]:
    """(data, last) chunks ending at a line end; then _FileEnd. Opening errors raise."""
    name = str(path)
    try:
        stream: IO[bytes] | gzip.GzipFile = (
            gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
        )
    except OSError as error:
        raise LogFileError(f"{path}: cannot read: {error.strerror or error}") from None
    pending = b""
    first_read_done = False
    read = getattr(stream, "read1", stream.read)
    plain = path.suffix != ".gz"
    try:
        size_at_open = os.fstat(stream.fileno()).st_size if plain else 0
        total = 0
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                block = read(chunk_bytes)
            except (OSError, EOFError) as error:
                if not first_read_done:
                    check_gzip_start(path, error)
                # A truncated .gz: the full path reads every whole line before the error
                # and loses the partial one.
                data = pending + b"".join(parts)
                cut = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1))
                if cut >= 0:
                    yield data[: cut + 1], False
                yield _FileEnd(name, f"file ends badly: {error}")
                return
            first_read_done = True
            if not block:
                break
            parts.append(block)
            size += len(block)
            total += len(block)
            if size < chunk_bytes:
                continue
            data = pending + b"".join(parts)
            parts, size = [], 0
            cut = data.rfind(b"\n")
            if cut < 0:
                pending = data
                continue
            yield data[: cut + 1], False
            pending = data[cut + 1 :]
        if total < size_at_open:
            raise LogChangedError.of(name, f"shrank from {size_at_open} bytes to {total}")
        data = pending + b"".join(parts)
        if data:
            yield data, True
        yield _FileEnd(name, None)
    finally:
        stream.close()


def _plain_ranges(name: str, stream: IO[bytes], size: int, chunk_bytes: int) -> list[FileRange]:
    """Split the first `size` bytes of an open plain file at newlines into ranges of about
    chunk_bytes, for workers to read through the parent's descriptor."""
    source = f"/proc/{os.getpid()}/fd/{stream.fileno()}"
    ranges: list[FileRange] = []
    start = 0
    while start < size:
        end = start + chunk_bytes
        while end < size:
            block = os.pread(stream.fileno(), 1 << 16, end)
            newline = block.find(b"\n")
            if newline >= 0:
                end += newline + 1
                break
            end += len(block) or size
        end = min(end, size)
        ranges.append(FileRange(name, source, start, end, end == size))
        start = end
    return ranges


def _slices(data: bytes | FileRange) -> Iterator[tuple[memoryview, bool]]:
    """A chunk's bytes, SLICE_BYTES or so at a time cut after a newline, and whether each is
    the chunk's last. A range is read through the parent's descriptor into one buffer, reused
    from slice to slice: a slice is valid until the next is asked for."""
    if isinstance(data, bytes):
        whole = memoryview(data)
        start = 0
        while len(data) - start > SLICE_BYTES:
            cut = data.rfind(b"\n", start, start + SLICE_BYTES) + 1
            if cut <= start:
                break
            yield whole[start:cut], False
            start = cut
        yield whole[start:], True
        return
    try:
        descriptor = os.open(data.source, os.O_RDONLY)
    except OSError as error:
        raise LogFileError(f"{data.name}: cannot read: {error.strerror or error}") from None
    try:
        buffer = bytearray(min(SLICE_BYTES, data.end - data.start))
        view = memoryview(buffer)
        start, kept = data.start, 0  # kept: bytes of an unfinished line at the buffer's start
        while True:
            length = min(len(buffer) - kept, data.end - start)
            if length and os.preadv(descriptor, [view[kept : kept + length]], start) < length:
                raise LogChangedError.of(data.name, f"shrank below {data.end} bytes")
            start += length
            filled = kept + length
            if start == data.end:
                if not data.last and not buffer.endswith(b"\n", 0, filled):
                    raise LogChangedError.of(data.name, f"changed at byte {data.end}")
                yield view[:filled], True
                return
            cut = buffer.rfind(b"\n", 0, filled) + 1
            if cut == 0:  # a line longer than the buffer
                buffer = bytearray(2 * len(buffer))
                buffer[:filled] = view[:filled]
                view, kept = memoryview(buffer), filled
                continue
            yield view[:cut], False
            buffer[: filled - cut] = view[cut:filled]
            kept = filled - cut
    except OSError as error:
        if isinstance(error, LogFileError):
            raise
        raise LogFileError(f"{data.name}: cannot read: {error.strerror or error}") from None
    finally:
        os.close(descriptor)


def _range_line_count(data: FileRange) -> int:
    return sum(_line_count(part) for part, _ in _slices(data))


def _line_count(data: bytes | memoryview) -> int:
    if isinstance(data, memoryview):
        data = data.tobytes()
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    count = data.count(b"\n")
    return count + (0 if not data or data.endswith(b"\n") else 1)


# --- the parent: chunks in order, boundaries joined, events in the full path's order -----------


@dataclass
class _Merger:
    """Joins what the workers left to the parent (the lines of keys a chunk's head holds, the
    groups open at its end) with what came before, and emits each chunk's events with the
    parent's cut in where their order keys fall."""

    mode: str
    window: int
    emit: Callable[[list[Any]], object]
    offset: int = 0  # records before the current chunk
    counts: FlowCounts = field(default_factory=FlowCounts)  # --summary
    closed: list[tuple[int, Group, bool]] = field(default_factory=list)
    joiner: PacketJoiner = field(init=False)

    def __post_init__(self) -> None:
        def closed(order_key: int, group: Group, real: bool) -> None:
            self.closed.append((order_key, group, real))

        self.joiner = _joiner(
            _LAYOUTS[self.mode], self.window, closed, collect=self.mode == "events"
        )

    def take(self, result: ChunkResult) -> None:
        offset = self.offset
        end = offset + result.records
        self.joiner.feed(
            (offset + position, row, payload) for position, row, payload in result.head
        )
        self.joiner.adopt(result.open_groups, offset)
        self.joiner.expire(end - 1)
        # Order keys are unique but for the final flush; the parent's are all below 3 * end.
        extra = sorted(self.closed, key=operator.itemgetter(0))
        self.closed = []
        self.offset = end
        self._emit_merged(result, extra, offset)

    def _emit_merged(
        self, result: ChunkResult, extra: list[tuple[int, Group, bool]], offset: int
    ) -> None:
        if self.mode == "summary":
            self.counts.add(3 * offset, result.payloads[0])
            self._count(extra)
            return
        close = _WORKER.closer(self.mode)
        lines = _unspooled(result.payloads[0])
        if not extra:
            self.emit([lines])
            return
        # The chunk's events, with the others cut in where their order keys fall.
        keys, ends, shift = result.keys, result.ends, 3 * offset
        view = memoryview(lines)
        out: list[Any] = []
        start = cut = 0
        for order_key, group, real in extra:
            index = bisect.bisect_left(keys, order_key - shift, lo=start)
            end = ends[index - 1] if index else 0
            out.append(view[cut:end])
            out.append(close(group, real).encode())
            start, cut = index, end
        out.append(view[cut:])
        self.emit(out)

    def _count(self, closed: list[tuple[int, Group, bool]]) -> None:
        """Count events the parent closed, at order keys from the input's start."""
        if closed:
            orders = [order_key for order_key, _, _ in closed]
            classes = [summary_entry(group, real) for _, group, real in closed]
            self.counts.add(0, _part_counts(orders, classes))

    def finish(self) -> None:
        """End of input: what the full path's final flush emits, in first-line order."""
        self.joiner.flush(3 * self.offset + 3)
        closed, self.closed = self.closed, []
        if self.mode == "summary":
            # One order key for the final flush, which emits in first-line order.
            self._count([(order_key + group[0], group, real) for order_key, group, real in closed])
            self.emit([self.counts])
        else:
            close = _WORKER.closer(self.mode)
            self.emit([close(group, real).encode() for _, group, real in closed])


def _chunks(
    path: Path, chunk_bytes: int, pool: Any, mode: str
) -> Iterator[tuple[bytes | FileRange, bool, int] | _FileEnd]:
    """(data or a range for a worker to read, the file's last, lines if --json) or the end.

    With workers, a plain file is handed out as ranges: workers read their own chunks (and,
    for --json, count the lines of every range first, in parallel).
    """
    if pool is None or path.suffix == ".gz":
        for chunk in _read_chunks(path, chunk_bytes):
            if isinstance(chunk, _FileEnd):
                yield chunk
            else:
                data, last = chunk
                yield data, last, _line_count(data) if mode == "events" else 0
        return
    name = str(path)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed with the file's _FileEnd
    except OSError as error:
        raise LogFileError(f"{path}: cannot read: {error.strerror or error}") from None
    end = _FileEnd(name, None, stream)
    try:
        size = os.fstat(stream.fileno()).st_size
        end = end._replace(size=size)
        ranges = _plain_ranges(name, stream, size, chunk_bytes)
        counts = pool.map(_range_line_count, ranges) if mode == "events" else [0] * len(ranges)
    except BaseException:
        stream.close()
        raise
    for file_range, lines in zip(ranges, counts, strict=True):
        yield file_range, file_range.last, lines
    yield end


def _jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _no_cycle_collector() -> Iterator[None]:
    """Joining and counting make millions of short-lived lists and tuples and no reference
    cycles: the cycle collector would only walk them, for a tenth of the time or more. Forked
    workers inherit this."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


@_no_cycle_collector()
def scan(
    paths: Sequence[Path],
    nodes: dict[str, str],
    stats: ParseStats,
    mode: str,
    emit: Callable[[list[Any]], object],
    *,
    enricher: Enricher,
    window: int = JOIN_WINDOW,
    jobs: int | None = None,
    chunk_bytes: int | None = None,
) -> None:
    """Read the files in order and emit what they hold: for "events", bytes-like pieces of
    UTF-8 JSON lines, to be written in order; for "summary", its FlowCounts at the end.

    Raises LogFileError naming a file that cannot be opened, after emitting what came before.
    """
    explicit_chunks = chunk_bytes is not None
    chunk_bytes = chunk_bytes or CHUNK_BYTES[mode]
    formatter = EventFormatter(enricher) if mode == "events" else None
    _WORKER.formatter = formatter
    merger = _Merger(mode, window, emit)
    total_bytes = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total_bytes += path.stat().st_size
    jobs = _jobs() if jobs is None else jobs
    pool: Pool | None = None
    spool: str | None = None
    # (file, are the chunk's line numbers counted from the chunk's start, result) or a file's
    # end, in input order
    in_flight: list[_FileEnd | tuple[str, bool, Any]] = []
    file_lines = 0

    def settle(limit: int) -> None:
        nonlocal file_lines
        while len(in_flight) > limit:
            item = in_flight.pop(0)
            if isinstance(item, _FileEnd):
                file_lines = 0
                if item.error is not None:
                    stats.note_garbled(f"{item.name}:{stats.lines}", item.error)
                if item.stream is not None:
                    _close_checked(item)
                continue
            name, from_chunk_start, outcome = item
            result: ChunkResult = outcome.get() if pool is not None else outcome
            base = file_lines if from_chunk_start else 0
            file_lines += result.lines
            stats.lines += result.lines
            stats.records += result.records
            for number, reason in result.garbled:
                stats.note_garbled(f"{name}:{base + number}", reason)
            merger.take(result)

    try:
        if jobs > 1 and total_bytes >= PARALLEL_MIN_BYTES:
            # fork is the cheapest start, but a fork of a process with other threads
            # (ansible-runner leaves some after --inventory) can inherit a lock held forever.
            method = "fork" if threading.active_count() == 1 else "forkserver"
            import multiprocessing  # only big inputs need it: a faster start for the rest

            if mode == "events":
                with contextlib.suppress(OSError):
                    spool = tempfile.mkdtemp(prefix="k3s-netpol-logs-")
            if mode == "summary" and not explicit_chunks:
                chunk_bytes = max(chunk_bytes, -(-total_bytes // jobs))
            context = multiprocessing.get_context(method)
            pool = context.Pool(jobs, initializer=_init_worker, initargs=(formatter,))
        for path in paths:
            name = str(path)
            node = nodes.get(name)
            line_base = 0
            stats.files.append(name)
            try:
                for chunk in _chunks(path, chunk_bytes, pool, mode):
                    if isinstance(chunk, _FileEnd):
                        in_flight.append(chunk)
                        continue
                    data, last, lines = chunk
                    # --json's origins need each chunk's first line number before it runs
                    task = ChunkTask(data, name, node, line_base, last, mode, window, spool)
                    if mode == "events":
                        line_base += lines
                    outcome = (
                        _scan_chunk(task)
                        if pool is None
                        else pool.apply_async(_scan_chunk, (task,))
                    )
                    in_flight.append((name, mode != "events", outcome))
                    settle(0 if pool is None else 2 * jobs)
            except LogFileError:
                settle(0)
                raise
        settle(0)
        merger.finish()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)
        for item in in_flight:
            if isinstance(item, _FileEnd) and item.stream is not None:
                item.stream.close()


def _close_checked(end: _FileEnd) -> None:
    """Close a file the workers read through; one that shrank meanwhile lost lines."""
    assert end.stream is not None
    try:
        size = os.fstat(end.stream.fileno()).st_size
    finally:
        end.stream.close()
    if size < end.size:
        raise LogChangedError.of(end.name, f"shrank from {end.size} bytes to {size}")


@_no_cycle_collector()
def summary_flows(counts: FlowCounts, enricher: Enricher, top: int | None) -> list[FlowSummary]:
    """logs.summarize over the events counted: same flows, order and ties.

    Only the flows that can be among the `top` (those with at least the top-th most events) are
    named and checked against the model: the rank's tie-breaks need their pod names. Naming
    never merges two flows: an address names at most one pod, and pod names are not addresses.
    """
    totals = counts.totals
    least = 0
    if top is not None and len(totals) > top:
        least = heapq.nlargest(top, totals.values())[-1]
    candidates = []
    for flow, events in totals.items():
        if events >= least:
            classes = counts.classes(flow)
            candidates.append((classes[0][0], flow, events, classes))
    # logs.summarize meets the flows in the order of their first events, and its sort is stable.
    candidates.sort(key=operator.itemgetter(0))
    summaries: list[FlowSummary] = []
    for _, (addresses, protocol, port_text), events, classes in candidates:
        source, destination = addresses.split(" DST=")
        port = int(port_text) if port_text else None
        source_pod, destination_pod, expected = enricher.describe(
            source, destination, port, protocol
        )
        summary = FlowSummary(
            source_pod or source,
            destination_pod or destination,
            protocol,
            port,
            events=events,
            flagged=events if expected == "allowed" else 0,
        )
        for _, count, event_class in classes:
            _, _, _, node, real, *policies = event_class.split("\n")
            summary.real += count if real else 0
            for policy in policies:
                summary.policies[policy] += count
            if node:
                summary.nodes.add(node)
        summaries.append(summary)
    ranked = sorted(
        summaries,
        key=lambda flow: (-flow.events, flow.source, flow.destination, flow.destination_port or 0),
    )
    return ranked if top is None else ranked[:top]


__all__ = [
    "EventFormatter",
    "FlowCounts",
    "scan",
    "summary_flows",
]
