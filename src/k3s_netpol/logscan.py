"""The fast path of `k3s-netpol logs --json/--summary`: same answers as logs.py, in bulk.

logs.py parses one line into one LogRecord and joins records one by one: about a hundred
microseconds a line. Here a file is read in large chunks split at line ends; the C splitter
(_logemu.c), or without it one regex (`findall`), pulls the fields of every canonical ulogd2
LOGEMU line of a chunk into plain tuples, and the packets are joined on those tuples. Chunks run
in worker processes on big inputs.

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
import itertools
import json
import operator
import os
import re
import shutil
import signal
import tempfile
import threading
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
    LogFileError,
    LogParseError,
    LogRecord,
    PacketJoiner,
    ParseStats,
    parse_line,
)

if TYPE_CHECKING:
    from multiprocessing.pool import Pool

# --summary merges each chunk's per-flow tallies in the parent: fewer, bigger chunks.
CHUNK_BYTES = {"events": 16 << 20, "summary": 32 << 20}
PARALLEL_MIN_BYTES = 32 << 20

try:
    from k3s_netpol import _logemu
except ImportError:  # built without a C compiler: the regex below does the same, slower
    _logemu = None  # type: ignore[assignment]

_MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_NUMBER = "(?!0[0-9])([0-9]+)"  # canonical: equal text is an equal int


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
        r"SRC=([0-9A-Fa-f:.]+ DST=[0-9A-Fa-f:.]+) "
        rf"LEN=[0-9]+ TOS=[^ \n]+ PREC=[^ \n]+ TTL=[0-9]+ ID={_NUMBER} (?:DF |)"
        r"PROTO=(?:(?=TCP )|(?![A-Z]+ SPT=[0-9]+ DPT=[0-9]+ SEQ=))"
        rf"([A-Z]+) SPT={_NUMBER} DPT={_NUMBER}(?: SEQ={_NUMBER}|(?! SEQ=))"
        rf" {capture_tail}[^\n]*)(?<= )MARK=(?:0x|){capture_tail}[0-9A-Fa-f]+)$",
        re.MULTILINE,
    )


# Rows: --json (stamp, node, prefix, "src DST=dst", id, proto, spt, dpt, seq, tail, mark, key);
# --summary (node, prefix, "src DST=dst", id, proto, spt, dpt, seq, key). Absent numbers are "".
# The regex's groups are a row without its key. The key names the packet: its parts (node,
# "src DST=dst", id, proto, spt, dpt, seq) joined by newlines, one string that hashes and
# compares at C speed; a tuple of the parts when one is not a string without a newline.
_EVENT_ROW = _canonical_logemu(stamp=True, tail=True)
_SUMMARY_ROW = _canonical_logemu(stamp=False, tail=False)
Row = tuple[Any, ...]
PacketKey = str | tuple[Any, ...]


class _Layout(NamedTuple):
    pattern: re.Pattern[str]
    prefix: int
    key_parts: Callable[[Row], tuple[Any, ...]]
    key: Callable[[Row], PacketKey]


_LAYOUTS = {
    "events": _Layout(
        _EVENT_ROW, 2, operator.itemgetter(1, 3, 4, 5, 6, 7, 8), operator.itemgetter(11)
    ),
    "summary": _Layout(
        _SUMMARY_ROW, 1, operator.itemgetter(0, 2, 3, 4, 5, 6, 7), operator.itemgetter(8)
    ),
}


def packet_key(parts: tuple[Any, ...]) -> PacketKey:
    """The key of a packet with these parts, as the C splitter writes it."""
    if all(isinstance(part, str) and "\n" not in part for part in parts):
        return "\n".join(parts)
    return parts


def _keyed(groups: tuple[Any, ...], layout: _Layout) -> Row:
    """A row: the regex's groups (or a record's, in their places) and the packet key."""
    return (*groups, packet_key(layout.key_parts(groups)))


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
    """Bytes [start, end) of a file, read by the worker itself (end is just after a newline)."""

    path: str
    start: int
    end: int


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


def _split(data: bytes, mode: str) -> tuple[list[Row | None], int] | None:
    """Each line's row from the C splitter (None where it leaves the line to the regex) and
    the None count; None without the splitter or for a chunk it leaves to the regex."""
    if _logemu is None:
        return None
    return _logemu.rows(data, mode == "events")


def chunk_rows(
    task: ChunkTask, data: bytes
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


def summary_entry(group: Group, real: bool) -> Any:
    """What --summary keeps of an event: (node, "src DST=dst", protocol, port), policies, real."""
    row = group[3]
    return ((row[0], row[2], row[4], row[6]), tuple(group[1]), real)


def _joiner(layout: _Layout, window: int, emit: Emit, *, collect: bool) -> PacketJoiner:
    return PacketJoiner(
        window, layout.key, operator.itemgetter(layout.prefix), emit, collect=collect
    )


# --summary keeps per flow ("src DST=dst", protocol, port): [first order, events, real events,
# {policy: [(first order, place in the event's policies), events]}, {nodes}]. An order is a
# sort key of the full joiner's emission order: an int in a worker, (int, first) in the parent.
FlowTally = list[Any]


def _tally(tallies: dict[Any, FlowTally], entry: Any, order: Any) -> None:
    """Count one event (a summary_entry) whose emission order is `order`."""
    (node, addresses, protocol, port), policies, real = entry
    flow = (addresses, protocol, port)
    tally = tallies.get(flow)
    if tally is None:
        tally = tallies[flow] = [order, 0, 0, {}, set()]
    elif order < tally[0]:
        tally[0] = order
    tally[1] += 1
    tally[2] += 1 if real else 0
    named = tally[3]
    for index, policy in enumerate(policies):
        seen = named.get(policy)
        if seen is None:
            named[policy] = [(order, index), 1]
        else:
            seen[0] = min(seen[0], (order, index))
            seen[1] += 1
    if node:
        tally[4].add(node)


def _merge_tallies(into: dict[Any, FlowTally], worker: dict[Any, FlowTally], base: int) -> None:
    """Add a worker's tallies (int orders from its chunk's start) to the parent's."""
    for flow, (order, events, real, named, nodes) in worker.items():
        order = (order + base, 0)
        tally = into.get(flow)
        if tally is None:
            tally = into[flow] = [order, 0, 0, {}, nodes]
        else:
            tally[0] = min(tally[0], order)
            tally[4] |= nodes
        tally[1] += events
        tally[2] += real
        known = tally[3]
        for policy, ((first, index), count) in named.items():
            place = ((first + base, 0), index)
            seen = known.get(policy)
            if seen is None:
                known[policy] = [place, count]
            else:
                seen[0] = min(seen[0], place)
                seen[1] += count


