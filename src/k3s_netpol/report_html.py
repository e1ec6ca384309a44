"""report.html: the verify report as one self-contained page (inline CSS and JS, no network).

It renders the document `Report.to_dict()` returns, which is what report.json holds: a header
with the verdict and counts, one grid per port and protocol (sources x destinations, grouped by
namespace, each cell coloured by its status and carrying report.txt's letter code), each cell's
details (expected, observed, policy lines, problems, the log lines of its packets with their
node), and the drop events, filterable by namespace, pod and policy. Events name their lines
as `path:number`; write_html reads those lines' text from the files (as named, or under the
report's logs/ directory, where `report --run` saves them) so that the page shows them.

Fields this module does not know are shown as they are (row, event and summary fields alike), and
fields it knows are optional: the page keeps working as the report grows.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from k3s_netpol.files import write_if_changed
from k3s_netpol.logs import LogFileError, open_log

HTML_NAME = "report.html"

Document = Mapping[str, Any]


@dataclass(frozen=True)
class Status:
    """What a probe's cell shows: its CSS class suffix, its legend label and what it means."""

    key: str
    label: str
    meaning: str
    always_in_legend: bool = True


ALLOWED = Status("allowed", "allowed", "expected and observed allowed; no drop line")
FALSE_DROP = Status(
    "false-drop",
    "allowed, false drop",
    "allowed and connected; only per-policy `DROP by policy` lines (k3s #9032)",
)
BLOCKED_LOGGED = Status(
    "blocked-logged", "blocked, logged", "expected and observed blocked; drop line found"
)
RATE_LIMITED = Status(
    "rate-limited",
    "blocked, rate-limited",
    "expected and observed blocked; the log rule's rate limit explains the missing line",
    always_in_legend=False,
)
BLOCKED_UNLOGGED = Status(
    "blocked-unlogged",
    "blocked, not logged",
    "expected and observed blocked; no drop line on the deciding node",
)
ALLOWED_LOGGED = Status(
    "allowed-logged",
    "allowed, drop logged",
    "expected and observed allowed, yet the pod chain logged a drop",
)
MISMATCH = Status("mismatch", "mismatch", "observed outcome differs from the expected one")
NOT_PROBED = Status("not-probed", "not probed", "no observation for this pair")

STATUSES = (
    ALLOWED,
    FALSE_DROP,
    BLOCKED_LOGGED,
    RATE_LIMITED,
    BLOCKED_UNLOGGED,
    ALLOWED_LOGGED,
    MISMATCH,
    NOT_PROBED,
)
_STATUS_BY_KEY = {status.key: status for status in STATUSES}


def cell_status(row: Mapping[str, Any]) -> Status:
    """The status of one report row (a `Row.to_dict()`); every cell's colour comes from here.

    A row may name its status itself (`status` or `evidence` holding a key of STATUSES, such as
    "rate-limited"); otherwise it follows from expected, observed, logged and false_drop.
    """
    for field in ("status", "evidence"):
        named = row.get(field)
        if isinstance(named, str) and named in _STATUS_BY_KEY:
            return _STATUS_BY_KEY[named]
    expected, observed = row.get("expected"), row.get("observed")
    if observed not in ("allowed", "blocked"):
        return NOT_PROBED
    if observed != expected:
        return MISMATCH
    if expected == "blocked":
        return BLOCKED_LOGGED if row.get("logged") else BLOCKED_UNLOGGED
    if row.get("logged"):
        return ALLOWED_LOGGED
    return FALSE_DROP if row.get("false_drop") else ALLOWED


def cell_code(row: Mapping[str, Any]) -> str:
    """report.txt's letter code, as verify wrote it into the row (`code`); `?` when absent."""
    return str(row.get("code") or "?")


# --- small HTML helpers ---------------------------------------------------------------------


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _humanize(key: str) -> str:
    return key.replace("_", " ")


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, (list, tuple, dict)) and not value)


