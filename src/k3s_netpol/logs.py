"""ulogd2's record of kube-router's policy drops: parse, join per packet, enrich, summarise.

Input is what ulogd2 writes for NFLOG group 100: LOGEMU text lines (an iptables-LOG look-alike)
and JSON lines (ulogd2's JSON output plugin). One blocked packet leaves several lines on the node
that hosts the destination pod: one `DROP by policy ns/name` line per policy chain it ran through
and then the pod chain's unprefixed line. `drop_events` joins those lines back into one event.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import time as time_module
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from k3s_netpol.model import Cluster, Pod

POLICY_PREFIX = "DROP by policy "
TCP_FLAG_NAMES = frozenset({"URG", "ACK", "PSH", "RST", "SYN", "FIN"})
IP_PROTOCOL_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
# Lines of one packet are written together; an unfinished group older than this many records
# belongs to a packet whose pod-chain line was rate-limited away or never came (a false drop).
JOIN_WINDOW = 256
GARBLED_SAMPLES_KEPT = 20

_CLOCK = re.compile(r"\d\d:\d\d:\d\d\Z")
_IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}\Z")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\Z")
_NO_FLAGS: frozenset[str] = frozenset()
_ROTATION_SUFFIX = re.compile(r"^(?P<base>.*?)(?:[.-](?P<index>\d+))?(?P<gz>\.gz)?$")


class LogParseError(ValueError):
    """A line that is not a ulogd2 LOGEMU or JSON packet record; the message says why."""


class LogFileError(OSError):
    """A log file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class LogRecord:
    """One ulogd2 line: one packet as seen by one NFLOG rule."""

    time: str | None
    node: str | None
    prefix: str
    policy: str | None
    in_interface: str | None
    out_interface: str | None
    source: str
    destination: str
    protocol: str
    source_port: int | None
    destination_port: int | None
    ip_id: int | None
    tcp_seq: int | None
    flags: frozenset[str]
    mark: int | None
    origin: str

    @property
    def packet_key(self) -> tuple[Any, ...]:
        """What every line of one packet on one node shares."""
        return (
            self.node,
            self.source,
            self.destination,
            self.protocol,
            self.source_port,
            self.destination_port,
            self.ip_id,
            self.tcp_seq,
        )

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> LogRecord:
        """Build a record from a complete field dict without the frozen `__init__`'s cost."""
        record = object.__new__(cls)
        record.__dict__.update(fields)
        return record

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "node": self.node,
            "prefix": self.prefix,
            "policy": self.policy,
            "in_interface": self.in_interface,
            "out_interface": self.out_interface,
            "source": self.source,
            "destination": self.destination,
            "protocol": self.protocol,
            "source_port": self.source_port,
            "destination_port": self.destination_port,
            "ip_id": self.ip_id,
            "tcp_seq": self.tcp_seq,
            "flags": sorted(self.flags),
            "mark": self.mark,
            "origin": self.origin,
        }


@dataclass
class ParseStats:
    """What reading the files found: line counts and the garbled lines (counted, a few kept)."""

    files: list[str] = field(default_factory=list)
    lines: int = 0
    records: int = 0
    garbled: int = 0
    garbled_samples: list[str] = field(default_factory=list)

    def note_garbled(self, origin: str, reason: str) -> None:
        self.garbled += 1
        if len(self.garbled_samples) < GARBLED_SAMPLES_KEPT:
            self.garbled_samples.append(f"{origin}: {reason}")

    def merge(self, other: ParseStats) -> None:
        self.files.extend(other.files)
        self.lines += other.lines
        self.records += other.records
        self.garbled += other.garbled
        room = GARBLED_SAMPLES_KEPT - len(self.garbled_samples)
        self.garbled_samples.extend(other.garbled_samples[: max(room, 0)])


def policy_of_prefix(prefix: str) -> str | None:
    """`DROP by policy ns/name` -> "ns/name" (as kube-router cut it); any other prefix -> None."""
    if prefix.startswith(POLICY_PREFIX):
        return prefix[len(POLICY_PREFIX) :].strip() or None
    return None


