"""k3s_netpol.logscan: the fast path gives the full path's events, summaries and counts exactly."""

from __future__ import annotations

import gzip
import json
import random
import re
import shutil
import signal
import threading
from pathlib import Path

import pytest
from benchmark_modules import bench_logs

from k3s_netpol import logs, logscan
from k3s_netpol.cli import logs as cli_logs
from k3s_netpol.cli import main
from k3s_netpol.logs import (
    JOIN_WINDOW,
    Enricher,
    EventJoiner,
    ParseStats,
    load_snapshot,
    parse_logemu_line,
    summarize,
)

DATA = Path(__file__).parent / "data" / "logs"
IPV6_LINE = (
    "Nov 27 10:00:09 k3s-node-1 DROP by policy tenant-a/deny IN=cni0 OUT=cni0 SRC=fd00:42::5 "
    "DST=fd00:42::7 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=12 PROTO=TCP SPT=40000 DPT=80 SEQ=9 ACK=0 "
    "WINDOW=64800 SYN URGP=0 MARK=0"
)
ICMP_LINE = (
    "Nov 27 10:00:09 k3s-node-1  IN=cni0 OUT=cni0 SRC=10.42.1.4 DST=10.42.2.9 LEN=84 TOS=00 "
    "PREC=0x00 TTL=63 ID=7 DF PROTO=ICMP TYPE=8 CODE=0 ID=3 SEQ=1 MARK=0x0"
)


def _enricher() -> Enricher:
    return Enricher(load_snapshot([DATA / "pods.json", DATA / "policies.yaml"]))


def full_path(paths, *, window=JOIN_WINDOW, nodes=None):
    """What the CLI printed before logscan: logs.py's records, joiner, views and summary."""
    stats = ParseStats()
    enricher = _enricher()
    records = cli_logs._records_of(list(paths), stats, nodes or {})
    views = [enricher.view(event) for event in cli_logs._events(records, EventJoiner(window))]
    encode = json.JSONEncoder(separators=(", ", ": ")).encode
    lines = [encode(view.to_dict()) + "\n" for view in views]
    flows = [flow.to_dict() for flow in summarize(views, None)]
    return lines, flows, vars(stats)


def fast_path(paths, *, window=JOIN_WINDOW, nodes=None, jobs=1, chunk_bytes=None):
    enricher = _enricher()
    event_stats, summary_stats = ParseStats(), ParseStats()
    lines: list[str] = []
    entries: list = []
    for mode, stats, sink in (
        ("events", event_stats, lines.extend),
        ("summary", summary_stats, entries.extend),
    ):
        logscan.scan(
            list(paths),
            nodes or {},
            stats,
            mode,
            sink,
            enricher=enricher,
            window=window,
            jobs=jobs,
            chunk_bytes=chunk_bytes,
        )
    assert vars(event_stats) == vars(summary_stats)
    flows = [flow.to_dict() for flow in logscan.summary_flows(entries[0], enricher, None)]
    text = b"".join(lines).decode()
    return text.splitlines(keepends=True), flows, vars(event_stats)


def tricky_variants(line: str) -> list[str]:
    """Lines near the edge of what the chunk regex takes; some valid, some garbled."""
    tcp = " PROTO=TCP " in line
    return [
        line.replace(" MARK=", " MARK=7 MARK=", 1),
        line.replace(" IN=", "IN=", 1),  # prefix glued to IN=: garbled
        line.replace(" IN=", " x=y IN=", 1),  # '=' in the prefix
        line.replace(" DF ", " CE DF ", 1),
        line.replace(" DF ", " ", 1),
        line.replace(" MARK=", "  MARK=", 1),
        line.replace(" MARK=0x", " MARK=0x ", 1),  # garbled
        line.rstrip("\n") + "  \n",
        " " + line,
        "\t" + line,
        line.replace("DROP by", "DROP\tby", 1),
        line.replace(" ID=", " ID=0", 1),
        line.replace(" DPT=", " DPT=00", 1),
        line.replace(" SEQ=", " SEQ=1 SEQ=", 1) if tcp else line.replace(" LEN=4", " SEQ=5 LEN=4"),
        line.replace(" SEQ=", " SEQ=x", 1) if tcp else line.replace(" DPT=", " DPT=x", 1),
        line.replace(" PROTO=TCP ", " PROTO=UDPLITE ", 1),
        line.replace(" SPT=", " SPT=05", 1),
        line.replace("Jan  ", "Jan 0", 1).replace("Jan 1", "Jan 01", 1),
        line.replace(" MAC=", " XMAC=", 1),
        line.replace(" 00:", " 0:", 1),
        re.sub(r" SRC=[^ ]+", " SRC=999.0.0.1", line),  # garbled
        re.sub(r" DST=[^ ]+", " DST=10.42.0.256", line),  # garbled
        re.sub(r" SRC=[^ ]+", " SRC=10.042.0.1", line),  # a leading zero: valid
        re.sub(r" DST=[^ ]+", " DST=10.42.0", line),  # garbled
        re.sub(r" SRC=[^ ]+", " SRC=255.255.255.255", line),
        re.sub(r" SPT=[0-9]+", " SPT=65536", line),  # garbled
        re.sub(r" DPT=[0-9]+", " DPT=99999", line),  # garbled
        re.sub(r" DPT=[0-9]+", " DPT=100000", line),  # garbled
        re.sub(r" SPT=[0-9]+", " SPT=65535", line),
        re.sub(r" DPT=[0-9]+", " DPT=0", line),
    ]