def _scan_chunk(task: ChunkTask) -> ChunkResult:
    """Worker: parse a chunk and join it from an empty state (positions relative to it)."""
    rows, origins, garbled, line_count = chunk_rows(task, _chunk_data(task.data))
    layout = _LAYOUTS[task.mode]
    events = task.mode == "events"
    keys: list[int] = []
    payloads: list[Any] = []
    counts: dict[Any, FlowTally] = {}
    emit = _WORKER.emitter(task.mode, keys, payloads, counts)
    joiner = _joiner(layout, task.window, emit, collect=events)
    head_end = min(2 * task.window, len(rows))
    joiner.open_groups.update(dict.fromkeys(map(layout.key, rows[:head_end]), HEAD))
    items: Iterable[Any] = zip(rows, origins, strict=True) if events else itertools.repeat(None)
    positioned = zip(itertools.count(), rows, items)
    head = list(itertools.islice(positioned, head_end))
    joiner.feed(positioned, head=head)
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
        records=len(rows),
        garbled=garbled,
        keys=keys,
        payloads=payloads if events else [counts],
        ends=ends,
        head=head,
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


def _decode(data: bytes) -> str:
    # As TextIOWrapper(newline=None) reads: \r\n and \r end lines too.
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
    '{"time": %s, %s, "source_port": %s, "destination_port": %s, %s, "real": %s, "ip_id": %s, '
    '"tcp_seq": %s, "flags": %s, "mark": %s, "lines": %d, "passes": %d, "origins": [%s], %s}\n'
)