def _check_address(name: str, value: str | None) -> str:
    if value is None:
        raise LogParseError(f"no {name}= field")
    if _IPV4.match(value):
        if all(int(octet) <= 255 for octet in value.split(".")):
            return value
    elif _IPV6.match(value):
        return value
    raise LogParseError(f"{name}={value!r} is not an IP address")


# printpkt's field order (ulogd2 util/printpkt.c), fields separated by runs of spaces. The prefix
# is every token between the host name and the first token that starts with IN=.
_LOGEMU = re.compile(
    r"(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(?P<day>[0-9]{1,2})"
    r" +(?P<clock>[0-9]{2}:[0-9]{2}:[0-9]{2}) +(?P<node>[^ ]+) +"
    r"(?P<prefix>(?:(?!IN=)[^ ]+ +)*)"
    r"IN=(?P<in>[^ ]*) +OUT=(?P<out>[^ ]*) +(?:MAC=[^ ]* +)?"
    r"SRC=(?P<src>[0-9A-Fa-f:.]+) +DST=(?P<dst>[0-9A-Fa-f:.]+) +"
    r"(?:LEN=[0-9]+ +TOS=[^ ]+ +PREC=[^ ]+ +TTL=[0-9]+ +ID=(?P<id>[0-9]+) +"
    r"(?:[A-Z]+ +|FRAG:[0-9]+ +)*"
    r"|LEN=[0-9]+ +TC=[0-9]+ +HOPLIMIT=[0-9]+ +FLOWLBL=[0-9]+ +(?:FRAG: [0-9]+ ID: [0-9a-f]+ +)?)"
    r"PROTO=(?P<proto>[A-Za-z0-9]+)(?: +SPT=(?P<spt>[0-9]+) +DPT=(?P<dpt>[0-9]+))?"
    r"(?: +SEQ=(?P<seq>[0-9]+))?(?P<tail>(?: +[^ ]+)*?) +MARK=(?:0x)?(?P<mark>[0-9A-Fa-f]+) *\Z"
)


def _diagnose_logemu(line: str) -> str:
    """Say what is wrong with a line the LOGEMU pattern rejected."""
    tokens = line.split()
    if len(tokens) < 4 or tokens[0] not in MONTHS or not _CLOCK.match(tokens[2]):
        return "no syslog time stamp and host name at the start"
    names = {token.partition("=")[0] for token in tokens if "=" in token}
    for required in ("IN", "OUT", "SRC", "DST", "PROTO", "MARK"):
        if required not in names:
            return f"no {required}= field (line truncated?)"
    return "fields out of ulogd2's LOGEMU order or with malformed values"


def parse_logemu_line(line: str, origin: str = "") -> LogRecord:
    """Parse one LOGEMU line: `<Mon dd hh:mm:ss> <host> [prefix] IN=.. OUT=.. ... MARK=..`."""
    match = _LOGEMU.match(line.strip())
    if match is None:
        raise LogParseError(_diagnose_logemu(line))
    (
        month,
        day,
        clock,
        node,
        prefix,
        in_interface,
        out_interface,
        source,
        destination,
        ip_id,
        protocol,
        source_port,
        destination_port,
        tcp_seq,
        tail,
        mark,
    ) = match.groups()
    is_tcp = protocol == "TCP"
    prefix = prefix.rstrip()
    return LogRecord.from_fields(
        {
            "time": f"{month} {day:>2} {clock}",
            "node": node,
            "prefix": prefix,
            "policy": policy_of_prefix(prefix) if prefix else None,
            "in_interface": in_interface or None,
            "out_interface": out_interface or None,
            "source": source,
            "destination": destination,
            "protocol": protocol,
            "source_port": int(source_port) if source_port else None,
            "destination_port": int(destination_port) if destination_port else None,
            "ip_id": int(ip_id) if ip_id else None,
            "tcp_seq": int(tcp_seq) if tcp_seq and is_tcp else None,
            "flags": frozenset(TCP_FLAG_NAMES.intersection(tail.split())) if is_tcp else _NO_FLAGS,
            "mark": int(mark, 16),
            "origin": origin,
        }
    )