def mixed_lines(count: int, seed: int) -> list[str]:
    """Benchmark drops, and everything the chunk regex leaves to the full parser, mixed in."""
    rng = random.Random(seed)
    lines = list(bench_logs().synthetic_lines(count, seed))
    json_lines = (DATA / "ulogd.json").read_text().splitlines(keepends=True)
    out: list[str] = []
    for index, line in enumerate(lines):
        roll = rng.random()
        if roll < 0.02:
            out.append(line[: rng.randrange(len(line) - 1)] + "\n")  # truncated: garbled
        elif roll < 0.03:
            out.append(line.replace(" SRC=", "  SRC=", 1))  # odd spacing: valid
        elif roll < 0.04:
            out.append(line.replace(" SPT=", " SPT=0", 1))  # a leading zero: valid
        elif roll < 0.05:
            out.append(line.replace("\n", "\r\n"))
        elif roll < 0.06:
            out.append(rng.choice((IPV6_LINE, ICMP_LINE)) + "\n")
        elif roll < 0.07:
            out.append(rng.choice(json_lines))
        elif roll < 0.075:
            out.append(rng.choice(("\n", "   \n", "garbage \u00e9\n", "{not json\n")))
        elif roll < 0.08:
            out.append(line.replace("DROP by policy ", "DROP by policy caf\u00e9-", 1))
        elif roll < 0.09:
            out.extend((line, line))  # the same line twice: a second pass (or two packets)
        elif roll < 0.095:
            out.append(rng.choice(tricky_variants(line)))
        elif roll < 0.10 and index + 1 < len(lines):
            out.append(lines[index + 1])  # interleaved packets
            out.append(line)
        else:
            out.append(line)
    return out


def test_the_chunk_regex_takes_a_subset_of_lines_and_reads_them_as_the_full_parser():
    taken = left = 0
    for line in bench_logs().synthetic_lines(400, seed=11):
        for variant in [line, *tricky_variants(line)]:
            text = variant.rstrip("\n")
            found = logscan._EVENT_ROW.match(text)
            if found is None:
                left += 1
                continue
            taken += 1
            record = parse_logemu_line(text)
            row = found.groups("")
            expected = logscan.row_of_record(record, "events")
            assert row[:2] + row[3:9] == expected[:2] + expected[3:9], variant
            assert set(row[9].split()) & logs.TCP_FLAG_NAMES == set(expected[9].split()), variant
            assert int(row[10], 16) == record.mark, variant
            assert logs.prefix_meaning(row[2]) == logs.prefix_meaning(record.prefix)
    assert taken > 400
    assert left > 400


@pytest.fixture(params=["c", "regex"])
def splitter(request, monkeypatch):
    """Each chunk split by the C splitter, then by the regex it stands in for."""
    if request.param == "regex":
        monkeypatch.setattr(logscan, "_logemu", None)
    else:
        assert logscan._logemu is not None, "k3s_netpol._logemu is not built"
    return request.param


def _assert_same(paths, **options):
    expected = full_path(paths, window=options.get("window", JOIN_WINDOW))
    got = fast_path(paths, **options)
    assert got[2] == expected[2], "line, record and garbled counts differ"
    assert len(got[0]) == len(expected[0])
    assert got[0] == expected[0], "--json events differ"
    assert got[1] == expected[1], "--summary flows differ"
    return expected


def test_the_shipped_logs_give_the_same_events_summary_and_counts(splitter):
    expected = _assert_same([DATA / "syslogemu.log", DATA / "ulogd.json"])
    assert len(expected[0]) == 5
    assert expected[2]["garbled"] == 3