class EventFormatter:
    """Writes an event exactly as `json.dumps(EventView.to_dict())` with ", "/": " would.

    The parts that repeat from event to event (a flow's names and verdicts, a policy list, a
    time stamp) are cached as ready JSON text.
    """

    def __init__(self, enricher: Enricher) -> None:
        self.enricher = enricher
        self._flows: dict[tuple[str, str, str, str], tuple[str, str, str]] = {}
        self._policies: dict[tuple[str, ...], str] = {}
        self._stamps: dict[str | None, str] = {}

    def _flow(self, node: str, addresses: str, port: str, protocol: str) -> tuple[str, str, str]:
        flow_key = (node, addresses, port, protocol)
        known = self._flows.get(flow_key)
        if known is None:
            source, destination = addresses.split(" DST=")
            source_pod, destination_pod, expected = self.enricher.describe(
                source, destination, int(port) if port else None, protocol
            )
            allowed = expected == "allowed"
            view = (
                f'"source_pod": {_json_text(source_pod)}, '
                f'"destination_pod": {_json_text(destination_pod)}, '
                f'"expected": {_json_text(expected)}, "flagged": {"true" if allowed else "false"}'
            )
            real_verdict = "unexpected drop" if allowed else "drop"
            false_verdict = "false drop" if allowed else "policy line only"
            if len(self._flows) > 65536:
                self._flows.clear()
            known = self._flows[flow_key] = (
                f'"node": {_json_text(node)}, "source": "{source}", '
                f'"destination": "{destination}", "protocol": {_json_text(protocol)}',
                f'{view}, "verdict": "{real_verdict}"',
                f'{view}, "verdict": "{false_verdict}"',
            )
        return known

    def _policy_text(self, policies: tuple[str, ...]) -> str:
        text = self._policies.get(policies)
        if text is None:
            names = [_json_text(policy) for policy in policies]
            first = names[0] if names else "null"
            text = self._policies[policies] = f'"policy": {first}, "policies": [{", ".join(names)}]'
        return text

    def _stamp(self, stamp: str | None) -> str:
        text = self._stamps.get(stamp)
        if text is None:
            if len(self._stamps) > 4096:
                self._stamps.clear()
            text = self._stamps[stamp] = _json_text(stamp)
        return text

    def close(self, group: Group, real: bool) -> str:
        records = group[2]  # (row, origin) of each line
        first_row = group[3]
        _, node, _, addresses, ip_id, protocol, source_port, destination_port, seq = first_row[:9]
        # Cache hits inline (each cached text is non-empty); misses go through the methods.
        flow = self._flows.get((node, addresses, destination_port, protocol)) or self._flow(
            node, addresses, destination_port, protocol
        )
        policies = tuple(group[1])
        stamp = first_row[0]
        mark = records[-1][0][10]
        if protocol == "TCP":
            tail = first_row[9]
            flags = _FLAG_CACHE.get(tail) or _flags_json(tail)
            tcp_seq = seq or "null"
        else:
            flags, tcp_seq = "[]", "null"
        return _EVENT_LINE % (
            self._stamps.get(stamp) or self._stamp(stamp),
            flow[0],
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
            flow[1] if real else flow[2],
        )


@dataclass
class _WorkerState:
    formatter: EventFormatter | None = None

    def emitter(
        self, mode: str, keys: list[int], payloads: list[Any], counts: dict[Any, FlowTally]
    ) -> Emit:
        """Where a joiner's closed events go: JSON lines and their order keys, or tallies."""
        if mode == "summary":

            def tally(order_key: int, group: Group, real: bool) -> None:
                _tally(counts, summary_entry(group, real), order_key)

            return tally
        assert self.formatter is not None
        close = self.formatter.close

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
    read = getattr(stream, "read1", stream.read)
    try:
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                block = read(chunk_bytes)
            except (OSError, EOFError) as error:
                # A truncated .gz: the full path reads every whole line before the error
                # and loses the partial one.
                data = pending + b"".join(parts)
                cut = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1))
                if cut >= 0:
                    yield data[: cut + 1], False
                yield _FileEnd(name, f"file ends badly: {error}")
                return
            if not block:
                break
            parts.append(block)
            size += len(block)
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
        data = pending + b"".join(parts)
        if data:
            yield data, True
        yield _FileEnd(name, None)
    finally:
        stream.close()


def _plain_ranges(path: Path, chunk_bytes: int) -> list[FileRange]:
    """Split a plain file at newlines into ranges of about chunk_bytes."""
    name = str(path)
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            ranges: list[FileRange] = []
            start = 0
            while start < size:
                end = start + chunk_bytes
                while end < size:
                    stream.seek(end)
                    block = stream.read(1 << 16)
                    newline = block.find(b"\n")
                    if newline >= 0:
                        end += newline + 1
                        break
                    end += len(block) or size
                ranges.append(FileRange(name, start, min(end, size)))
                start = min(end, size)
            return ranges
    except OSError as error:
        raise LogFileError(f"{path}: cannot read: {error.strerror or error}") from None


def _chunk_data(data: bytes | FileRange) -> bytes:
    if isinstance(data, bytes):
        return data
    try:
        with open(data.path, "rb") as stream:
            stream.seek(data.start)
            return stream.read(data.end - data.start)
    except OSError as error:
        raise LogFileError(f"{data.path}: cannot read: {error.strerror or error}") from None