def _json_int(document: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = document.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise LogParseError(f"{name}: {value!r} is not an integer")
        return value
    return None


def _json_str(document: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = document.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise LogParseError(f"{name}: {value!r} is not a string")
        return value
    return None


def parse_json_line(line: str, origin: str = "", node: str | None = None) -> LogRecord:
    """Parse one line of ulogd2's JSON output plugin (keys as BASE, IFINDEX, IP2STR name them)."""
    try:
        document = json.loads(line)
    except ValueError as error:
        raise LogParseError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise LogParseError("a JSON line that is not an object")
    protocol_number = _json_int(document, "ip.protocol", "ip6.nexthdr")
    if protocol_number is None:
        raise LogParseError("no ip.protocol field")
    protocol = IP_PROTOCOL_NAMES.get(protocol_number, str(protocol_number))
    is_tcp = protocol == "TCP"
    prefix = (_json_str(document, "oob.prefix") or "").strip()
    flags = (
        frozenset(name for name in TCP_FLAG_NAMES if document.get(f"tcp.{name.lower()}"))
        if is_tcp
        else frozenset()
    )
    return LogRecord(
        time=_json_str(document, "timestamp", "@timestamp"),
        node=_json_str(document, "hostname", "host") or node,
        prefix=prefix,
        policy=policy_of_prefix(prefix),
        in_interface=_json_str(document, "oob.in") or None,
        out_interface=_json_str(document, "oob.out") or None,
        source=_check_address("src_ip", _json_str(document, "src_ip", "ip.saddr.str")),
        destination=_check_address("dest_ip", _json_str(document, "dest_ip", "ip.daddr.str")),
        protocol=protocol,
        source_port=_json_int(document, "src_port", "tcp.sport", "udp.sport", "sctp.sport"),
        destination_port=_json_int(document, "dest_port", "tcp.dport", "udp.dport", "sctp.dport"),
        ip_id=_json_int(document, "ip.id"),
        tcp_seq=_json_int(document, "tcp.seq") if is_tcp else None,
        flags=flags,
        mark=_json_int(document, "oob.mark"),
        origin=origin,
    )


def parse_line(line: str, origin: str = "", node: str | None = None) -> LogRecord:
    """Parse a LOGEMU or a JSON line, whichever it is."""
    if line.lstrip().startswith("{"):
        return parse_json_line(line, origin, node)
    return parse_logemu_line(line, origin)


def rotation_order(path: str | Path) -> tuple[str, int]:
    """Sort key that puts `f.log.2.gz`, `f.log.1`, `f.log` in the order they were written."""
    name = str(path)
    match = _ROTATION_SUFFIX.match(name)
    if match is None or match.group("index") is None:
        base = name[:-3] if name.endswith(".gz") else name
        return (base, 0)
    return (match.group("base"), -int(match.group("index")))


def open_log(path: str | Path) -> IO[str]:
    """Open a log file as text; `.gz` files are decompressed. Undecodable bytes become U+FFFD."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
        return open(path, encoding="utf-8", errors="replace")
    except OSError as error:
        raise LogFileError(f"{path}: cannot read: {error.strerror or error}") from None


def iter_file_records(
    path: str | Path, stats: ParseStats, node: str | None = None
) -> Iterator[LogRecord]:
    """Yield the records of one file; count garbled lines in `stats` instead of raising."""
    name = str(path)
    stats.files.append(name)
    with open_log(path) as stream:
        try:
            for number, line in enumerate(stream, 1):
                stats.lines += 1
                if not line.strip():
                    continue
                origin = f"{name}:{number}"
                try:
                    record = parse_line(line, origin, node)
                except LogParseError as error:
                    stats.note_garbled(origin, str(error))
                    continue
                stats.records += 1
                yield record
        except (OSError, EOFError) as error:
            # A truncated .gz or a file that vanished while reading: keep what was read.
            stats.note_garbled(f"{name}:{stats.lines}", f"file ends badly: {error}")


def read_records(
    paths: Iterable[str | Path], *, nodes: Mapping[str, str] | None = None
) -> tuple[list[LogRecord], ParseStats]:
    """Read LOGEMU/JSON files (plain or .gz) in the given order.

    `nodes` maps a file path to the node it came from, for JSON lines, which carry no host name.
    Raises LogFileError naming a file that cannot be opened.
    """
    stats = ParseStats()
    records: list[LogRecord] = []
    for path in paths:
        node = (nodes or {}).get(str(path))
        records.extend(iter_file_records(path, stats, node))
    return records, stats


@dataclass(frozen=True)
class DropEvent:
    """One dropped (or falsely reported) packet: the lines its NFLOG rules left on one node.

    `passes` counts the packet's passes through the pod chains: a bridged packet one policy lets
    through runs through the destination pod's chain twice and leaves each of its `DROP by
    policy` lines twice (same IP ID and TCP SEQ). `node` is the node whose log holds the lines.
    """

    records: tuple[LogRecord, ...]
    source: str
    destination: str
    protocol: str
    source_port: int | None
    destination_port: int | None
    policies: tuple[str, ...]
    real: bool
    passes: int = 1
    node: str | None = None

    def __post_init__(self) -> None:
        if self.node is None and self.records:
            object.__setattr__(self, "node", self.records[0].node)

    @property
    def time(self) -> str | None:
        return self.records[0].time

    @property
    def policy(self) -> str | None:
        return self.policies[0] if self.policies else None

    @property
    def ip_id(self) -> int | None:
        return self.records[0].ip_id

    @property
    def tcp_seq(self) -> int | None:
        return self.records[0].tcp_seq

    @property
    def flags(self) -> frozenset[str]:
        return self.records[0].flags

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(record.origin for record in self.records)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "node": self.node,
            "source": self.source,
            "destination": self.destination,
            "protocol": self.protocol,
            "source_port": self.source_port,
            "destination_port": self.destination_port,
            "policy": self.policy,
            "policies": list(self.policies),
            "real": self.real,
            "ip_id": self.ip_id,
            "tcp_seq": self.tcp_seq,
            "flags": sorted(self.flags),
            "mark": self.records[-1].mark,
            "lines": len(self.records),
            "passes": self.passes,
            "origins": list(self.origins),
        }


# --- joining: the one rule, for the full path (records) and logscan's fast path (rows) ---------

_PREFIX_CACHE: dict[str, tuple[str | None, bool]] = {}


def prefix_meaning(raw: str) -> tuple[str | None, bool]:
    """(policy named, is the pod chain's unprefixed line) of a prefix, spaces and all."""
    meaning = _PREFIX_CACHE.get(raw)
    if meaning is None:
        prefix = raw.lstrip(" ").rstrip()
        meaning = (policy_of_prefix(prefix) if prefix else None, not prefix)
        if len(_PREFIX_CACHE) > 4096:
            _PREFIX_CACHE.clear()
        _PREFIX_CACHE[raw] = meaning
    return meaning


# One packet's lines: [first position, policies named (first-seen order), payloads (when
# collecting), first line, policies of the current pass, passes, key, still open]. A plain list:
# this is the hot loop of `logs --summary/--json`.
Group = list[Any]
# emit(order key, group, real): an event closed. The order key says where the event falls in
# the output: 3 * position + 2 for an event the line at `position` ended, 3 * (first position +
# window + 1) for one closed for age (see PacketJoiner).
Emit = Callable[[int, Group, bool], object]
# Stands in the open groups for a key whose lines go to `head` (logscan's workers).
HEAD: Group = [1 << 62, [], [], (), [], 0, None, False]


class PacketJoiner:
    """The joining rule: which lines are one packet, and when its event is complete.

    Lines with the same packet key (node, addresses, protocol, ports, IP ID, TCP SEQ) are one
    packet. A `DROP by policy` line whose policy already came in the packet's current pass
    starts its next pass (a bridged packet runs through the pod chains twice, writing the same
    lines again); the pod chain's unprefixed line (or a foreign prefix) is the last line of a
    packet and closes its event. A packet still open `window` lines after its first line is
    closed as it is, just before the line at first + window + 1: its pod-chain line never came
    (a false drop, or one the rate limit swallowed).

    Items are (position, row, payload); `key_of(row)` and `prefix_of(row)` read a row, which is
    a LogRecord on the full path and a field tuple on logscan's. Positions increase by one a
    line (logscan's parent feeds a sparse subset, in order). With `collect`, a group keeps its
    payloads (the records, or the origins).
    """

    def __init__(
        self,
        window: int,
        key_of: Callable[[Any], Any],
        prefix_of: Callable[[Any], str],
        emit: Emit,
        *,
        collect: bool,
    ) -> None:
        self.window = window
        self.key_of = key_of
        self.prefix_of = prefix_of
        self.emit = emit
        self.collect = collect
        self.open_groups: dict[Any, Group] = {}
        self.order: deque[Group] = deque()  # open groups by first position (closed ones skipped)

    def feed(
        self, items: Iterable[tuple[int, Any, Any]], head: list[tuple[int, Any, Any]] | None = None
    ) -> None:
        """Join the items; lines of a key whose open group is HEAD go to `head` instead."""
        window, key_of, prefix_of, emit, collect = (
            self.window,
            self.key_of,
            self.prefix_of,
            self.emit,
            self.collect,
        )
        open_groups, order = self.open_groups, self.order
        get_group = open_groups.get
        meanings = _PREFIX_CACHE
        # The newest group stays out of open_groups while its packet's lines come in a row.
        current: Group | None = None
        current_key: Any = None
        for position, row, payload in items:
            if order and order[0][0] < position - window:
                if current is not None:
                    open_groups[current_key] = current
                    current = None
                self.expire(position)
            key = key_of(row)
            if current is not None and key == current_key:
                group: Group | None = current
                current = None
            else:
                if current is not None:
                    open_groups[current_key] = current
                    current = None
                group = get_group(key)
                if group is not None:
                    if group is HEAD:
                        if head is not None:
                            head.append((position, row, payload))
                        continue
                    del open_groups[key]
            raw = prefix_of(row)
            meaning = meanings.get(raw) or prefix_meaning(raw)
            policy = meaning[0]
            if policy is not None:
                if group is None:
                    group = [position, [policy], [payload] if collect else None, row, [policy]]
                    group += (1, key, True)
                    order.append(group)
                else:
                    this_pass = group[4]
                    if policy in this_pass:
                        group[5] += 1
                        group[4] = [policy]
                    else:
                        this_pass.append(policy)
                        if policy not in group[1]:
                            group[1].append(policy)
                    if collect:
                        group[2].append(payload)
                current, current_key = group, key
                continue
            if group is None:
                group = [position, [], [payload] if collect else None, row, [], 1, key, False]
            else:
                group[7] = False
                if collect:
                    group[2].append(payload)
            emit(3 * position + 2, group, meaning[1])
        if current is not None:
            open_groups[current_key] = current

    def expire(self, position: int) -> None:
        """Close the groups too old for the line at `position` to join, oldest first."""
        order, open_groups, window = self.order, self.open_groups, self.window
        while order and order[0][0] < position - window:
            group = order.popleft()
            if group[7]:
                group[7] = False
                del open_groups[group[6]]
                self.emit(3 * (group[0] + window + 1), group, False)

    def adopt(self, groups: Iterable[Group], offset: int) -> None:
        """Take open groups joined elsewhere (a logscan worker's), positions counted from offset."""
        for group in groups:
            group[0] += offset
            self.open_groups[group[6]] = group
        self.order = deque(sorted(self.open_groups.values(), key=lambda group: group[0]))

    def flush(self, order_key: int) -> None:
        """Close every open group (end of input, or a quiet moment in follow mode), oldest first."""
        groups = sorted(self.open_groups.values(), key=lambda group: group[0])
        self.open_groups.clear()
        self.order.clear()
        for group in groups:
            group[7] = False
            self.emit(order_key, group, False)


def _record_key(record: LogRecord) -> tuple[Any, ...]:
    return record.packet_key


def _record_prefix(record: LogRecord) -> str:
    return record.prefix


def event_of_group(group: Group, real: bool) -> DropEvent:
    """The DropEvent of a group the full path joined (its payloads are the records)."""
    records: list[LogRecord] = group[2]
    first = records[0]
    return DropEvent(
        records=tuple(records),
        source=first.source,
        destination=first.destination,
        protocol=first.protocol,
        source_port=first.source_port,
        destination_port=first.destination_port,
        policies=tuple(group[1]),
        real=real,
        passes=group[5],
        node=first.node,
    )


class EventJoiner:
    """Join records into drop events incrementally (for `drop_events` and for follow mode), by
    PacketJoiner's rule; events come out in the order the fast path writes them."""

    def __init__(self, window: int = JOIN_WINDOW) -> None:
        self.window = window
        self._finished: list[tuple[int, DropEvent]] = []
        self._joiner = PacketJoiner(window, _record_key, _record_prefix, self._closed, collect=True)
        self._position = 0

    def _closed(self, order_key: int, group: Group, real: bool) -> None:
        self._finished.append((group[0], event_of_group(group, real)))

    def add(self, record: LogRecord) -> list[DropEvent]:
        """Take one record; return the events it completes."""
        return [event for _, event in self.add_positioned(record)]

    def add_positioned(self, record: LogRecord) -> list[tuple[int, DropEvent]]:
        """Like `add`, each event paired with the position of its first record."""
        self._joiner.feed(((self._position, record, record),))
        self._position += 1
        finished, self._finished = self._finished, []
        return finished

    def flush(self) -> list[DropEvent]:
        """Close every open group (end of input, or a quiet moment in follow mode)."""
        return [event for _, event in self.flush_positioned()]

    def flush_positioned(self) -> list[tuple[int, DropEvent]]:
        self._joiner.flush(3 * self._position)
        finished, self._finished = self._finished, []
        return finished


def drop_events(records: Iterable[LogRecord], window: int = JOIN_WINDOW) -> list[DropEvent]:
    """Join the lines of each dropped packet into one DropEvent, ordered by their first line."""
    joiner = EventJoiner(window)
    positioned: list[tuple[int, DropEvent]] = []
    for record in records:
        positioned.extend(joiner.add_positioned(record))
    positioned.extend(joiner.flush_positioned())
    positioned.sort(key=lambda pair: pair[0])
    return [event for _, event in positioned]


# --- time --------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"(?P<amount>[0-9]+)\s*(?P<unit>s|m|h|d)\Z")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time_bound(text: str, now: datetime | None = None) -> datetime:
    """A --since/--until value: ISO date-time, `HH:MM[:SS]` today, or `10m`/`2h`/`1d` ago.

    Returns naive local time, the frame LOGEMU's syslog stamps are written in.
    """
    now = now or datetime.now()
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        seconds = int(relative.group("amount")) * _UNIT_SECONDS[relative.group("unit")]
        return now - timedelta(seconds=seconds)
    if re.fullmatch(r"[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?", value):
        parts = [int(part) for part in value.split(":")] + [0]
        try:
            return now.replace(hour=parts[0], minute=parts[1], second=parts[2], microsecond=0)
        except ValueError:
            raise ValueError(f"{text!r}: not a time of day") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r}: expected an ISO date-time (2026-11-27T10:00), HH:MM, or 10m/2h/1d"
        ) from None
    return moment.astimezone().replace(tzinfo=None) if moment.tzinfo else moment


def record_datetime(record: LogRecord, now: datetime | None = None) -> datetime | None:
    """The record's time as naive local time; LOGEMU stamps get the year that keeps them past."""
    stamp = record.time
    if not stamp:
        return None
    if stamp[:3] in MONTHS:
        now = now or datetime.now()
        parts = stamp.split()
        try:
            hour, minute, second = (int(part) for part in parts[2].split(":"))
            moment = datetime(now.year, MONTHS[parts[0]], int(parts[1]), hour, minute, second)
        except (ValueError, IndexError):
            return None
        if moment - now > timedelta(days=1):
            moment = moment.replace(year=now.year - 1)
        return moment
    try:
        parsed = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return parsed.astimezone().replace(tzinfo=None) if parsed.tzinfo else parsed


# --- cluster snapshot: names for addresses, expected reachability --------------------------------


def load_snapshot(paths: Sequence[str | Path]) -> Cluster:
    """`kubectl get pods -A -o json` output, or any manifests model.load_manifests reads."""
    from k3s_netpol.model import load_manifests

    return load_manifests(paths)


def pods_by_ip(cluster: Cluster) -> dict[str, Pod]:
    return {pod.ip: pod for pod in cluster.pods if pod.ip}


@dataclass(frozen=True)
class EventView:
    """A drop event as the CLI shows it: with pod names and, given policies, the expectation."""

    event: DropEvent
    source_pod: str | None
    destination_pod: str | None
    expected: str | None  # "allowed" | "denied" | None (unknown: no policies, pod or port)

    @property
    def flagged(self) -> bool:
        """The model allows this flow, yet a drop was logged."""
        return self.expected == "allowed"

    @property
    def verdict(self) -> str:
        if self.expected == "allowed":
            return "false drop" if not self.event.real else "unexpected drop"
        return "drop" if self.event.real else "policy line only"

    def to_dict(self) -> dict[str, Any]:
        document = self.event.to_dict()
        document.update(
            source_pod=self.source_pod,
            destination_pod=self.destination_pod,
            expected=self.expected,
            flagged=self.flagged,
            verdict=self.verdict,
        )
        return document


class Enricher:
    """Names addresses after pods and checks events against the model's reachability."""

    def __init__(self, cluster: Cluster | None = None) -> None:
        self.cluster = cluster
        self.pods = pods_by_ip(cluster) if cluster is not None else {}
        self._expected: dict[tuple[str, str, int, str], str] = {}

    def view(self, event: DropEvent) -> EventView:
        source_pod, destination_pod, expected = self.describe(
            event.source, event.destination, event.destination_port, event.protocol
        )
        return EventView(
            event=event,
            source_pod=source_pod,
            destination_pod=destination_pod,
            expected=expected,
        )

    def describe(
        self, source: str, destination: str, destination_port: int | None, protocol: str
    ) -> tuple[str | None, str | None, str | None]:
        """(source pod, destination pod, expectation) of a flow; see EventView."""
        source_pod = self.pods.get(source)
        destination_pod = self.pods.get(destination)
        return (
            source_pod.key if source_pod else None,
            destination_pod.key if destination_pod else None,
            self._expectation(source_pod, destination_pod, destination_port, protocol),
        )

    def _expectation(
        self,
        source: Pod | None,
        destination: Pod | None,
        destination_port: int | None,
        protocol: str,
    ) -> str | None:
        if (
            self.cluster is None
            or not self.cluster.policies
            or source is None
            or destination is None
            or destination_port is None
        ):
            return None
        cache_key = (source.key, destination.key, destination_port, protocol)
        if cache_key not in self._expected:
            from k3s_netpol.model import is_allowed

            allowed = is_allowed(self.cluster, source, destination, destination_port, protocol)
            self._expected[cache_key] = "allowed" if allowed else "denied"
        return self._expected[cache_key]


# --- filters and summary --------------------------------------------------------------------


def policy_matches(wanted: str, logged: str) -> bool:
    """kube-router cuts `ns/name` in the prefix to 48 characters: a cut name matches its start."""
    return wanted == logged or (len(logged) >= 48 and wanted.startswith(logged))


@dataclass(frozen=True)
class EventFilter:
    namespace: str | None = None
    pod: str | None = None
    policy: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def accepts(self, view: EventView) -> bool:
        event = view.event
        if self.policy is not None and not any(
            policy_matches(self.policy, logged) for logged in event.policies
        ):
            return False
        if self.pod is not None and self.pod not in (view.source_pod, view.destination_pod):
            return False
        if self.namespace is not None:
            namespaces = {
                key.split("/", 1)[0]
                for key in (view.source_pod, view.destination_pod, *event.policies)
                if key
            }
            if self.namespace not in namespaces:
                return False
        if self.since is not None or self.until is not None:
            moment = record_datetime(event.records[0])
            if moment is None:
                return False
            if self.since is not None and moment < self.since:
                return False
            if self.until is not None and moment > self.until:
                return False
        return True


@dataclass
class FlowSummary:
    source: str
    destination: str
    protocol: str
    destination_port: int | None
    events: int = 0
    real: int = 0
    policies: Counter[str] = field(default_factory=Counter)
    nodes: set[str] = field(default_factory=set)
    flagged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "protocol": self.protocol,
            "destination_port": self.destination_port,
            "events": self.events,
            "real": self.real,
            "false": self.events - self.real,
            "flagged": self.flagged,
            "policies": dict(self.policies.most_common()),
            "nodes": sorted(self.nodes),
        }


def summarize(views: Iterable[EventView], top: int | None = 10) -> list[FlowSummary]:
    """The most dropped flows (source, destination, protocol, destination port), most first."""
    flows: dict[tuple[str, str, str, int | None], FlowSummary] = {}
    for view in views:
        event = view.event
        source = view.source_pod or event.source
        destination = view.destination_pod or event.destination
        key = (source, destination, event.protocol, event.destination_port)
        summary = flows.get(key)
        if summary is None:
            summary = flows[key] = FlowSummary(*key)
        summary.events += 1
        summary.real += event.real
        summary.flagged += view.flagged
        summary.policies.update(event.policies)
        if event.node:
            summary.nodes.add(event.node)
    ranked = sorted(
        flows.values(),
        key=lambda flow: (-flow.events, flow.source, flow.destination, flow.destination_port or 0),
    )
    return ranked if top is None else ranked[:top]


# --- follow mode --------------------------------------------------------------------------


class _FollowedFile:
    def __init__(self, path: Path, from_start: bool) -> None:
        self.path = path
        self.stream: IO[str] | None = None
        self.inode: int | None = None
        self.line_number = 0
        self.partial = ""
        self._open(from_start)

    def _open(self, from_start: bool) -> None:
        try:
            stream = open_log(self.path)
            self.inode = os.fstat(stream.fileno()).st_ino if self.path.suffix != ".gz" else None
        except (LogFileError, OSError):
            self.stream = None
            return
        if not from_start:
            stream.seek(0, os.SEEK_END)
        self.stream = stream
        self.line_number = 0
        self.partial = ""

    def read_lines(self) -> list[tuple[int, str]]:
        lines = self._drain()
        try:
            status = os.stat(self.path)
        except OSError:
            return lines
        rotated = self.stream is None or status.st_ino != self.inode
        truncated = not rotated and self.stream is not None and status.st_size < self.stream.tell()
        if rotated or truncated:
            if self.stream is not None:
                self.stream.close()
            self._open(from_start=True)
            lines.extend(self._drain())
        return lines

    def _drain(self) -> list[tuple[int, str]]:
        if self.stream is None:
            return []
        lines: list[tuple[int, str]] = []
        for chunk in iter(self.stream.readline, ""):
            if not chunk.endswith("\n"):
                self.partial += chunk
                break
            self.line_number += 1
            lines.append((self.line_number, self.partial + chunk))
            self.partial = ""
        return lines

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def follow_records(
    paths: Sequence[str | Path],
    stats: ParseStats,
    *,
    from_start: bool = False,
    poll_interval: float = 0.25,
    should_stop: Callable[[], bool] = lambda: False,
    nodes: Mapping[str, str] | None = None,
) -> Iterator[LogRecord | None]:
    """Yield records as lines are appended, across rotation (rename or copytruncate).

    Yields None after each quiet poll, so a caller can flush events whose last line came.
    """
    followed = [_FollowedFile(Path(path), from_start) for path in paths]
    try:
        while not should_stop():
            quiet = True
            for item in followed:
                node = (nodes or {}).get(str(item.path))
                for number, line in item.read_lines():
                    stats.lines += 1
                    if not line.strip():
                        continue
                    quiet = False
                    origin = f"{item.path}:{number}"
                    try:
                        record = parse_line(line, origin, node)
                    except LogParseError as error:
                        stats.note_garbled(origin, str(error))
                        continue
                    stats.records += 1
                    yield record
            if quiet:
                yield None
                time_module.sleep(poll_interval)
    finally:
        for item in followed:
            item.close()
