"""ulogd2's record of kube-router's policy drops: parse, join per packet, enrich, summarise.

Input is what ulogd2 writes for NFLOG group 100: LOGEMU text lines (an iptables-LOG look-alike)
and JSON lines (ulogd2's JSON output plugin). One blocked packet leaves several lines on the node
that hosts the destination pod: one `DROP by policy ns/name` line per policy chain it ran through
and then the pod chain's unprefixed line. `drop_events` joins those lines back into one event.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
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

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CLOCK = re.compile(r"\d\d:\d\d:\d\d\Z")
_IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}\Z")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\Z")
_NO_FLAGS: frozenset[str] = frozenset()
_ROTATION_SUFFIX = re.compile(r"^(?P<base>.*?)(?:[.-](?P<index>\d+))?(?P<gz>\.gz)?$")


class LogParseError(ValueError):
    """A line that is not a ulogd2 LOGEMU or JSON packet record; the message says why."""


class LogFileError(OSError):
    """A log file that cannot be read; the message names the file."""


class LogChangedError(LogFileError):
    """A log file that changed under the reader (truncated, rotated in place) while it was read,
    so that what was read may not be what the file held; the message names the file."""

    @classmethod
    def of(cls, name: str, how: str) -> LogChangedError:
        return cls(
            f"{name}: {how} while it was read (truncated, or rotated with copytruncate?); "
            "read it again, or read the rotated copy"
        )


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
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            pass
        else:
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


def _port(name: str, text: str | None) -> int | None:
    if not text:
        return None
    value = int(text)
    if value > 65535:
        raise LogParseError(f"{name}={text} is not a port (above 65535)")
    return value


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
            "source": _check_address("SRC", source),
            "destination": _check_address("DST", destination),
            "protocol": protocol,
            "source_port": _port("SPT", source_port),
            "destination_port": _port("DPT", destination_port),
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


def _json_port(document: Mapping[str, Any], *names: str) -> int | None:
    value = _json_int(document, *names)
    if value is not None and not 0 <= value <= 65535:
        raise LogParseError(f"{names[0]}: {value} is not a port (0 to 65535)")
    return value


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
    host = _json_str(document, "hostname", "host")
    for name, value in (("oob.prefix", prefix), ("hostname", host)):
        if value and _CONTROL.search(value):
            raise LogParseError(f"{name}: {value!r} holds a control character")
    flags = (
        frozenset(name for name in TCP_FLAG_NAMES if document.get(f"tcp.{name.lower()}"))
        if is_tcp
        else frozenset()
    )
    return LogRecord(
        time=_json_str(document, "timestamp", "@timestamp"),
        node=host or node,
        prefix=prefix,
        policy=policy_of_prefix(prefix),
        in_interface=_json_str(document, "oob.in") or None,
        out_interface=_json_str(document, "oob.out") or None,
        source=_check_address("src_ip", _json_str(document, "src_ip", "ip.saddr.str")),
        destination=_check_address("dest_ip", _json_str(document, "dest_ip", "ip.daddr.str")),
        protocol=protocol,
        source_port=_json_port(document, "src_port", "tcp.sport", "udp.sport", "sctp.sport"),
        destination_port=_json_port(document, "dest_port", "tcp.dport", "udp.dport", "sctp.dport"),
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


def distinct_files(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """The paths without those naming a file already named (same device and inode, whatever
    the path), and each (left out, the path kept for it). Paths that cannot be read stay, for
    the reader to name."""
    kept: list[Path] = []
    left_out: list[tuple[Path, Path]] = []
    seen: dict[tuple[int, int], Path] = {}
    for path in paths:
        try:
            status = path.stat()
        except OSError:
            kept.append(path)
            continue
        identity = (status.st_dev, status.st_ino)
        if identity in seen:
            left_out.append((path, seen[identity]))
            continue
        seen[identity] = path
        kept.append(path)
    return kept, left_out


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
    number = 0
    with open_log(path) as stream:
        plain = Path(path).suffix != ".gz"
        size_at_open = os.fstat(stream.fileno()).st_size if plain else 0
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
            if number == 0:
                check_gzip_start(path, error)
            # A truncated .gz or a file that vanished while reading: keep what was read.
            stats.note_garbled(f"{name}:{stats.lines}", f"file ends badly: {error}")
        if plain and (size := os.fstat(stream.fileno()).st_size) < size_at_open:
            raise LogChangedError.of(name, f"shrank from {size_at_open} bytes to {size}")


def check_gzip_start(path: str | Path, error: BaseException) -> None:
    """Raise LogFileError when reading a .gz failed at its start: it is not gzip at all."""
    if isinstance(error, gzip.BadGzipFile):
        raise LogFileError(f"{path}: not a gzip file ({error}), though its name ends in .gz")


def read_records(
    paths: str | Path | Iterable[str | Path], *, nodes: Mapping[str, str] | None = None
) -> tuple[list[LogRecord], ParseStats]:
    """Read LOGEMU/JSON files (plain or .gz) in the given order; one path may be given alone.

    `nodes` maps a file path to the node it came from, for JSON lines, which carry no host name.
    Raises LogFileError naming a file that cannot be opened or is not what its name says.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
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

    Items are (position, row, payload): a row is a tuple whose last item is the packet key and
    whose item `prefix_at` is the line's prefix (on the full path (prefix, key) of a LogRecord,
    on logscan's its field tuple). Positions increase by one a line (logscan's parent feeds a
    sparse subset, in order). With `collect`, a group keeps its payloads (the records, or the
    (row, origin) pairs).
    """

    def __init__(
        self,
        window: int,
        prefix_at: int,
        emit: Emit,
        *,
        collect: bool,
    ) -> None:
        self.window = window
        self.prefix_at = prefix_at
        self.emit = emit
        self.collect = collect
        self.open_groups: dict[Any, Group] = {}
        self.order: deque[Group] = deque()  # open groups by first position (closed ones skipped)

    def feed(
        self, items: Iterable[tuple[int, Any, Any]], head: list[tuple[int, Any, Any]] | None = None
    ) -> None:
        """Join the items; lines of a key whose open group is HEAD go to `head` instead."""
        window, prefix_at, emit, collect = self.window, self.prefix_at, self.emit, self.collect
        open_groups, order = self.open_groups, self.order
        get_group = open_groups.get
        meanings = _PREFIX_CACHE
        # The newest group stays out of open_groups while its packet's lines come in a row.
        current: Group | None = None
        current_key: Any = None
        for position, row, payload in items:
            limit = position - window
            while order and order[0][0] < limit:
                if order[0][7]:  # an open group too old to join: close it (and the rest)
                    if current is not None:
                        open_groups[current_key] = current
                        current = None
                    self.expire(position)
                    break
                order.popleft()  # closed already
            key = row[-1]
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
            raw = row[prefix_at]
            meaning = meanings.get(raw) or prefix_meaning(raw)
            policy = meaning[0]
            if policy is not None:
                if group is None:
                    # The first pass's policies are the policies named until a second pass.
                    named = [policy]
                    group = [
                        position,
                        named,
                        [payload] if collect else None,
                        row,
                        named,
                        1,
                        key,
                        True,
                    ]
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
        self._joiner = PacketJoiner(window, 0, self._closed, collect=True)
        self._position = 0

    def _closed(self, order_key: int, group: Group, real: bool) -> None:
        self._finished.append((group[0], event_of_group(group, real)))

    def add(self, record: LogRecord) -> list[DropEvent]:
        """Take one record; return the events it completes."""
        return [event for _, event in self.add_positioned(record)]

    def add_positioned(self, record: LogRecord) -> list[tuple[int, DropEvent]]:
        """Like `add`, each event paired with the position of its first record."""
        self._joiner.feed(((self._position, (record.prefix, record.packet_key), record),))
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
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"{text!r}: too far back (before the year 1)") from None
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

FOLLOW_BLOCK = 1 << 20
# The bytes before the read position that say the file is still the one read (not truncated
# and written again past that position within one poll).
FINGERPRINT_BYTES = 256
# A renamed file is still read until it has been quiet this many polls: its writer goes on
# writing to it until it reopens the path (ulogd2 on SIGHUP, in logrotate's postrotate).
RETIRED_QUIET_POLLS = 8


class _OpenFile:
    """One open file of a followed path: where reading got to (just after a line end) and the
    bytes before that position."""

    def __init__(self, path: Path, descriptor: int, offset: int, line_number: int = 0) -> None:
        self.path = path
        self.descriptor = descriptor
        self.inode = os.fstat(descriptor).st_ino
        self.offset = offset
        self.line_number = line_number
        self.fingerprint = self._bytes_before(offset)
        self.quiet_polls = 0

    def _bytes_before(self, offset: int) -> bytes:
        start = max(0, offset - FINGERPRINT_BYTES)
        return os.pread(self.descriptor, offset - start, start)

    def rewritten(self) -> bool:
        """Truncated since the last read (perhaps written again past the read position)."""
        if os.fstat(self.descriptor).st_size < self.offset:
            return True
        return self._bytes_before(self.offset) != self.fingerprint

    def read_lines(self, *, final: bool = False) -> list[tuple[str, str]]:
        """(origin, line) of the whole lines appended since the last read; with `final`, an
        unterminated last line too."""
        blocks: list[bytes] = []
        offset = self.offset
        while True:
            block = os.pread(self.descriptor, FOLLOW_BLOCK, offset)
            if not block:
                break
            blocks.append(block)
            offset += len(block)
        data = b"".join(blocks)
        end = len(data) if final else data.rfind(b"\n") + 1
        if end <= 0:
            return []
        if self.rewritten():  # what was read may be the new content: read again from 0
            return []
        lines = data[:end].decode("utf-8", errors="replace").splitlines()
        self.offset += end
        self.fingerprint = self._bytes_before(self.offset)
        first = self.line_number + 1
        self.line_number += len(lines)
        return [(f"{self.path}:{first + index}", line) for index, line in enumerate(lines)]

    def close(self) -> None:
        os.close(self.descriptor)


def _open_followed(path: Path, *, at_end: bool) -> _OpenFile | None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    offset = 0
    if at_end:
        size = os.fstat(descriptor).st_size
        tail = os.pread(descriptor, 1 << 16, max(0, size - (1 << 16)))
        offset = size - len(tail) + tail.rfind(b"\n") + 1
    return _OpenFile(path, descriptor, offset)


def _rotated_copy(current: _OpenFile) -> _OpenFile | None:
    """The copy logrotate's copytruncate made of the file before truncating it: a file beside
    it named after it (name.1, name-20261127) that holds the same bytes before the read
    position. Newest first."""
    path = current.path
    try:
        siblings = [
            entry
            for entry in path.parent.iterdir()
            if entry.name.startswith(path.name)
            and entry.name != path.name
            and not entry.name.endswith(".gz")
        ]
        siblings.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for sibling in siblings:
        copy = _open_followed(sibling, at_end=False)
        if copy is None:
            continue
        if copy._bytes_before(current.offset) == current.fingerprint:
            copy.offset, copy.line_number = current.offset, current.line_number
            copy.fingerprint = current.fingerprint
            return copy
        copy.close()
    return None


class _FollowedFile:
    """A followed path across rotation.

    Rename (logrotate's default): the old file is read to its end, and on while its writer
    still writes to it, until it has been quiet for RETIRED_QUIET_POLLS polls; the new file is
    read from its start. Copytruncate: a file shorter than the read position, or whose bytes
    before it changed (it was truncated and written again past it within one poll), is read
    again from its start, after the lines appended before the copy are read from the copy.
    """

    def __init__(
        self, path: Path, from_start: bool, warn: Callable[[str], object] = lambda _: None
    ) -> None:
        self.path = path
        self.warn = warn
        self.current = _open_followed(path, at_end=not from_start)
        self.retired: list[_OpenFile] = []

    def read_lines(self) -> list[tuple[str, str]]:
        lines: list[tuple[str, str]] = []
        for old in list(self.retired):
            appended = old.read_lines()
            old.quiet_polls = 0 if appended else old.quiet_polls + 1
            lines.extend(appended)
            if old.quiet_polls >= RETIRED_QUIET_POLLS:
                lines.extend(old.read_lines(final=True))
                old.close()
                self.retired.remove(old)
        current = self.current
        if current is not None:
            if current.rewritten():
                lines.extend(self._restart(current))
            lines.extend(current.read_lines())
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            return lines  # renamed and not created again yet
        if current is None or inode != current.inode:
            if current is not None:
                lines.extend(current.read_lines())
                self.retired.append(current)
            self.current = _open_followed(self.path, at_end=False)
            if self.current is not None:
                lines.extend(self.current.read_lines())
        return lines

    def _restart(self, current: _OpenFile) -> list[tuple[str, str]]:
        """Copytruncate: the lines the copy holds past the read position, then from 0."""
        lines: list[tuple[str, str]] = []
        copy = _rotated_copy(current)
        if copy is not None:
            lines = copy.read_lines(final=True)
            copy.close()
        elif current.offset:
            self.warn(
                f"{self.path} was truncated and no copy of it was found beside it: lines "
                f"written after its line {current.line_number} and before the truncation "
                "may be missing"
            )
        current.offset = 0
        current.line_number = 0
        current.fingerprint = b""
        return lines

    def close(self) -> None:
        for item in [self.current, *self.retired]:
            if item is not None:
                item.close()


def follow_records(
    paths: Sequence[str | Path],
    stats: ParseStats,
    *,
    from_start: bool = False,
    poll_interval: float = 0.25,
    should_stop: Callable[[], bool] = lambda: False,
    nodes: Mapping[str, str] | None = None,
    warn: Callable[[str], object] = lambda _: None,
) -> Iterator[LogRecord | None]:
    """Yield records as lines are appended, across rotation (rename or copytruncate); `warn`
    hears of lines that may have been lost (a file truncated with no copy beside it).

    A `.gz` file is read once (whole, even without from_start): nothing is appended to it; with
    only .gz files, that is all. Yields None after each quiet poll, so a caller can flush events
    whose last line came.
    """
    for path in paths:
        if Path(path).suffix == ".gz":
            yield from iter_file_records(path, stats, (nodes or {}).get(str(path)))
    followed = [
        _FollowedFile(Path(path), from_start, warn) for path in paths if Path(path).suffix != ".gz"
    ]
    if not followed:
        return
    try:
        while not should_stop():
            quiet = True
            for item in followed:
                node = (nodes or {}).get(str(item.path))
                for origin, line in item.read_lines():
                    stats.lines += 1
                    if not line.strip():
                        continue
                    quiet = False
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
