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
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

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


def _int_field(fields: Mapping[str, str], name: str, base: int = 10) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    try:
        return int(value, base)
    except ValueError:
        raise LogParseError(f"{name}={value!r} is not a number") from None


def _check_address(name: str, value: str | None) -> str:
    if value is None:
        raise LogParseError(f"no {name}= field")
    if _IPV4.match(value):
        if all(int(octet) <= 255 for octet in value.split(".")):
            return value
    elif _IPV6.match(value):
        return value
    raise LogParseError(f"{name}={value!r} is not an IP address")


def parse_logemu_line(line: str, origin: str = "") -> LogRecord:
    """Parse one LOGEMU line: `<Mon dd hh:mm:ss> <host> [prefix] IN=.. OUT=.. ... MARK=..`."""
    tokens = line.split()
    if len(tokens) < 5:
        raise LogParseError("too few fields for a LOGEMU line")
    month, day, clock, node = tokens[0], tokens[1], tokens[2], tokens[3]
    if month not in MONTHS or not day.isdigit() or not _CLOCK.match(clock):
        raise LogParseError(f"no syslog time stamp at the start: {' '.join(tokens[:3])!r}")
    start = 4
    while start < len(tokens) and not tokens[start].startswith("IN="):
        start += 1
    if start == len(tokens):
        raise LogParseError("no IN= field")
    prefix = " ".join(tokens[4:start])
    fields: dict[str, str] = {}
    bare: set[str] = set()
    for token in tokens[start:]:
        name, equals, value = token.partition("=")
        if not equals:
            bare.add(token)
        elif name not in fields:
            fields[name] = value
    source = _check_address("SRC", fields.get("SRC"))
    destination = _check_address("DST", fields.get("DST"))
    protocol = fields.get("PROTO")
    if not protocol:
        raise LogParseError("no PROTO= field (line truncated?)")
    if "MARK" not in fields:
        raise LogParseError("no MARK= field at the end (line truncated?)")
    if protocol in ("TCP", "UDP", "SCTP") and "INCOMPLETE" not in bare:
        for required in ("SPT", "DPT"):
            if required not in fields:
                raise LogParseError(f"PROTO={protocol} without {required}= (line truncated?)")
    is_tcp = protocol == "TCP"
    if is_tcp and "INCOMPLETE" not in bare and "URGP" not in fields:
        raise LogParseError("PROTO=TCP without URGP= (line truncated?)")
    return LogRecord(
        time=f"{month} {day:>2} {clock}",
        node=node,
        prefix=prefix,
        policy=policy_of_prefix(prefix),
        in_interface=fields.get("IN") or None,
        out_interface=fields.get("OUT") or None,
        source=source,
        destination=destination,
        protocol=protocol,
        source_port=_int_field(fields, "SPT"),
        destination_port=_int_field(fields, "DPT"),
        ip_id=_int_field(fields, "ID"),
        tcp_seq=_int_field(fields, "SEQ") if is_tcp else None,
        flags=frozenset(bare & TCP_FLAG_NAMES) if is_tcp else frozenset(),
        mark=_int_field(fields, "MARK", 16),
        origin=origin,
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
    """One dropped (or falsely reported) packet: the lines its NFLOG rules left on one node."""

    records: tuple[LogRecord, ...]
    source: str
    destination: str
    protocol: str
    source_port: int | None
    destination_port: int | None
    policies: tuple[str, ...]
    real: bool

    @property
    def node(self) -> str | None:
        return self.records[0].node

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
            "origins": list(self.origins),
        }


def _event_of(records: Sequence[LogRecord]) -> DropEvent:
    first = records[0]
    policies: list[str] = []
    real = False
    for record in records:
        if record.policy is not None:
            if record.policy not in policies:
                policies.append(record.policy)
        elif not record.prefix:
            real = True
    return DropEvent(
        records=tuple(records),
        source=first.source,
        destination=first.destination,
        protocol=first.protocol,
        source_port=first.source_port,
        destination_port=first.destination_port,
        policies=tuple(policies),
        real=real,
    )


class _OpenGroup:
    __slots__ = ("closed", "first_position", "policies", "records")

    def __init__(self, position: int) -> None:
        self.first_position = position
        self.records: list[LogRecord] = []
        self.policies: set[str] = set()
        self.closed = False


class EventJoiner:
    """Join records into drop events incrementally (for `drop_events` and for follow mode).

    Lines with the same packet key (node, addresses, protocol, ports, IP ID, TCP SEQ) form one
    event. The pod chain's unprefixed line is the last NFLOG rule a packet meets, so it closes
    the event; a second line from a policy already in the group starts a new packet; a group
    older than `window` records is closed as it is (the pod-chain line never came).
    """

    def __init__(self, window: int = JOIN_WINDOW) -> None:
        self.window = window
        self._open: dict[tuple[Any, ...], _OpenGroup] = {}
        self._position = 0
        self._next_sweep = window

    def add(self, record: LogRecord) -> list[DropEvent]:
        """Take one record; return the events it completes."""
        return [event for _, event in self.add_positioned(record)]

    def add_positioned(self, record: LogRecord) -> list[tuple[int, DropEvent]]:
        """Like `add`, each event paired with the position of its first record."""
        finished: list[tuple[int, DropEvent]] = []
        position = self._position
        self._position += 1
        if position >= self._next_sweep:
            finished.extend(self._expire(position))
            self._next_sweep = position + self.window // 4 + 1
        key = record.packet_key
        group = self._open.get(key)
        if group is not None and (
            position - group.first_position > self.window
            or (record.policy is not None and record.policy in group.policies)
        ):
            finished.append((group.first_position, _event_of(group.records)))
            del self._open[key]
            group = None
        if group is None:
            group = _OpenGroup(position)
            self._open[key] = group
        group.records.append(record)
        if record.policy is not None:
            group.policies.add(record.policy)
        else:
            # The pod chain's unprefixed line ends a packet's path; a foreign prefix is its own.
            finished.append((group.first_position, _event_of(group.records)))
            del self._open[key]
        return finished

    def _expire(self, position: int) -> list[tuple[int, DropEvent]]:
        expired = [
            key
            for key, group in self._open.items()
            if position - group.first_position > self.window
        ]
        groups = [self._open.pop(key) for key in expired]
        return [(group.first_position, _event_of(group.records)) for group in groups]

    def flush(self) -> list[DropEvent]:
        """Close every open group (end of input, or a quiet moment in follow mode)."""
        return [event for _, event in self.flush_positioned()]

    def flush_positioned(self) -> list[tuple[int, DropEvent]]:
        groups = sorted(self._open.values(), key=lambda group: group.first_position)
        self._open.clear()
        return [(group.first_position, _event_of(group.records)) for group in groups]


def drop_events(records: Iterable[LogRecord], window: int = JOIN_WINDOW) -> list[DropEvent]:
    """Join the lines of each dropped packet into one DropEvent, ordered by their first line."""
    joiner = EventJoiner(window)
    positioned: list[tuple[int, DropEvent]] = []
    for record in records:
        positioned.extend(joiner.add_positioned(record))
    positioned.extend(joiner.flush_positioned())
    positioned.sort(key=lambda pair: pair[0])
    return [event for _, event in positioned]
