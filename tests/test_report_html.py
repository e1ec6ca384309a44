"""report.html: its structure for a recorded lab run and a 144-probe matrix; the CLI writes it."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from report_html_data import (
    LAB_RUN,
    LAB_RUN_COUNTS,
    OUTSIDER,
    XYZ_COUNTS,
    lab_run,
    xyz_report,
    xyz_run,
)

from k3s_netpol.cli import main
from k3s_netpol.model import cluster_from_documents, expect
from k3s_netpol.report_html import (
    STATUSES,
    cell_code,
    cell_status,
    read_log_lines,
    render,
    write_html,
)
from k3s_netpol.verify import cell_code as matrix_code
from k3s_netpol.verify import compare, probe_key


class Tags(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def having(self, tag: str, css_class: str | None = None) -> list[dict[str, str]]:
        return [
            attrs
            for name, attrs in self.tags
            if name == tag and (css_class is None or css_class in attrs.get("class", "").split())
        ]


def cell_counts(page: str) -> Counter[str]:
    return Counter(
        attrs["data-status"] for attrs in Tags(page).having("td") if "data-status" in attrs
    )


def section(page: str, element_id: str) -> str:
    match = re.search(rf'<section class="probe" id="{element_id}".*?</section>', page, re.S)
    assert match, element_id
    return match.group(0)


@pytest.fixture(scope="module")
def lab_page() -> str:
    return render(lab_run(), "2026-11-29 10:14:21 UTC", read_log_lines(lab_run(), LAB_RUN.parent))


@pytest.fixture(scope="module")
def xyz_page() -> str:
    report, texts = xyz_run()
    return render(report.to_dict(), "2026-11-29 10:14:21 UTC", texts)


def test_recorded_lab_run_has_one_cell_per_probe_coloured_by_outcome(lab_page: str) -> None:
    assert cell_counts(lab_page) == LAB_RUN_COUNTS
    assert sum(LAB_RUN_COUNTS.values()) == lab_run()["summary"]["probes"] == 30
    grids = Tags(lab_page).having("table", "grid")
    assert [(g["data-port"], g["data-protocol"]) for g in grids] == [
        ("80", "TCP"),
        ("8000", "TCP"),
        ("9090", "TCP"),
    ]
    assert 'id="verdict">OK<' in lab_page
    assert "k3s-netpol-lab" in lab_page  # the node, in the header and the events


def test_144_probe_matrix_shows_every_status_and_stays_small(xyz_page: str) -> None:
    assert cell_counts(xyz_page) == XYZ_COUNTS
    assert sum(XYZ_COUNTS.values()) == 144
    assert 'id="verdict">MISMATCH<' in xyz_page
    failed = Tags(xyz_page).having("td", "failed")
    assert len(failed) == xyz_report()["summary"]["failed"] == 5
    size = len(xyz_page.encode())
    print(f"report.html for 144 probes: {size / 1024:.0f} KiB")
    assert size < 500_000


def test_cells_carry_report_txt_codes() -> None:
    report, _ = xyz_run()
    page_codes = [cell_code(row.to_dict()) for row in report.rows]
    assert page_codes == [matrix_code(row) for row in report.rows]


def test_cells_carry_the_codes_of_the_recorded_report_txt(lab_page: str) -> None:
    """The recorded run's report.txt matrix, cell by cell, against the page's cells."""
    text_codes: dict[tuple[str, str, int], str] = {}
    port = 0
    pods: list[str] = []
    for line in (LAB_RUN.parent / "report.txt").read_text().splitlines():
        if match := re.fullmatch(r"port (\d+)/TCP", line):
            port = int(match.group(1))
        elif match := re.fullmatch(r" +(\d+) +(\S+/\S+)((?: +\S+)+)", line):
            source = match.group(2)
            if source not in pods:
                pods.append(source)
            for column, code in enumerate(match.group(3).split()):
                if code != ".":
                    text_codes[(source, str(column), port)] = code
    page_codes = {
        (row["from"], str(pods.index(row["to"])), row["port"]): cell_code(row)
        for row in lab_run()["rows"]
    }
    assert page_codes == text_codes
    assert len(text_codes) == 30
    assert sorted(
        re.findall(r'<a href="#probe-\d+" title="[^"]*">([A-Z?*f-]+)</a>', lab_page)
    ) == sorted(text_codes.values())


def test_cells_are_grouped_by_namespace(xyz_page: str) -> None:
    namespace_heads = [a for a in Tags(xyz_page).having("th", "ns") if "colspan" in a]
    assert [a["colspan"] for a in namespace_heads] == ["3", "3", "3"] * 2
    assert xyz_page.count("<tbody>") == 2 * 3 + 1  # one per source namespace, and the events


def test_every_cell_opens_its_details(xyz_page: str) -> None:
    cells = re.findall(r'<td class="c [^"]*"[^>]*><a href="#(probe-\d+)"', xyz_page)
    sections = [a["id"] for a in Tags(xyz_page).having("section", "probe")]
    assert len(cells) == len(sections) == 144
    assert set(cells) == set(sections)
    for element_id in sections:
        details = section(xyz_page, element_id)
        assert "<dt>expected</dt>" in details
        assert "<dt>observed</dt>" in details
        assert "<dt>policy lines from</dt>" in details


def test_blocked_cell_details_show_the_log_lines_and_their_node(lab_page: str) -> None:
    document = lab_run()
    index, row = next(
        (i, r) for i, r in enumerate(document["rows"]) if cell_status(r).key == "blocked-logged"
    )
    details = section(lab_page, f"probe-{index}")
    pattern = (
        rf"k3s-netpol-lab +IN=cni0 OUT=cni0 .*SRC={row['source_ip']} DST={row['destination_ip']}"
    )
    assert re.search(pattern, details), details  # the unprefixed pod-chain line, as logged
    assert "node <b>k3s-netpol-lab</b>" in details
    assert "real drop" in details
    for policy in row["policies"]:
        assert policy in details


def test_false_drop_details_show_the_policy_lines(lab_page: str) -> None:
    document = lab_run()
    index, row = next(
        (i, r) for i, r in enumerate(document["rows"]) if cell_status(r).key == "false-drop"
    )
    details = section(lab_page, f"probe-{index}")
    assert f"DROP by policy {row['policies'][0]}" in details
    assert "false drop (policy lines only)" in details


def test_legend_names_every_status_with_its_count(xyz_page: str) -> None:
    legend = re.search(r'<section class="legend".*?</section>', xyz_page, re.S)
    assert legend
    for status in STATUSES:
        if status.key == "rate-limited":
            assert 'data-status="rate-limited"' not in legend.group(0)
            continue
        assert f'<li data-status="{status.key}">' in legend.group(0)
        assert f"<b>{status.label}</b> ({XYZ_COUNTS[status.key]})" in legend.group(0)
    assert "expected, observed (A allowed, B blocked" in legend.group(0)


def test_events_table_lists_every_event_real_or_false_with_filters(xyz_page: str) -> None:
    document = xyz_report()
    rows = [a for a in Tags(xyz_page).having("tr") if a.get("id", "").startswith("event-")]
    assert len(rows) == len(document["events"]) == 84
    assert Counter(a["data-kind"] for a in rows) == Counter(
        "real" if event["real"] else "false" for event in document["events"]
    )
    assert {a["id"] for a in Tags(xyz_page).having("select")} == {
        "f-ns",
        "f-pod",
        "f-policy",
        "f-kind",
    }
    namespaces = re.search(r'<select id="f-ns".*?</select>', xyz_page, re.S)
    assert namespaces
    assert re.findall(r'<option value="(\w*)">', namespaces.group(0)) == ["", "x", "y", "z"]
    assert '<option value="y/allow-x-on-80">' in xyz_page
    outsider = next(a for a in rows if OUTSIDER in a["data-pods"])
    assert outsider["data-kind"] == "real"
    assert re.search(rf"<td>{OUTSIDER}</td><td>x/a</td>.*?<td>unexplained</td>", xyz_page)


def test_page_needs_no_network(xyz_page: str, lab_page: str) -> None:
    for page in (xyz_page, lab_page):
        assert "http://" not in page
        assert "https://" not in page
        references = [
            value
            for _, attrs in Tags(page).tags
            for name, value in attrs.items()
            if name in ("src", "href", "action", "srcset", "poster", "data")
        ]
        assert references
        assert all(value.startswith("#") for value in references), references
        assert "@import" not in page
        assert "url(" not in page


def test_log_text_is_escaped() -> None:
    document = lab_run()
    origin = document["events"][0]["lines"][0]
    page = render(document, None, {origin: "<script>alert(1)</script> & more"})
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page


def test_fields_the_page_does_not_know_are_shown() -> None:
    """The report grows (evidence kinds, deciding nodes, rate-limited rows, passes): new fields
    are rendered as they are, and a row naming the rate-limited status gets that colour."""
    document = lab_run()
    blocked = [i for i, r in enumerate(document["rows"]) if r["expected"] == "blocked"]
    document["rows"][blocked[0]].update(
        status="rate-limited", evidence="policy-lines", blocking_node="node-b", logged=False
    )
    document["rows"][blocked[1]]["evidence"] = "pod-chain"
    document["events"][0]["passes"] = 2
    document["summary"]["rate_limited"] = 1
    document["seed"] = 1234
    page = render(document)
    counts = cell_counts(page)
    assert counts["rate-limited"] == 1
    assert counts["blocked-logged"] == LAB_RUN_COUNTS["blocked-logged"] - 1
    assert '<li data-status="rate-limited">' in page
    details = section(page, f"probe-{blocked[0]}")
    assert "<dt>evidence</dt><dd>policy-lines</dd>" in details
    assert "<dt>blocking node</dt><dd>node-b</dd>" in details
    assert "<dt>evidence</dt><dd>pod-chain</dd>" in section(page, f"probe-{blocked[1]}")
    assert "<th>passes</th>" in page
    assert 'data-count="rate_limited"><b>1</b> rate limited' in page
    assert "<dt>seed</dt><dd>1234</dd>" in page
    assert "node-b" in page.split("<main>")[0]  # the header's node list


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"rows": []},
        {"ok": False, "rows": [{"from": "a/b", "to": "a/c", "port": 80, "protocol": "TCP"}]},
        {"rows": "garbage", "events": [None, 3], "summary": [], "notes": "x"},
    ],
)
def test_sparse_documents_still_render(document: dict[str, object]) -> None:
    page = render(document)
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")


def test_missing_log_files_leave_the_line_references(tmp_path: Path) -> None:
    document = lab_run(tmp_path / "gone")
    page = write_html(document, tmp_path / "report.html").read_text()
    first = document["events"][0]["lines"][0]
    assert first.startswith(f"{tmp_path}/gone/")
    assert f'<span class="origin">{first}</span>' in page
    assert "IN=cni0" not in page


# --- the CLI --------------------------------------------------------------------------------


def line_numbers(event: dict[str, object]) -> dict[str, object]:
    """The event with its lines as numbers only (their file's path differs between runs)."""
    lines = event["lines"]
    assert isinstance(lines, list)
    return {**event, "lines": [int(line.rpartition(":")[2]) for line in lines]}


def test_report_writes_report_html_next_to_report_json(tmp_path: Path) -> None:
    recorded = LAB_RUN.parent
    observed = tmp_path / "observed.jsonl"
    observed.write_text(
        "".join(
            json.dumps(
                {
                    "from": row["from"],
                    "to": row["to"],
                    "port": row["port"],
                    "protocol": row["protocol"],
                    "connected": row["observed"] == "allowed",
                }
            )
            + "\n"
            for row in lab_run()["rows"]
        )
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "report",
            "--expected",
            str(recorded / "lab.json"),
            "--observed",
            str(observed),
            "--log",
            f"k3s-netpol-lab={recorded / 'logs' / 'k3s-netpol-lab.log'}",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"and {out / 'report.html'}" in result.output
    page = (out / "report.html").read_text()
    assert cell_counts(page) == LAB_RUN_COUNTS
    written = json.loads((out / "report.json").read_text())["events"]
    assert [line_numbers(event) for event in written] == [
        line_numbers(event) for event in lab_run()["events"]
    ]
    assert re.search(r"k3s-netpol-lab +IN=cni0 OUT=cni0", page)


def test_html_only_rewrites_the_page_from_report_json(tmp_path: Path) -> None:
    """The events' lines are read from OUT/logs/ when the path they name is gone."""
    shutil.copytree(LAB_RUN.parent, tmp_path, dirs_exist_ok=True)
    (tmp_path / "report.json").write_text(json.dumps(lab_run(tmp_path / "gone")))
    result = CliRunner().invoke(main, ["report", "--html-only", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {tmp_path / 'report.html'}\n"
    page = (tmp_path / "report.html").read_text()
    assert cell_counts(page) == LAB_RUN_COUNTS
    assert re.search(r"k3s-netpol-lab +IN=cni0 OUT=cni0", page)  # found under logs/


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "report.json: cannot read: No such file or directory"),
        ("{not json", "report.json: not JSON"),
        ('{"ok": true}', "report.json: rows: missing"),
    ],
)
def test_html_only_with_a_bad_report_json_exits_2(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "report.json").write_text(content)
    result = CliRunner().invoke(main, ["report", "--html-only", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "report.html").exists()


def test_open_launches_the_written_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(LAB_RUN.parent, tmp_path, dirs_exist_ok=True)
    opened: list[str] = []
    monkeypatch.setattr("click.launch", lambda url, **_: opened.append(url) or 0)
    result = CliRunner().invoke(main, ["report", "--html-only", "--open", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert opened == [str(tmp_path / "report.html")]


def test_html_only_refuses_the_inputs_it_would_ignore(tmp_path: Path) -> None:
    shutil.copytree(LAB_RUN.parent, tmp_path, dirs_exist_ok=True)
    result = CliRunner().invoke(
        main,
        ["report", "--html-only", "--expected", str(tmp_path / "lab.json"), "--out", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "--html-only reads only OUT/report.json; drop --expected" in result.output
    assert not (tmp_path / "report.html").exists()


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_a_report_html_that_is_not_a_regular_file_is_left_alone(tmp_path: Path, kind: str) -> None:
    shutil.copytree(LAB_RUN.parent, tmp_path, dirs_exist_ok=True)
    target = tmp_path / "report.html"
    elsewhere = tmp_path / "elsewhere.html"
    elsewhere.write_text("keep")
    if kind == "directory":
        target.mkdir()
    else:
        target.symlink_to(elsewhere)
    result = CliRunner().invoke(main, ["report", "--html-only", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{target}: " in result.output
    assert "refus" in result.output
    assert "Traceback" not in result.output
    assert elsewhere.read_text() == "keep"
    assert target.is_dir() if kind == "directory" else target.is_symlink()


DECIDING_CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {kubernetes.io/metadata.name: shop}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIP: 10.42.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIP: 10.42.0.11}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-nobody, namespace: shop}
spec: {podSelector: {matchLabels: {app: db}}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: db}}}]}]
"""


def test_cell_details_name_the_policies_that_decide() -> None:
    """Each cell's details carry the model's decision, as verify wrote it into the row."""
    cluster = cluster_from_documents(list(yaml.safe_load_all(DECIDING_CLUSTER)), "cluster")
    probes = expect(cluster, ports=[(80, "TCP")])
    observed = {probe_key(p.source, p.destination, p.port, p.protocol): p.allowed for p in probes}
    ips = {pod.key: pod.ip or "" for pod in cluster.pods}
    report = compare(probes, observed, [], ips, {}, cluster=cluster)
    page = render(report.to_dict(), "2026-11-29 12:00:00 UTC", {})
    rows = report.to_dict()["rows"]
    blocked = rows.index(next(r for r in rows if r["from"] == "shop/web" and r["to"] == "shop/db"))
    allowed = rows.index(next(r for r in rows if r["from"] == "shop/db" and r["to"] == "shop/web"))
    assert "ingress of shop/db: selected by shop/db-from-nobody; no rule admits it: blocked" in (
        section(page, f"probe-{blocked}")
    )
    assert "egress of shop/web: no policy selects it, open" in section(page, f"probe-{blocked}")
    assert (
        "ingress of shop/web: selected by shop/web-from-db; allowed by shop/web-from-db (rule 0)"
        in (section(page, f"probe-{allowed}"))
    )
