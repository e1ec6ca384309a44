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
- Which lines form one event depends only on the lines with the same packet key (a line joins
  the key's open group unless the group is more than `window` records old or already has the
  line's policy). The full joiner's periodic sweep only decides *when* an event is emitted, and
  that is computed here from the group's first position (`_sweep_after`), so the order of
  `--json` output and the tie order of `--summary` are the full path's too.
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
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from k3s_netpol.logs import (
    JOIN_WINDOW,
    TCP_FLAG_NAMES,
    Enricher,
    FlowSummary,
    LogFileError,
    LogParseError,
    LogRecord,
    ParseStats,
    parse_line,
    policy_of_prefix,
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


_PREFIX_CACHE: dict[str, tuple[str | None, bool]] = {}


def _prefix_meaning(raw: str) -> tuple[str | None, bool]:
    """(policy named, is the pod chain's unprefixed line) for a prefix as the regex cut it."""
    meaning = _PREFIX_CACHE.get(raw)
    if meaning is None:
        prefix = raw.lstrip(" ").rstrip()
        meaning = (policy_of_prefix(prefix) if prefix else None, not prefix)
        if len(_PREFIX_CACHE) > 4096:
            _PREFIX_CACHE.clear()
        _PREFIX_CACHE[raw] = meaning
    return meaning


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
    # events closed at a known position: sort keys (3 * position + kind) and payloads; --json
    # sends its JSON lines as one UTF-8 string and where each line ends in it, the string in a
    # spool file when it has one (see _spooled); --summary: the tallies
    keys: list[int]
    payloads: list[Any]
    ends: list[int]
    # events closed by age: (first position, position of the same-key line that closed it or -1)
    aged: list[tuple[int, int, Any]]
    head: list[tuple[int, Row, str]]  # (position, row, origin) of keys the chunk before may own
    open_groups: list[tuple[PacketKey, Group]]


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


# A group of lines of one packet: [first position, policies named, [(row, origin), ...], first
# row] (no records for --summary). Plain lists: this is the hot loop.
Group = list[Any]
Closer = Callable[[Group, bool], Any]
_NO_RECORDS: tuple[()] = ()


def summary_entry(group: Group, real: bool) -> Any:
    """What --summary keeps of an event: (node, "src DST=dst", protocol, port), policies, real."""
    row = group[3]
    return ((row[0], row[2], row[4], row[6]), tuple(group[1]), real)


# Stands in open_groups for a key whose lines the worker leaves to the parent.
_HEAD: Group = [1 << 62, [], [], ()]


def join_rows(
    items: Iterable[tuple[int, Row, str]],
    layout: _Layout,
    window: int,
    close: Closer,
    open_groups: dict[PacketKey, Group],
    keys: list[int],
    payloads: list[Any],
    aged: list[tuple[int, int, Any]],
    *,
    collect: bool,
    counts: dict[Any, FlowTally] | None = None,
    head: list[tuple[int, Row, str]] | None = None,
) -> None:
    """Join (position, row, origin) items into groups, as logs.EventJoiner does.

    A group closed by a line goes to keys/payloads (sort key 3 * position + kind), or with
    `counts` (--summary) is tallied there per flow (see FlowTally). A group closed
    for age goes to `aged` as (first position, position of the line that closed it or -1):
    when the full joiner emits it depends on its sweep schedule (see `_sweep_after`). Lines
    of a key whose open group is _HEAD go to `head` instead.
    """
    prefix_at, key_of = layout.prefix, layout.key
    meanings = _PREFIX_CACHE
    get_group = open_groups.get
    too_old = window + window // 4 + 1
    # Groups by age, to close those no line can join any more (entries of groups closed or
    # moved since are skipped).
    order = deque(
        sorted(
            ((group[0], key, group) for key, group in open_groups.items() if group is not _HEAD),
            key=operator.itemgetter(0),
        )
    )
    next_cleanup = 0
    # The newest group stays out of open_groups while its packet's lines come one after another.
    current: Group | None = None
    current_key: PacketKey = ""
    for position, row, origin in items:
        key = key_of(row)
        if current is not None and key == current_key:
            group: Group | None = current
            key = current_key
            current = None
        else:
            if current is not None:
                open_groups[current_key] = current
                order.append((current[0], current_key, current))
                current = None
            group = get_group(key)
            if group is not None:
                if group is _HEAD:
                    if head is not None:
                        head.append((position, row, origin))
                    continue
                del open_groups[key]
        if position >= next_cleanup:
            next_cleanup = position + 64
            while order and position - order[0][0] > too_old:
                _, stale_key, stale_group = order.popleft()
                if get_group(stale_key) is stale_group:
                    del open_groups[stale_key]
                    aged.append((stale_group[0], -1, close(stale_group, False)))
        raw = row[prefix_at]
        meaning = meanings.get(raw) or _prefix_meaning(raw)
        policy = meaning[0]
        if group is not None:
            if position - group[0] > window:
                aged.append((group[0], position, close(group, False)))
                group = None
            elif policy is not None and policy in group[1]:
                if counts is None:
                    keys.append(3 * position + 1)
                    payloads.append(close(group, False))
                else:
                    _tally(counts, summary_entry(group, False), 3 * position + 1)
                group = None
        if policy is not None:
            if group is None:
                group = [position, [policy], [(row, origin)] if collect else _NO_RECORDS, row]
            else:
                group[1].append(policy)
                if collect:
                    group[2].append((row, origin))
            current, current_key = group, key
            continue
        if group is None:
            group = [position, [], [(row, origin)] if collect else _NO_RECORDS, row]
        elif collect:
            group[2].append((row, origin))
        if counts is None:
            keys.append(3 * position + 2)
            payloads.append(close(group, meaning[1]))
        else:
            flow = (row[2], row[4], row[6])
            tally = counts.get(flow)
            emitted_at = 3 * position + 2
            if tally is None:
                tally = counts[flow] = [emitted_at, 0, 0, {}, set()]
            tally[1] += 1
            if meaning[1]:
                tally[2] += 1
            named = tally[3]
            for index, policy in enumerate(group[1]):
                seen = named.get(policy)
                if seen is None:
                    named[policy] = [(emitted_at, index), 1]
                else:
                    seen[1] += 1
            if row[0]:
                tally[4].add(row[0])
    if current is not None:
        open_groups[current_key] = current


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
    closer = _WORKER.closer(task.mode)
    if not events:
        origins = [""] * len(rows)
    head_end = min(2 * task.window, len(rows))
    head = list(zip(range(head_end), rows[:head_end], origins[:head_end], strict=True))
    open_groups: dict[PacketKey, Group] = dict.fromkeys(map(layout.key, rows[:head_end]), _HEAD)
    keys: list[int] = []
    payloads: list[Any] = []
    aged: list[tuple[int, int, Any]] = []
    counts: dict[Any, FlowTally] | None = None if events else {}
    join_rows(
        zip(range(head_end, len(rows)), rows[head_end:], origins[head_end:], strict=True),
        layout,
        task.window,
        closer,
        open_groups,
        keys,
        payloads,
        aged,
        collect=events,
        counts=counts,
        head=head,
    )
    ends: list[int] = []
    if counts is None:
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
        payloads=payloads if counts is None else [counts],
        ends=ends,
        aged=aged,
        head=head,
        open_groups=[(key, group) for key, group in open_groups.items() if group is not _HEAD],
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
    '"tcp_seq": %s, "flags": %s, "mark": %s, "lines": %d, "origins": [%s], %s}\n'
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
        records = group[2]
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
            records[0][1] if len(records) == 1 else ", ".join([origin for _, origin in records]),
            flow[1] if real else flow[2],
        )


@dataclass
class _WorkerState:
    formatter: EventFormatter | None = None

    def closer(self, mode: str) -> Closer:
        if mode == "events":
            assert self.formatter is not None
            return self.formatter.close
        return summary_entry


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


def _sweep_after(first: int, window: int) -> int:
    """The position of the EventJoiner sweep that closes a group first seen at `first`."""
    step = window // 4 + 1
    rounds = -(-(first + 1) // step)
    return window + rounds * step


@dataclass
class _Merger:
    mode: str
    window: int
    close: Closer
    emit: Callable[[list[Any]], object]
    offset: int = 0  # records before the current chunk
    open_groups: dict[PacketKey, Group] = field(default_factory=dict)
    pending: list[tuple[int, int, Any]] = field(default_factory=list)  # (key, first, payload)
    tally: dict[Any, FlowTally] = field(default_factory=dict)  # --summary

    def take(self, result: ChunkResult) -> None:
        offset, window = self.offset, self.window
        layout = _LAYOUTS[self.mode]
        end = offset + result.records
        extra: list[tuple[int, int, Any]] = []
        keys: list[int] = []
        payloads: list[Any] = []
        aged: list[tuple[int, int, Any]] = []
        # Groups still open from before: a head line may continue or close them.
        incoming = self.open_groups
        join_rows(
            ((offset + position, row, origin) for position, row, origin in result.head),
            layout,
            window,
            self.close,
            incoming,
            keys,
            payloads,
            aged,
            collect=self.mode == "events",
        )
        extra.extend(zip(keys, [0] * len(keys), payloads, strict=True))
        for first, closed_by, payload in aged:
            extra.append((self._aged_key(first, closed_by), first, payload))
        for first, closed_by, payload in result.aged:
            at = -1 if closed_by < 0 else offset + closed_by
            extra.append((self._aged_key(offset + first, at), offset + first, payload))
        # A group whose sweep came before the chunk's end is closed; no line of its key came.
        # (Keys the worker joined afresh were not in the head, so their old groups are swept.)
        for key, group in result.open_groups:
            group[0] += offset
            incoming[key] = group
        self.open_groups = {}
        for key, group in incoming.items():
            if _sweep_after(group[0], window) < end:
                extra.append((self._aged_key(group[0], -1), group[0], self.close(group, False)))
            else:
                self.open_groups[key] = group
        extra.extend(self.pending)
        extra.sort(key=lambda item: (item[0], item[1]))
        cut = bisect.bisect_left(extra, 3 * end, key=lambda item: item[0])
        self.pending = extra[cut:]
        del extra[cut:]
        self.offset = end
        self._emit_merged(result, extra, offset)

    def _aged_key(self, first: int, closed_by: int) -> int:
        swept = _sweep_after(first, self.window)
        if 0 <= closed_by < swept:
            return 3 * closed_by + 1
        return 3 * swept

    def _emit_merged(
        self, result: ChunkResult, extra: list[tuple[int, int, Any]], offset: int
    ) -> None:
        if self.mode == "summary":
            for counts in result.payloads:
                _merge_tallies(self.tally, counts, 3 * offset)
            for key, first, entry in extra:
                _tally(self.tally, entry, (key, first))
            return
        lines = _unspooled(result.payloads[0])
        if not extra:
            self.emit([lines])
            return
        # The chunk's events, with the others cut in where their sort keys fall.
        keys, ends, shift = result.keys, result.ends, 3 * offset
        view = memoryview(lines)
        out: list[Any] = []
        start = cut = 0
        for key, _, payload in extra:
            index = bisect.bisect_left(keys, key - shift, lo=start)
            end = ends[index - 1] if index else 0
            out.append(view[cut:end])
            out.append(payload.encode())
            start, cut = index, end
        out.append(view[cut:])
        self.emit(out)

    def finish(self) -> None:
        """End of input: what the full path's final flush emits, in first-line order."""
        rest = [(group[0], self.close(group, False)) for group in self.open_groups.values()]
        self.open_groups = {}
        # Aged groups whose sweep never came (input ended first) are flushed with them.
        end = 3 * self.offset
        closed = [(key, first, payload) for key, first, payload in self.pending if key < end]
        flushed = [(first, payload) for key, first, payload in self.pending if key >= end]
        self.pending = []
        flushed.extend(rest)
        flushed.sort(key=lambda item: item[0])
        final_key = 3 * self.offset + 3
        closed.extend((final_key, first, payload) for first, payload in flushed)
        if self.mode == "summary":
            for key, first, entry in closed:
                _tally(self.tally, entry, (key, first))
            self.emit([self.tally])
        else:
            self.emit([payload.encode() for _, _, payload in closed])


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
    close = _WORKER.closer(mode)
    merger = _Merger(mode, window, close, emit)
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