def _value_html(value: Any) -> str:
    """Any JSON value, readable: scalars as text, lists of scalars joined, the rest as JSON."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (str, int, float)):
        return _e(value)
    if isinstance(value, list) and all(isinstance(item, (str, int, float)) for item in value):
        return _e(", ".join(str(item) for item in value))
    return f"<pre>{_e(json.dumps(value, indent=1, sort_keys=True))}</pre>"


def _extras(item: Mapping[str, Any], known: Iterable[str]) -> list[tuple[str, Any]]:
    """The fields of `item` this module does not render itself, with a value worth showing."""
    skip = set(known)
    return [(key, value) for key, value in item.items() if key not in skip and not _is_empty(value)]


def _dl(pairs: Iterable[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{_e(term)}</dt><dd>{definition}</dd>" for term, definition in pairs)
    return f"<dl>{items}</dl>"


def _asset(name: str) -> str:
    return resources.files("k3s_netpol").joinpath("data", "report", name).read_text("utf-8")


# --- the document's parts -------------------------------------------------------------------


def _rows(document: Document) -> list[Mapping[str, Any]]:
    rows = document.get("rows")
    return [row for row in rows if isinstance(row, Mapping)] if isinstance(rows, list) else []


def _events(document: Document) -> list[Mapping[str, Any]]:
    """Every event when the report lists them (`events`), else the unexplained drops."""
    for key in ("events", "unexplained_drops"):
        events = document.get(key)
        if isinstance(events, list) and events:
            return [event for event in events if isinstance(event, Mapping)]
    return []


def _flow(source: Any, destination: Any, port: Any, protocol: Any) -> tuple[str, str, str, str]:
    return (str(source), str(destination), str(port), str(protocol).upper())


def _row_flow(row: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return _flow(
        row.get("source_ip"), row.get("destination_ip"), row.get("port"), row.get("protocol")
    )


def _event_flow(event: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return _flow(
        event.get("source"),
        event.get("destination"),
        event.get("destination_port"),
        event.get("protocol"),
    )


def _namespace(pod: str) -> str:
    return pod.partition("/")[0] if "/" in pod else ""


def _pod_name(pod: str) -> str:
    return pod.partition("/")[2] if "/" in pod else pod


def _split_origin(origin: str) -> tuple[str, int] | None:
    path, separator, number = origin.rpartition(":")
    return (path, int(number)) if separator and path and number.isdigit() else None


def read_log_lines(document: Document, directory: Path) -> dict[str, str]:
    """The text of each line the events name (`path:number`): from the file as named, else from
    `<directory>/logs/<file name>`. Lines of files that cannot be read are left out."""
    wanted: dict[str, set[int]] = defaultdict(set)
    for event in _events(document):
        for origin in _lines(event):
            if (split := _split_origin(origin)) is not None:
                wanted[split[0]].add(split[1])
    texts: dict[str, str] = {}
    for name, numbers in wanted.items():
        path = Path(name)
        if not path.is_file():
            path = directory / "logs" / path.name
        if not path.is_file():
            continue
        last = max(numbers)
        try:
            with open_log(path) as log:
                for number, text in enumerate(log, start=1):
                    if number in numbers:
                        texts[f"{name}:{number}"] = text.rstrip("\r\n")
                    if number >= last:
                        break
        except (OSError, LogFileError):
            continue
    return texts


@dataclass(frozen=True)
class _Page:
    """The document, indexed once: rows by number, events by flow, pods by IP; line texts."""

    document: Document
    texts: Mapping[str, str]
    rows: list[Mapping[str, Any]]
    events: list[Mapping[str, Any]]
    events_by_flow: dict[tuple[str, str, str, str], list[int]]
    row_by_flow: dict[tuple[str, str, str, str], int]
    pods_by_ip: dict[str, str]

    @classmethod
    def of(cls, document: Document, texts: Mapping[str, str]) -> _Page:
        rows = _rows(document)
        events = _events(document)
        events_by_flow: dict[tuple[str, str, str, str], list[int]] = defaultdict(list)
        for index, event in enumerate(events):
            events_by_flow[_event_flow(event)].append(index)
        pods_by_ip: dict[str, str] = {}
        for row in rows:
            for pod, ip in (
                (row.get("from"), row.get("source_ip")),
                (row.get("to"), row.get("destination_ip")),
            ):
                if isinstance(pod, str) and isinstance(ip, str):
                    pods_by_ip[ip] = pod
        return cls(
            document=document,
            texts=texts,
            rows=rows,
            events=events,
            events_by_flow=dict(events_by_flow),
            row_by_flow={_row_flow(row): index for index, row in enumerate(rows)},
            pods_by_ip=pods_by_ip,
        )

    def pod_of(self, ip: Any) -> str:
        return self.pods_by_ip.get(str(ip), str(ip))

    def nodes(self) -> list[str]:
        found: set[str] = set()
        listed = self.document.get("nodes")
        if isinstance(listed, list):
            found.update(str(node) for node in listed if node)
        for item in (*self.rows, *self.events):
            for key in ("node", "destination_node", "source_node", "blocking_node"):
                value = item.get(key)
                if isinstance(value, str) and value:
                    found.add(value)
        return sorted(found)


# --- header ---------------------------------------------------------------------------------

_SUMMARY_LABELS = {
    "probes": "probes",
    "ok": "ok",
    "failed": "failed",
    "expected_allowed": "expected allowed",
    "expected_blocked": "expected blocked",
    "observed_allowed": "observed allowed",
    "observed_blocked": "observed blocked",
    "not_probed": "not probed",
    "logged": "logged",
    "false_drops": "false drops",
    "unexplained_drops": "unexplained drops",
}


def _header(page: _Page, generated_at: str | None) -> str:
    document = page.document
    ok = document.get("ok")
    verdict = "OK" if ok is True else ("MISMATCH" if ok is False else "UNKNOWN")
    summary = document.get("summary")
    summary = summary if isinstance(summary, Mapping) else {}
    counts = [
        f'<div class="count" data-count="{_e(key)}"><b>{_e(value)}</b> {_e(label)}</div>'
        for key, label in _SUMMARY_LABELS.items()
        if (value := summary.get(key)) is not None
    ]
    counts += [
        f'<div class="count" data-count="{_e(key)}"><b>{_value_html(value)}</b> '
        f"{_e(_humanize(key))}</div>"
        for key, value in _extras(summary, _SUMMARY_LABELS)
    ]
    when = next(
        (str(value) for key in ("generated_at", "time") if (value := document.get(key))),
        generated_at,
    )
    nodes = page.nodes()
    facts = [("nodes", _e(", ".join(nodes)) if nodes else "unknown")]
    if when:
        facts.append(("generated", _e(when)))
    facts += [
        (_humanize(key), _value_html(value))
        for key, value in _extras(
            document,
            (
                "ok",
                "summary",
                "rows",
                "events",
                "unexplained_drops",
                "notes",
                "nodes",
                "generated_at",
                "time",
            ),
        )
    ]
    notes = document.get("notes")
    notes_html = (
        "<ul class='notes'>" + "".join(f"<li>{_e(note)}</li>" for note in notes) + "</ul>"
        if isinstance(notes, list) and notes
        else ""
    )
    return (
        f'<header><h1>NetworkPolicy verification <span class="verdict v-{verdict.lower()}"'
        f' id="verdict">{verdict}</span></h1>'
        f'<div class="counts">{"".join(counts)}</div>{_dl(facts)}{notes_html}{_failures(page)}'
        "</header>"
    )


def _failures(page: _Page) -> str:
    items = []
    for index, row in enumerate(page.rows):
        problems = row.get("problems")
        if row.get("ok", True) or not isinstance(problems, list):
            continue
        for problem in problems:
            items.append(
                f'<li><a href="#probe-{index}">{_e(_probe_title(row))}</a>: {_e(problem)}</li>'
            )
    if not items:
        return ""
    return f'<section class="failures"><h2>Failures</h2><ul>{"".join(items)}</ul></section>'


def _probe_title(row: Mapping[str, Any]) -> str:
    return f"{row.get('from')} → {row.get('to')} {row.get('port')}/{row.get('protocol')}"


# --- legend and grids -----------------------------------------------------------------------


def _legend(page: _Page) -> str:
    counts: dict[str, int] = defaultdict(int)
    for row in page.rows:
        counts[cell_status(row).key] += 1
    items = []
    for status in STATUSES:
        if not status.always_in_legend and not counts[status.key]:
            continue
        items.append(
            f'<li data-status="{status.key}"><span class="swatch s-{status.key}"></span>'
            f"<b>{_e(status.label)}</b> ({counts[status.key]}): {_e(status.meaning)}</li>"
        )
    return (
        '<section class="legend" id="legend"><h2>Legend</h2><ul>'
        + "".join(items)
        + "</ul><p>Each cell reads as in report.txt: expected, observed (A allowed, B blocked, "
        "? not probed), then L drop line, f false drop (policy line only) or - none; "
        "* marks a failed row. Click a cell for its details.</p></section>"
    )


def _sorted_pods(pods: Iterable[str]) -> list[str]:
    return sorted(set(pods), key=lambda pod: (_namespace(pod), _pod_name(pod)))


def _grids(page: _Page) -> str:
    by_port: dict[tuple[int, str], dict[tuple[str, str], int]] = defaultdict(dict)
    for index, row in enumerate(page.rows):
        port = row.get("port")
        key = (port if isinstance(port, int) else 0, str(row.get("protocol", "")))
        by_port[key][(str(row.get("from")), str(row.get("to")))] = index
    return "".join(
        _grid(page, port, protocol, cells) for (port, protocol), cells in sorted(by_port.items())
    )


def _grid(page: _Page, port: int, protocol: str, cells: Mapping[tuple[str, str], int]) -> str:
    sources = _sorted_pods(source for source, _ in cells)
    destinations = _sorted_pods(destination for _, destination in cells)
    column_groups: list[tuple[str, int]] = []
    for pod in destinations:
        namespace = _namespace(pod)
        if column_groups and column_groups[-1][0] == namespace:
            column_groups[-1] = (namespace, column_groups[-1][1] + 1)
        else:
            column_groups.append((namespace, 1))
    starts = {destinations[0]} if destinations else set()
    starts.update(b for a, b in itertools.pairwise(destinations) if _namespace(a) != _namespace(b))
    head = (
        '<tr><th class="corner" colspan="2" rowspan="2">from ↓ to →</th>'
        + "".join(
            f'<th class="ns ns-start" colspan="{span}">{_e(namespace)}</th>'
            for namespace, span in column_groups
        )
        + "</tr><tr>"
        + "".join(
            f'<th class="pod{" ns-start" if pod in starts else ""}" title="{_e(pod)}">'
            f"{_e(_pod_name(pod))}</th>"
            for pod in destinations
        )
        + "</tr>"
    )
    bodies = []
    for namespace in dict.fromkeys(_namespace(pod) for pod in sources):
        group = [pod for pod in sources if _namespace(pod) == namespace]
        lines = []
        for position, source in enumerate(group):
            namespace_cell = (
                f'<th class="ns" rowspan="{len(group)}">{_e(namespace)}</th>'
                if position == 0
                else ""
            )
            row_cells = "".join(
                _cell(page, cells.get((source, destination)), destination in starts)
                for destination in destinations
            )
            lines.append(
                f'<tr>{namespace_cell}<th class="pod" title="{_e(source)}">'
                f"{_e(_pod_name(source))}</th>{row_cells}</tr>"
            )
        bodies.append(f"<tbody>{''.join(lines)}</tbody>")
    title = f"port {port}/{protocol}"
    vertical = " vertical" if any(len(_pod_name(pod)) > 3 for pod in destinations) else ""
    return (
        f'<section class="grid-section"><h2>{_e(title)}</h2>'
        f'<table class="grid{vertical}" data-port="{port}" data-protocol="{_e(protocol)}">'
        f"<thead>{head}</thead>{''.join(bodies)}</table></section>"
    )


def _cell(page: _Page, index: int | None, namespace_start: bool) -> str:
    edge = " ns-start" if namespace_start else ""
    if index is None:
        return f'<td class="c none{edge}" title="not probed by this matrix">·</td>'
    row = page.rows[index]
    status = cell_status(row)
    failed = " failed" if row.get("ok") is False else ""
    tip = f"{_probe_title(row)}: {status.label}"
    return (
        f'<td class="c s-{status.key}{failed}{edge}" data-status="{status.key}">'
        f'<a href="#probe-{index}" title="{_e(tip)}">{_e(cell_code(row))}</a></td>'
    )


# --- details --------------------------------------------------------------------------------

_ROW_FIELDS = (
    "from",
    "to",
    "port",
    "protocol",
    "expected",
    "observed",
    "logged",
    "source_ip",
    "destination_ip",
    "destination_node",
    "drop_lines",
    "policies",
    "false_drop",
    "ok",
    "problems",
    "notes",
    "code",
    "decided_by",
)


def _decided_by_html(sides: Any) -> str:
    """The model's decision per side (verify's `decided_by`): who selects the judged pod and
    which rules admit the connection."""
    if not isinstance(sides, list) or not sides:
        return "unknown (no manifests)"
    parts = []
    for side in sides:
        if not isinstance(side, Mapping):
            continue
        where = f"{_e(side.get('direction', '?'))} of {_e(side.get('pod', '?'))}"
        selecting = [str(key) for key in side.get("selecting") or []]
        if not side.get("isolated"):
            parts.append(f"{where}: no policy selects it, open")
            continue
        allowing = [
            f"{rule.get('policy')} (rule {rule.get('rule')})"
            for rule in side.get("allowing") or []
            if isinstance(rule, Mapping)
        ]
        verdict = f"allowed by {', '.join(allowing)}" if allowing else "no rule admits it: blocked"
        parts.append(f"{where}: selected by {_e(', '.join(selecting))}; {_e(verdict)}")
    return "<br>".join(parts)


def _details(page: _Page) -> str:
    sections = [_probe_details(page, index, row) for index, row in enumerate(page.rows)]
    return (
        '<aside id="details" aria-live="polite"><a href="#" class="close" '
        'title="Close (Esc)">&times;</a>' + "".join(sections) + "</aside>"
    )


def _probe_details(page: _Page, index: int, row: Mapping[str, Any]) -> str:
    status = cell_status(row)
    policies = row.get("policies")
    facts = [
        (
            "status",
            f'<span class="swatch s-{status.key}"></span> {_e(status.label)} '
            f"<code>{_e(cell_code(row))}</code>",
        ),
        ("expected", _e(row.get("expected", "unknown"))),
        ("observed", _e(row.get("observed", "unknown"))),
        ("result", "ok" if row.get("ok", True) else "<b>FAIL</b>"),
        ("logged", _value_html(bool(row.get("logged")))),
        ("drop lines", _value_html(row.get("drop_lines", 0))),
        ("decided by (model)", _decided_by_html(row.get("decided_by"))),
        ("policy lines from", _value_html(policies) if not _is_empty(policies) else "none"),
        ("source", f"{_e(row.get('from'))} ({_e(row.get('source_ip'))})"),
        ("destination", f"{_e(row.get('to'))} ({_e(row.get('destination_ip'))})"),
        ("destination node", _e(row.get("destination_node") or "unknown")),
    ]
    facts += [(_humanize(key), _value_html(value)) for key, value in _extras(row, _ROW_FIELDS)]
    lists = "".join(
        f'<h4>{title}</h4><ul class="{css}">'
        + "".join(f"<li>{_e(item)}</li>" for item in items)
        + "</ul>"
        for title, css, items in (
            ("Problems", "problems", row.get("problems")),
            ("Notes", "notes", row.get("notes")),
        )
        if isinstance(items, list) and items
    )
    event_indexes = page.events_by_flow.get(_row_flow(row), [])
    events_html = "".join(_event_block(page, page.events[i], i) for i in event_indexes)
    if not events_html:
        events_html = '<p class="no-lines">No log line for this flow.</p>'
    return (
        f'<section class="probe" id="probe-{index}" data-status="{status.key}">'
        f"<h3>{_e(_probe_title(row))}</h3>{_dl(facts)}{lists}"
        f"<h4>Log lines ({sum(len(_lines(page.events[i])) for i in event_indexes)})</h4>"
        f"{events_html}</section>"
    )


def _lines(event: Mapping[str, Any]) -> list[str]:
    lines = event.get("lines", event.get("origins"))
    return [str(line) for line in lines] if isinstance(lines, list) else []


def _event_kind(event: Mapping[str, Any]) -> str:
    return "real" if event.get("real") else "false"


_EVENT_FIELDS = (
    "node",
    "source",
    "destination",
    "protocol",
    "source_port",
    "destination_port",
    "policies",
    "policy",
    "real",
    "lines",
    "origins",
)


def _lines_html(page: _Page, event: Mapping[str, Any]) -> str:
    """The event's lines: the text where it was read, under the `path:number` it came from."""
    items = []
    for origin in _lines(event):
        text = page.texts.get(origin)
        where = f'<span class="origin">{_e(origin)}</span>'
        items.append(f"{where}\n{_e(text)}" if text is not None else where)
    return f'<pre class="lines">{chr(10).join(items)}</pre>'