def _range_line_count(data: FileRange) -> int:
    return _line_count(_chunk_data(data))


def _line_count(data: bytes) -> int:
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
    tally: dict[Any, FlowTally] = field(default_factory=dict)  # --summary
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
        close = _WORKER.closer(self.mode)
        if self.mode == "summary":
            for counts in result.payloads:
                _merge_tallies(self.tally, counts, 3 * offset)
            for order_key, group, real in extra:
                _tally(self.tally, close(group, real), (order_key, 0))
            return
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

    def finish(self) -> None:
        """End of input: what the full path's final flush emits, in first-line order."""
        final_key = 3 * self.offset + 3
        self.joiner.flush(final_key)
        closed, self.closed = self.closed, []
        close = _WORKER.closer(self.mode)
        if self.mode == "summary":
            for order_key, group, real in closed:
                _tally(self.tally, close(group, real), (order_key, group[0]))
            self.emit([self.tally])
        else:
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
    ranges = _plain_ranges(path, chunk_bytes)
    counts = pool.map(_range_line_count, ranges) if mode == "events" else [0] * len(ranges)
    for index, (file_range, lines) in enumerate(zip(ranges, counts, strict=True)):
        yield file_range, index == len(ranges) - 1, lines
    yield _FileEnd(str(path), None)


def _jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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
    UTF-8 JSON lines, to be written in order; for "summary", one FlowTally dict at the end.

    Raises LogFileError naming a file that cannot be opened, after emitting what came before.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES[mode]
    formatter = EventFormatter(enricher) if mode == "events" else None
    _WORKER.formatter = formatter
    merger = _Merger(mode, window, emit)
    total_bytes = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total_bytes += path.stat().st_size
    jobs = _jobs() if jobs is None else jobs
    collecting = gc.isenabled()
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
        # Joining makes millions of short-lived lists and tuples and no reference cycles: the
        # cycle collector would only walk them, for about a tenth of the time. Forked workers
        # inherit this.
        gc.disable()
        if jobs > 1 and total_bytes >= PARALLEL_MIN_BYTES:
            # fork is the cheapest start, but a fork of a process with other threads
            # (ansible-runner leaves some after --inventory) can inherit a lock held forever.
            method = "fork" if threading.active_count() == 1 else "forkserver"
            import multiprocessing  # only big inputs need it: a faster start for the rest

            if mode == "events":
                with contextlib.suppress(OSError):
                    spool = tempfile.mkdtemp(prefix="k3s-netpol-logs-")
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
        if collecting:
            gc.enable()


def summary_flows(
    tallies: dict[Any, FlowTally], enricher: Enricher, top: int | None
) -> list[FlowSummary]:
    """logs.summarize over the events the tallies count: same flows, order and ties."""
    merged: dict[tuple[str, str, str, int | None], FlowTally] = {}
    for (addresses, protocol, port_text), (order, events, real, named, nodes) in tallies.items():
        source, destination = addresses.split(" DST=")
        port = int(port_text) if port_text else None
        source_pod, destination_pod, expected = enricher.describe(
            source, destination, port, protocol
        )
        flow_key = (source_pod or source, destination_pod or destination, protocol, port)
        flagged = events if expected == "allowed" else 0
        tally = merged.get(flow_key)
        if tally is None:
            merged[flow_key] = [order, events, real, flagged, dict(named), set(nodes)]
            continue
        tally[0] = min(tally[0], order)
        tally[1] += events
        tally[2] += real
        tally[3] += flagged
        for policy, (place, count) in named.items():
            seen = tally[4].get(policy)
            tally[4][policy] = (
                [place, count] if seen is None else [min(seen[0], place), seen[1] + count]
            )
        tally[5] |= nodes
    flows: list[FlowSummary] = []
    for flow_key, (_, events, real, flagged, named, nodes) in sorted(
        merged.items(), key=lambda item: item[1][0]
    ):
        summary = FlowSummary(*flow_key, events=events, real=real, flagged=flagged, nodes=nodes)
        for policy, (_, count) in sorted(named.items(), key=lambda item: item[1][0]):
            summary.policies[policy] = count
        flows.append(summary)
    ranked = sorted(
        flows,
        key=lambda flow: (-flow.events, flow.source, flow.destination, flow.destination_port or 0),
    )
    return ranked if top is None else ranked[:top]


__all__ = [
    "EventFormatter",
    "scan",
    "summary_flows",
]