@pytest.mark.parametrize(
    ("window", "jobs", "chunk_bytes", "slice_bytes"),
    [
        (JOIN_WINDOW, 1, None, None),  # one chunk, in process
        (16, 1, 2_000, None),  # chunks shorter than the head: the parent joins everything
        (16, 2, 40_000, None),  # workers: events cut by chunk ends, groups aged across them
        (64, 2, 9_000, None),
        (16, 2, 200_000, 7_000),  # workers read their chunks a slice at a time
        (64, 2, None, 20_000),  # --summary: one chunk a worker
    ],
)
def test_a_mixed_file_gives_the_same_results_however_it_is_chunked(
    tmp_path, monkeypatch, splitter, window, jobs, chunk_bytes, slice_bytes
):
    monkeypatch.setattr(logscan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(logscan.threading, "active_count", lambda: 1)  # fork: patches carry over
    if slice_bytes:
        monkeypatch.setattr(logscan, "SLICE_BYTES", slice_bytes)
    path = tmp_path / "syslogemu.log"
    path.write_bytes("".join(mixed_lines(4000, seed=window + jobs)).encode())
    expected = _assert_same([path], window=window, jobs=jobs, chunk_bytes=chunk_bytes)
    assert expected[2]["garbled"] > 50
    assert any('"real": false' in line for line in expected[0])
    assert any(line.count('"origins"') and '", "' in line for line in expected[0])


@pytest.mark.parametrize("spool_works", [True, False])
def test_workers_spool_json_through_a_private_directory_they_leave_empty(
    tmp_path, monkeypatch, spool_works
):
    monkeypatch.setattr(logscan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(logscan.threading, "active_count", lambda: 1)  # fork: patches carry over
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(logscan.tempfile, "tempdir", str(temp))
    if not spool_works:

        def full_disk(**kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(logscan.tempfile, "mkstemp", full_disk)
    real_unspooled = logscan._unspooled
    read_back: list[object] = []
    monkeypatch.setattr(
        logscan, "_unspooled", lambda payload: read_back.append(payload) or real_unspooled(payload)
    )
    path = tmp_path / "syslogemu.log"
    path.write_text("".join(mixed_lines(1500, seed=4)))
    assert fast_path([path], jobs=2, chunk_bytes=30_000) == full_path([path])
    assert len(read_back) > 5
    assert all(isinstance(payload, Path if spool_works else bytes) for payload in read_back)
    assert list(temp.iterdir()) == []


def test_rotated_and_gzipped_files_join_across_files(tmp_path, monkeypatch):
    monkeypatch.setattr(logscan, "PARALLEL_MIN_BYTES", 0)
    lines = mixed_lines(3000, seed=3)
    # Rotation cuts the log in the middle of a packet's lines.
    first, second, third = lines[:1001], lines[1001:2001], lines[2001:]
    with gzip.open(tmp_path / "syslogemu.log.2.gz", "wt", encoding="utf-8", newline="") as out:
        out.write("".join(first))
    (tmp_path / "syslogemu.log.1").write_text("".join(second), newline="")
    (tmp_path / "syslogemu.log").write_text("".join(third), newline="")
    paths = sorted(tmp_path.iterdir(), key=cli_logs.rotation_order)
    assert paths[0].name == "syslogemu.log.2.gz"
    for jobs, chunk_bytes in ((1, None), (2, 7_000)):
        _assert_same(paths, window=32, jobs=jobs, chunk_bytes=chunk_bytes)


def test_a_truncated_gzip_keeps_the_whole_lines_read_as_the_full_path_does(tmp_path):
    data = gzip.compress("".join(bench_logs().synthetic_lines(3000)).encode())
    path = tmp_path / "syslogemu.log.1.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    expected = _assert_same([path, DATA / "syslogemu.log"], chunk_bytes=5_000)
    assert expected[2]["garbled"] == 1 + 2  # and the two in syslogemu.log
    assert "file ends badly" in expected[2]["garbled_samples"][0]
    assert 0 < expected[2]["lines"] < 3000 + 8


@pytest.mark.parametrize("start", ["fork", "forkserver"])
def test_workers_start_and_end_with_a_sigterm_handler_and_other_threads_about(
    tmp_path, monkeypatch, start
):
    """As after `--inventory`: ansible-runner leaves a SIGTERM handler and threads behind."""
    monkeypatch.setattr(logscan, "PARALLEL_MIN_BYTES", 0)
    if start == "fork":  # as if this were the only thread
        monkeypatch.setattr(logscan.threading, "active_count", lambda: 1)
    path = tmp_path / "syslogemu.log"
    path.write_text("".join(mixed_lines(1500, seed=9)))
    stop = threading.Event()
    bystander = threading.Thread(target=stop.wait, daemon=True)
    bystander.start()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    outcome: list = []
    runner = threading.Thread(
        target=lambda: outcome.append(fast_path([path], jobs=2, chunk_bytes=20_000)),
        daemon=True,
    )
    try:
        runner.start()
        runner.join(timeout=120)
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop.set()
    assert not runner.is_alive(), "the worker pool hung"
    assert outcome[0] == full_path([path])


def test_a_lonely_group_closes_just_before_the_line_window_plus_one_after_its_first():
    pod_line = ICMP_LINE.replace(" ID=7 ", " ID={} ")
    policy_line = pod_line.replace("  IN=", " DROP by policy a/b IN=")
    window = 8
    for first in range(30):
        joiner = EventJoiner(window)
        emitted_at = None
        for position in range(100):
            line = policy_line if position == first else pod_line
            events = joiner.add(parse_logemu_line(line.format(position), str(position)))
            if any(event.origins == (str(first),) for event in events):
                assert events[0].origins == (str(first),), "it comes before the line's own"
                emitted_at = position
                break
        assert emitted_at == first + window + 1, first


def test_the_cli_takes_the_fast_path_and_prints_what_the_full_path_prints(monkeypatch):
    calls = []
    real_scan = logscan.scan

    def counting_scan(*args, **kwargs):
        calls.append(args[3])
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(cli_logs, "scan", counting_scan)
    from click.testing import CliRunner

    snapshot = ["--snapshot", str(DATA / "pods.json"), "--snapshot", str(DATA / "policies.yaml")]
    files = [str(DATA / "syslogemu.log"), str(DATA / "ulogd.json")]
    result = CliRunner().invoke(main, ["logs", *files, "--json", *snapshot])
    assert result.exit_code == 0, result.output
    lines, flows, _ = full_path([DATA / "syslogemu.log", DATA / "ulogd.json"])
    assert result.stdout == "".join(lines)
    summary = CliRunner().invoke(main, ["logs", *files, "--summary", "--json", *snapshot])
    assert [json.loads(line) for line in summary.stdout.splitlines()] == flows[:10]
    assert calls == ["events", "summary"]
    filtered = CliRunner().invoke(main, ["logs", *files, "--json", "--policy", "tenant-b/x"])
    assert filtered.exit_code == 0
    assert calls == ["events", "summary"], "a filter takes the full path"


def _rotating_on_first_chunk(monkeypatch, path: Path, how: str) -> list[str]:
    """Rotate `path` once the parent has taken the first chunk, while workers read the rest."""
    rotated: list[str] = []
    real_take = logscan._Merger.take

    def take(self, result):
        if not rotated:
            rotated.append(how)
            if how == "rename":  # logrotate's default: rename, then a new empty file
                path.rename(path.with_name(path.name + ".1"))
                path.write_bytes(b"")
            else:  # copytruncate: copy, then truncate the file in place
                shutil.copyfile(path, path.with_name(path.name + ".1"))
                with open(path, "r+b") as stream:
                    stream.truncate(0)
        return real_take(self, result)

    monkeypatch.setattr(logscan._Merger, "take", take)
    return rotated


@pytest.mark.parametrize("mode", ["summary", "events"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_file_renamed_during_a_scan_is_read_whole_through_the_one_open_file(
    tmp_path, monkeypatch, mode, jobs
):
    monkeypatch.setattr(logscan, "PARALLEL_MIN_BYTES", 0)
    path = tmp_path / "syslogemu.log"
    bench_logs().write_synthetic(path, 6000)
    expected_lines, expected_flows, expected_stats = full_path([path])
    rotated = _rotating_on_first_chunk(monkeypatch, path, "rename")
    stats = ParseStats()
    out: list = []
    logscan.scan(
        [path], {}, stats, mode, out.extend, enricher=_enricher(), jobs=jobs, chunk_bytes=50_000
    )
    assert rotated
    assert stats.lines == expected_stats["lines"] == 6000
    if mode == "events":
        assert b"".join(out).decode().splitlines(keepends=True) == expected_lines
    else:
        flows = logscan.summary_flows(out[0], _enricher(), None)
        assert [flow.to_dict() for flow in flows] == expected_flows


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_file_truncated_during_a_scan_fails_with_exit_3_naming_it(tmp_path, monkeypatch, jobs):
    monkeypatch.setattr(logscan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setitem(logscan.CHUNK_BYTES, "summary", 50_000)
    path = tmp_path / "syslogemu.log"
    bench_logs().write_synthetic(path, 6000)
    rotated = _rotating_on_first_chunk(monkeypatch, path, "copytruncate")
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["logs", str(path), "--summary", "--jobs", str(jobs)])
    assert rotated
    assert result.exit_code == 3, result.output
    assert f"{path}: shrank" in result.stderr
    assert "copytruncate" in result.stderr


def test_a_line_longer_than_a_workers_buffer_is_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(logscan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(logscan.threading, "active_count", lambda: 1)  # fork: patches carry over
    monkeypatch.setattr(logscan, "SLICE_BYTES", 4096)
    lines = mixed_lines(600, seed=5)
    lines[300] = "x" * 20_000 + "\n"  # garbled, and five buffers long
    path = tmp_path / "syslogemu.log"
    path.write_text("".join(lines))
    expected = _assert_same([path], jobs=2, chunk_bytes=60_000)
    assert any(":301: no syslog time stamp" in sample for sample in expected[2]["garbled_samples"])