def _event_block(page: _Page, event: Mapping[str, Any], index: int) -> str:
    kind = _event_kind(event)
    label = "real drop (pod chain line)" if kind == "real" else "false drop (policy lines only)"
    policies = event.get("policies")
    meta = [
        f"node <b>{_e(event.get('node') or 'unknown')}</b>",
        _e(label),
        f'event <a href="#event-{index}" class="to-event">#{index + 1}</a>',
    ]
    if not _is_empty(policies):
        meta.append(f"policies {_value_html(policies)}")
    meta += [
        f"{_e(_humanize(key))} {_value_html(value)}" for key, value in _extras(event, _EVENT_FIELDS)
    ]
    return (
        f'<div class="event e-{kind}"><div class="meta">{" · ".join(meta)}</div>'
        f"{_lines_html(page, event)}</div>"
    )


# --- events table ---------------------------------------------------------------------------


def _events_table(page: _Page) -> str:
    if not page.events:
        return (
            '<section class="events" id="events"><h2>Drop events</h2><p>None logged.</p></section>'
        )
    namespaces: set[str] = set()
    pods: set[str] = set()
    policies: set[str] = set()
    extra_keys: list[str] = []
    for event in page.events:
        for key, _ in _extras(event, _EVENT_FIELDS):
            if key not in extra_keys:
                extra_keys.append(key)
    body = []
    for index, event in enumerate(page.events):
        source = page.pod_of(event.get("source"))
        destination = page.pod_of(event.get("destination"))
        event_namespaces = {_namespace(pod) for pod in (source, destination) if "/" in pod}
        event_policies = [str(p) for p in event.get("policies") or [] if p]
        namespaces.update(event_namespaces)
        pods.update((source, destination))
        policies.update(event_policies)
        kind = _event_kind(event)
        row_index = page.row_by_flow.get(_event_flow(event))
        probe = (
            f'<a href="#probe-{row_index}">{_e(cell_code(page.rows[row_index]))}</a>'
            if row_index is not None
            else "unexplained"
        )
        # A probe's lines are in its cell's details; only unexplained events carry theirs here.
        lines_cell = (
            f'<a href="#probe-{row_index}">{len(_lines(event))}</a>'
            if row_index is not None
            else f"<details><summary>{len(_lines(event))}</summary>"
            f"{_lines_html(page, event)}</details>"
        )
        extra_cells = "".join(
            f"<td>{_value_html(event[key]) if not _is_empty(event.get(key)) else ''}</td>"
            for key in extra_keys
        )
        body.append(
            f'<tr id="event-{index}" class="e-{kind}"'
            f' data-ns="{_e(" ".join(sorted(event_namespaces)))}"'
            f' data-pods="{_e(" ".join((source, destination)))}"'
            f' data-policies="{_e(" ".join(event_policies))}" data-kind="{kind}">'
            f"<td>{index + 1}</td><td>{_e(event.get('node') or '')}</td>"
            f"<td>{_e(source)}</td><td>{_e(destination)}</td>"
            f"<td>{_e(event.get('destination_port'))}/{_e(event.get('protocol'))}</td>"
            f'<td class="policies">{_e(", ".join(event_policies)) or "—"}</td>'
            f'<td class="kind">{kind}</td><td>{probe}</td>{extra_cells}'
            f"<td>{lines_cell}</td></tr>"
        )
    extra_heads = "".join(f"<th>{_e(_humanize(key))}</th>" for key in extra_keys)
    return (
        '<section class="events" id="events"><h2>Drop events</h2>'
        '<form class="filters" id="event-filters">'
        + _select("f-ns", "namespace", sorted(namespaces), "ns")
        + _select("f-pod", "pod", _sorted_pods(pods), "pods")
        + _select("f-policy", "policy", sorted(policies), "policies")
        + _select("f-kind", "real/false", ["real", "false"], "kind")
        + f'<span id="event-count">{len(page.events)} of {len(page.events)} events</span></form>'
        '<table class="event-table"><thead><tr><th>#</th><th>node</th><th>from</th><th>to</th>'
        "<th>port</th><th>policies</th><th>real/false</th><th>probe</th>"
        f"{extra_heads}<th>lines</th></tr></thead><tbody>{''.join(body)}</tbody></table></section>"
    )


def _select(element_id: str, label: str, options: Sequence[str], attribute: str) -> str:
    choices = "".join(f'<option value="{_e(option)}">{_e(option)}</option>' for option in options)
    return (
        f'<label>{_e(label)} <select id="{element_id}" data-attribute="{attribute}">'
        f'<option value="">all</option>{choices}</select></label>'
    )


# --- the page -------------------------------------------------------------------------------


def render(
    document: Document, generated_at: str | None = None, texts: Mapping[str, str] | None = None
) -> str:
    """The whole page for one report document (`Report.to_dict()` / report.json); `texts` maps
    a line's `path:number` to its text (read_log_lines)."""
    page = _Page.of(document, texts or {})
    title = "NetworkPolicy verification: " + ("OK" if document.get("ok") else "MISMATCH")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_asset('report.css')}</style></head>"
        f"<body>{_header(page, generated_at)}<main>{_legend(page)}"
        f'<section class="grids">{_grids(page)}</section>{_events_table(page)}</main>'
        f"{_details(page)}<script>{_asset('report.js')}</script></body></html>\n"
    )


def write_html(document: Document, path: Path, generated_at: datetime | None = None) -> Path:
    """Write the page to `path` (report.html next to report.json) by the output rule of
    `files.write_file`; return the path. Raises `files.OutputError` naming a refused path."""
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S %Z")
    texts = read_log_lines(document, path.parent)
    write_if_changed(path, render(document, when, texts).encode("utf-8"))
    return path
