"""k3s_netpol.logs: LOGEMU/JSON parsing, per-packet joining, enrichment, filters, follow."""

from __future__ import annotations

import gzip
import os
import shutil
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import IO

import pytest
from benchmark_modules import bench_logs

from k3s_netpol import logs
from k3s_netpol.logs import (
    Enricher,
    EventFilter,
    LogParseError,
    drop_events,
    parse_json_line,
    parse_logemu_line,
    parse_time_bound,
    read_records,
    rotation_order,
    summarize,
)

DATA = Path(__file__).parent / "data" / "logs"
SEED_LINE = (
    "Mar  7 09:35:43 cluster-k3s-masters-a3620efa-5qgpt  IN=cni0 OUT=cni0 "
    "MAC=da:f6:6e:6e:f9:ce:ae:66:8d:d5:f8:d1:08:00 SRC=10.42.0.59 DST=10.42.0.60 LEN=60 TOS=00 "
    "PREC=0x00 TTL=64 ID=50378 DF PROTO=TCP SPT=47750 DPT=80 SEQ=3773744693 ACK=0 WINDOW=62377 "
    "SYN URGP=0 MARK=20000"
)


def test_the_tutorial_line_parses_field_by_field():
    record = parse_logemu_line(SEED_LINE, "seed:1")
    assert record.time == "Mar  7 09:35:43"
    assert record.node == "cluster-k3s-masters-a3620efa-5qgpt"
    assert (record.prefix, record.policy) == ("", None)
    assert (record.in_interface, record.out_interface) == ("cni0", "cni0")
    assert (record.source, record.destination, record.protocol) == (
        "10.42.0.59",
        "10.42.0.60",
        "TCP",
    )
    assert (record.source_port, record.destination_port) == (47750, 80)
    assert (record.ip_id, record.tcp_seq) == (50378, 3773744693)
    assert record.flags == frozenset({"SYN"})
    assert record.mark == 0x20000
    assert record.origin == "seed:1"


def test_both_mark_spellings_mean_the_same_hex_value():
    plain = parse_logemu_line(SEED_LINE)
    with_0x = parse_logemu_line(SEED_LINE.replace("MARK=20000", "MARK=0x20000"))
    assert plain.mark == with_0x.mark == 0x20000


def test_a_prefix_with_spaces_names_the_policy():
    line = SEED_LINE.replace("  IN=", " DROP by policy tenant-b/deny-by-default IN=")
    record = parse_logemu_line(line)
    assert record.prefix == "DROP by policy tenant-b/deny-by-default"
    assert record.policy == "tenant-b/deny-by-default"


def test_a_foreign_prefix_is_kept_but_names_no_policy():
    record = parse_logemu_line(SEED_LINE.replace("  IN=", " my audit rule IN="))
    assert (record.prefix, record.policy) == ("my audit rule", None)


def test_udp_and_icmp_lines():
    udp = parse_logemu_line(
        "Nov 27 10:05:00 n1  IN=cni0 OUT=cni0 MAC= SRC=10.42.1.10 DST=10.42.0.20 LEN=56 TOS=00 "
        "PREC=0x00 TTL=63 ID=777 PROTO=UDP SPT=40000 DPT=53 LEN=36 MARK=0x0"
    )
    assert (udp.protocol, udp.source_port, udp.destination_port, udp.ip_id) == (
        "UDP",
        40000,
        53,
        777,
    )
    assert (udp.tcp_seq, udp.flags) == (None, frozenset())
    icmp = parse_logemu_line(
        "Nov 27 10:05:00 n1  IN=cni0 OUT=cni0 MAC= SRC=10.42.1.10 DST=10.42.0.20 LEN=84 TOS=00 "
        "PREC=0x00 TTL=63 ID=9 DF PROTO=ICMP TYPE=8 CODE=0 ID=42 SEQ=1 MARK=0x0"
    )
    assert (icmp.protocol, icmp.ip_id, icmp.tcp_seq, icmp.destination_port) == (
        "ICMP",
        9,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "time stamp"),
        ("garbage", "time stamp"),
        (SEED_LINE[:120], "DST="),
        (SEED_LINE.replace(" MARK=20000", ""), "MARK="),
        (SEED_LINE.replace("SRC=10.42.0.59", "SRC=not-an-ip"), "order"),
        (SEED_LINE.replace("Mar  7", "Foo  7"), "time stamp"),
        (SEED_LINE.replace("SRC=10.42.0.59", "SRC=999.0.0.1"), "SRC='999.0.0.1' is not an IP"),
        (SEED_LINE.replace("DST=10.42.0.60", "DST=10.42.0"), "DST='10.42.0' is not an IP"),
        (SEED_LINE.replace("DST=10.42.0.60", "DST=fd00:::1"), "DST='fd00:::1' is not an IP"),
        (SEED_LINE.replace("SPT=47750", "SPT=65536"), "SPT=65536 is not a port"),
        (SEED_LINE.replace("DPT=80", "DPT=99999"), "DPT=99999 is not a port"),
    ],
)
def test_garbled_and_truncated_lines_raise_a_parse_error_saying_why(line, reason):
    with pytest.raises(LogParseError, match=reason):
        parse_logemu_line(line)


def test_json_lines_carry_the_same_packet_as_logemu():
    first, second = (DATA / "ulogd.json").read_text().splitlines()[:2]
    policy_line = parse_json_line(first, "j:1", node="k3s-server-1")
    pod_line = parse_json_line(second, "j:2", node="k3s-server-1")
    assert policy_line.policy == "tenant-b/deny-by-default"
    assert pod_line.prefix == ""
    logemu = parse_logemu_line((DATA / "syslogemu.log").read_text().splitlines()[2])
    assert pod_line.packet_key == logemu.packet_key
    assert pod_line.flags == frozenset({"SYN"})
    assert (pod_line.in_interface, pod_line.mark) == ("cni0", 0)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"timestamp": "2026', "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"src_ip": "10.0.0.1", "dest_ip": "10.0.0.2"}', "ip.protocol"),
        ('{"ip.protocol": 6, "src_ip": "x", "dest_ip": "10.0.0.2"}', "src_ip"),
        ('{"ip.protocol": "six", "src_ip": "10.0.0.1", "dest_ip": "10.0.0.2"}', "ip.protocol"),
        (
            '{"ip.protocol": 6, "src_ip": "10.0.0.1", "dest_ip": "10.0.0.2", "dest_port": 70000}',
            "dest_port: 70000 is not a port",
        ),
        (
            '{"ip.protocol": 6, "src_ip": "10.0.0.1", "dest_ip": "10.0.0.2", "hostname": "a\\nb"}',
            "hostname: 'a.nb' holds a control character",
        ),
    ],
)
def test_bad_json_lines_raise_a_parse_error_naming_the_field(line, reason):
    with pytest.raises(LogParseError, match=reason):
        parse_json_line(line)


def test_read_records_counts_garbled_lines_and_never_crashes():
    records, stats = read_records([DATA / "syslogemu.log", DATA / "ulogd.json"])
    assert stats.lines == 11
    assert stats.garbled == 3
    assert len(records) == stats.records == 8
    assert any("syslogemu.log:6" in sample for sample in stats.garbled_samples)
    assert any("ulogd.json:3" in sample for sample in stats.garbled_samples)
    assert records[0].origin.endswith("syslogemu.log:1")


def test_rotated_and_gzipped_files_read_in_the_order_they_were_written(tmp_path):
    text = (DATA / "syslogemu.log").read_bytes()
    (tmp_path / "syslogemu.log").write_bytes(text)
    shutil.copy(DATA / "syslogemu.log", tmp_path / "syslogemu.log.1")
    with gzip.open(tmp_path / "syslogemu.log.2.gz", "wb") as packed:
        packed.write(text)
    names = sorted(tmp_path.iterdir())
    ordered = sorted(names, key=rotation_order)
    assert [path.name for path in ordered] == [
        "syslogemu.log.2.gz",
        "syslogemu.log.1",
        "syslogemu.log",
    ]
    records, stats = read_records(ordered)
    assert stats.records == 3 * 6
    assert stats.garbled == 3 * 2
    assert records[0].origin == f"{tmp_path / 'syslogemu.log.2.gz'}:1"


def test_a_truncated_gzip_keeps_what_was_read_and_reports_it(tmp_path):
    packed = gzip.compress((DATA / "syslogemu.log").read_bytes() * 50)
    broken = tmp_path / "syslogemu.log.3.gz"
    broken.write_bytes(packed[: len(packed) // 2])
    records, stats = read_records([broken])
    assert records
    assert any("file ends badly" in sample for sample in stats.garbled_samples)


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(logs.LogFileError, match=r"nope\.log"):
        read_records([tmp_path / "nope.log"])


def test_lines_of_one_packet_join_into_one_event_and_real_means_the_pod_chain_line():
    records, _ = read_records([DATA / "syslogemu.log"])
    events = drop_events(records)
    assert [len(event.records) for event in events] == [3, 1, 1, 1]
    blocked, false_drop, retry, udp = events
    assert blocked.policies == ("tenant-b/deny-by-default", "tenant-b/allow-monitoring")
    assert blocked.real
    assert blocked.policy == "tenant-b/deny-by-default"
    assert (blocked.source, blocked.destination, blocked.destination_port) == (
        "10.42.1.10",
        "10.42.0.20",
        80,
    )
    assert not false_drop.real
    assert false_drop.policies == ("tenant-b/deny-by-default",)
    assert retry.real
    assert retry.policies == ()
    assert retry.ip_id == 50379
    assert udp.real
    assert udp.protocol == "UDP"


def test_a_repeated_policy_line_is_the_same_packet_passing_again():
    """A bridged packet another policy allows passes the pod chain twice: same lines twice."""
    line = SEED_LINE.replace("  IN=", " DROP by policy a/p IN=")
    other = SEED_LINE.replace("  IN=", " DROP by policy a/q IN=")
    records = [parse_logemu_line(text, f"f:{n}") for n, text in enumerate([line, line], 1)]
    [event] = drop_events(records)
    assert (event.origins, event.passes, event.policies) == (("f:1", "f:2"), 2, ("a/p",))
    assert not event.real
    assert event.to_dict()["passes"] == 2
    texts = [line, other, line, other, SEED_LINE]
    records = [parse_logemu_line(text, f"f:{n}") for n, text in enumerate(texts, 1)]
    [event] = drop_events(records)
    assert (event.passes, event.policies, event.real) == (2, ("a/p", "a/q"), True)
    assert len(event.records) == 5
    assert event.node == "cluster-k3s-masters-a3620efa-5qgpt"


def test_a_retransmitted_syn_is_another_packet():
    line = SEED_LINE.replace("  IN=", " DROP by policy a/p IN=")
    texts = [
        line,
        SEED_LINE,
        line.replace("ID=50378", "ID=50400"),
        SEED_LINE.replace("ID=50378", "ID=50400"),
    ]
    events = drop_events(parse_logemu_line(text, f"f:{n}") for n, text in enumerate(texts, 1))
    assert [(event.origins, event.passes) for event in events] == [
        (("f:1", "f:2"), 1),
        (("f:3", "f:4"), 1),
    ]


def test_interleaved_packets_still_join_by_key():
    one = SEED_LINE.replace("  IN=", " DROP by policy a/p IN=")
    other = one.replace("ID=50378", "ID=1")
    lines = [one, other, SEED_LINE, SEED_LINE.replace("ID=50378", "ID=1")]
    events = drop_events(parse_logemu_line(line, f"f:{n}") for n, line in enumerate(lines, 1))
    assert [event.origins for event in events] == [("f:1", "f:3"), ("f:2", "f:4")]
    assert all(event.real for event in events)


def test_a_group_whose_pod_chain_line_never_comes_closes_after_the_window():
    lonely = parse_logemu_line(SEED_LINE.replace("  IN=", " DROP by policy a/p IN="), "f:1")
    late = parse_logemu_line(SEED_LINE, "f:99")
    filler = [parse_logemu_line(SEED_LINE.replace("ID=50378", f"ID={n}"), "f:x") for n in range(10)]
    events = drop_events([lonely, *filler, late], window=5)
    assert events[0].origins == ("f:1",)
    assert not events[0].real
    assert events[-1].origins == ("f:99",)
    assert events[-1].real


def _enricher():
    return Enricher(logs.load_snapshot([DATA / "pods.json", DATA / "policies.yaml"]))


def test_enrichment_names_pods_and_flags_what_the_model_allows():
    records, _ = read_records([DATA / "syslogemu.log"])
    views = [_enricher().view(event) for event in drop_events(records)]
    blocked, false_drop = views[0], views[1]
    assert (blocked.source_pod, blocked.destination_pod) == ("tenant-a/client", "tenant-b/web")
    assert blocked.expected == "denied"
    assert not blocked.flagged
    assert blocked.verdict == "drop"
    assert false_drop.source_pod == "monitoring/prometheus"
    assert false_drop.expected == "allowed"
    assert false_drop.flagged
    assert false_drop.verdict == "false drop"
    document = false_drop.to_dict()
    assert document["flagged"] is True
    assert document["policy"] == "tenant-b/deny-by-default"


def test_without_policies_there_is_no_expectation():
    enricher = Enricher(logs.load_snapshot([DATA / "pods.json"]))
    records, _ = read_records([DATA / "syslogemu.log"])
    view = enricher.view(drop_events(records)[0])
    assert view.destination_pod == "tenant-b/web"
    assert view.expected is None


def test_filters_by_namespace_pod_policy_and_time():
    records, _ = read_records([DATA / "syslogemu.log"])
    views = [_enricher().view(event) for event in drop_events(records)]

    def kept(**criteria):
        return [index for index, view in enumerate(views) if EventFilter(**criteria).accepts(view)]

    assert kept(namespace="monitoring") == [1]
    assert kept(pod="tenant-a/client") == [0, 2, 3]
    assert kept(policy="tenant-b/allow-monitoring") == [0]
    now = datetime(2026, 11, 27, 12, 0)
    assert kept(since=parse_time_bound("10:04", now)) == [3]
    assert kept(until=parse_time_bound("2026-11-27T10:00:01", now)) == [0]


def test_a_policy_cut_to_48_characters_matches_the_full_name():
    full = "a-very-long-namespace-name/" + "p" * 40
    assert logs.policy_matches(full, full[:48])
    assert not logs.policy_matches(full, full[:20])


def test_time_bounds_accept_iso_clock_and_relative_forms():
    now = datetime(2026, 11, 27, 12, 0, 0)
    assert parse_time_bound("2h", now) == datetime(2026, 11, 27, 10, 0, 0)
    assert parse_time_bound("09:30", now) == datetime(2026, 11, 27, 9, 30)
    assert parse_time_bound("2026-11-27T08:00:00", now) == datetime(2026, 11, 27, 8, 0)
    with pytest.raises(ValueError, match="yesterday"):
        parse_time_bound("yesterday", now)


def test_logemu_stamps_get_the_year_that_keeps_them_in_the_past():
    record = parse_logemu_line(SEED_LINE.replace("Mar  7", "Dec 31"))
    moment = logs.record_datetime(record, now=datetime(2027, 1, 1, 0, 5))
    assert moment == datetime(2026, 12, 31, 9, 35, 43)


def test_json_iso_stamps_become_local_time():
    record = parse_json_line((DATA / "ulogd.json").read_text().splitlines()[0])
    moment = logs.record_datetime(record)
    expected = datetime.fromisoformat("2026-11-27T10:00:01.123456+00:00").astimezone()
    assert moment == expected.replace(tzinfo=None)


def test_summary_ranks_flows_by_events_and_counts_false_drops():
    records, _ = read_records([DATA / "syslogemu.log"])
    views = [_enricher().view(event) for event in drop_events(records)]
    flows = summarize(views)
    assert (flows[0].source, flows[0].destination, flows[0].events, flows[0].real) == (
        "tenant-a/client",
        "tenant-b/web",
        2,
        2,
    )
    false_flow = next(flow for flow in flows if flow.source == "monitoring/prometheus")
    assert (false_flow.events, false_flow.real, false_flow.flagged) == (1, 0, 1)
    assert len(summarize(views, top=1)) == 1


def test_follow_reads_appended_lines_across_rotation(tmp_path):
    path = tmp_path / "syslogemu.log"
    path.write_text("")
    stats = logs.ParseStats()
    stop = threading.Event()
    seen: list[str] = []
    lines = (DATA / "syslogemu.log").read_text().splitlines(keepends=True)

    def consume():
        for record in logs.follow_records(
            [path], stats, from_start=True, poll_interval=0.02, should_stop=stop.is_set
        ):
            if record is not None:
                seen.append(record.origin)

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        with open(path, "a") as out:
            out.write(lines[0])
            out.write(lines[1][:40])
            out.flush()
            _wait_for(lambda: len(seen) == 1)
            out.write(lines[1][40:])
        _wait_for(lambda: len(seen) == 2)
        path.rename(tmp_path / "syslogemu.log.1")
        path.write_text(lines[2])
        _wait_for(lambda: len(seen) == 3)
    finally:
        stop.set()
        reader.join(timeout=5)
    assert seen == [f"{path}:1", f"{path}:2", f"{path}:1"]


def _wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


def test_the_benchmark_data_parses_without_garbled_lines_and_joins(tmp_path):
    path = tmp_path / "syslogemu.log"
    bench_logs().write_synthetic(path, 3000)
    records, stats = read_records([path])
    assert (stats.lines, stats.garbled) == (3000, 0)
    events = drop_events(records)
    assert sum(len(event.records) for event in events) == 3000
    real = sum(event.real for event in events)
    assert 0.5 * len(events) < real < 0.9 * len(events), "real and false drops"
    assert any(event.passes == 2 for event in events), "bridged false drops pass twice"
    assert {event.protocol for event in events} == {"TCP", "UDP"}
    assert {record.mark for record in records} == {0, 0x20000}
    text = path.read_text()
    assert " MARK=20000" in text
    assert " MARK=0x20000" in text
    retransmitted = Counter((event.source_port, event.tcp_seq) for event in events if event.real)
    assert max(retransmitted.values()) > 1, "a blocked SYN is sent again with a new IP ID"


def test_a_file_truncated_while_the_full_path_reads_it_is_an_error_naming_it(tmp_path):
    path = tmp_path / "syslogemu.log"
    bench_logs().write_synthetic(path, 2000)
    stats = logs.ParseStats()
    records = logs.iter_file_records(path, stats)
    next(records)
    with open(path, "r+b") as stream:
        stream.truncate(0)
    with pytest.raises(logs.LogChangedError, match=r"syslogemu\.log: shrank from \d+ bytes to 0"):
        list(records)


def test_read_records_takes_one_path_as_one_path():
    records, stats = read_records(str(DATA / "syslogemu.log"))
    assert (len(records), stats.files) == (6, [str(DATA / "syslogemu.log")])
    assert read_records(DATA / "syslogemu.log")[0] == records


def test_a_gz_that_is_not_gzip_is_an_error_naming_it(tmp_path):
    path = tmp_path / "syslogemu.log.1.gz"
    path.write_bytes((DATA / "syslogemu.log").read_bytes())
    with pytest.raises(logs.LogFileError, match=r"syslogemu\.log\.1\.gz: not a gzip file"):
        read_records([path])


def _numbered(start: int, count: int) -> list[str]:
    """Pod-chain lines whose IP IDs count up from `start`."""
    return [
        SEED_LINE.replace("ID=50378", f"ID={number}") + "\n"
        for number in range(start, start + count)
    ]


def _renamed(out: IO[str], path: Path) -> bool:
    return os.fstat(out.fileno()).st_ino != path.stat().st_ino


def _ids(lines: list[tuple[str, str]]) -> list[int]:
    return [parse_logemu_line(line).ip_id or 0 for _, line in lines]


def test_follow_reads_a_gz_once_and_does_not_follow_it(tmp_path):
    packed = tmp_path / "syslogemu.log.1.gz"
    with gzip.open(packed, "wt") as out:
        out.writelines(_numbered(1, 5))
    stats = logs.ParseStats()
    polls = 0

    def stop() -> bool:
        nonlocal polls
        polls += 1
        return polls > 6

    records = list(logs.follow_records([packed], stats, poll_interval=0.001, should_stop=stop))
    assert [record.ip_id for record in records if record is not None] == [1, 2, 3, 4, 5]


def test_follow_reads_past_copytruncate_when_the_file_grew_past_the_old_offset(tmp_path):
    path = tmp_path / "syslogemu.log"
    path.write_text("".join(_numbered(1, 10)))
    followed = logs._FollowedFile(path, from_start=True)
    try:
        assert _ids(followed.read_lines()) == list(range(1, 11))
        with open(path, "a") as out:
            out.writelines(_numbered(11, 5))  # written, not read yet
        shutil.copyfile(path, tmp_path / "syslogemu.log.1")  # logrotate copytruncate
        with open(path, "r+") as out:
            out.truncate(0)
        with open(path, "a") as out:
            out.writelines(_numbered(100, 30))  # past the old offset within one poll
        lines = followed.read_lines()
        assert _ids(lines) == [*range(11, 16), *range(100, 130)]
        assert lines[0][0] == f"{tmp_path / 'syslogemu.log.1'}:11"
        assert lines[5][0] == f"{path}:1"
        with open(path, "a") as out:
            out.writelines(_numbered(200, 2))
        assert _ids(followed.read_lines()) == [200, 201]
    finally:
        followed.close()


def test_follow_reads_a_renamed_file_to_its_end_while_its_writer_still_writes_to_it(tmp_path):
    path = tmp_path / "syslogemu.log"
    path.write_text("".join(_numbered(1, 3)))
    followed = logs._FollowedFile(path, from_start=True)
    try:
        assert _ids(followed.read_lines()) == [1, 2, 3]
        writer = open(path, "a")  # noqa: SIM115 - as ulogd2 holds it
        writer.writelines(_numbered(4, 2))
        writer.flush()
        path.rename(tmp_path / "syslogemu.log.1")
        path.write_text("".join(_numbered(50, 2)))
        writer.writelines(_numbered(6, 2))  # before ulogd2 reopens the path on SIGHUP
        writer.flush()
        assert sorted(_ids(followed.read_lines())) == [4, 5, 6, 7, 50, 51]
        writer.write(_numbered(8, 1)[0])
        writer.close()
        assert _ids(followed.read_lines()) == [8]
        for _ in range(logs.RETIRED_QUIET_POLLS):
            followed.read_lines()
        assert followed.retired == []
    finally:
        followed.close()


@pytest.mark.parametrize("how", ["rename", "copytruncate"])
def test_follow_under_load_across_rotations_sees_every_line_once(tmp_path, how):
    """A writer appends numbered lines while the file is rotated five times: after a rename
    the writer goes on writing to the renamed file for a while (as ulogd2 until its SIGHUP);
    after a copytruncate the file at once grows past where the reader was."""
    path = tmp_path / "syslogemu.log"
    path.write_text("")
    total = 10000
    stats = logs.ParseStats()
    stop = threading.Event()
    seen: list[int] = []
    lock = threading.Lock()
    state = {"written": 0, "out": open(path, "a")}  # noqa: SIM115

    def write_next() -> None:
        state["written"] += 1
        state["out"].write(_numbered(state["written"], 1)[0])
        state["out"].flush()

    def write():
        reopen_at = None
        while state["written"] < total:
            with lock:
                if how == "rename" and reopen_at is None and _renamed(state["out"], path):
                    reopen_at = time.monotonic() + 0.05
                if reopen_at is not None and time.monotonic() >= reopen_at:
                    state["out"].close()
                    state["out"] = open(path, "a")  # noqa: SIM115
                    reopen_at = None
                if state["written"] < total:
                    write_next()
            time.sleep(0.0002 if reopen_at is not None else 0)

    def rotate():
        for index in range(1, 6):
            time.sleep(0.15)
            with lock:
                size = path.stat().st_size
                rotated = tmp_path / f"syslogemu.log.{index}"
                if how == "rename":
                    path.rename(rotated)
                    path.write_text("")  # logrotate's `create`
                    continue
                shutil.copyfile(path, rotated)
                with open(path, "r+") as out:
                    out.truncate(0)
                while path.stat().st_size <= size and state["written"] < total:
                    write_next()

    def consume():
        for record in logs.follow_records(
            [path], stats, from_start=True, poll_interval=0.005, should_stop=stop.is_set
        ):
            if record is not None:
                seen.append(record.ip_id or 0)
                origins.append(record.origin)

    origins: list[str] = []
    threads = [threading.Thread(target=target) for target in (write, rotate, consume)]
    for thread in threads:
        thread.start()
    try:
        threads[0].join(timeout=120)
        threads[1].join(timeout=120)
        _wait_for(lambda: len(seen) >= total, timeout=10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        state["out"].close()
    assert len(list(tmp_path.glob("syslogemu.log.*"))) == 5
    missing = sorted(set(range(1, total + 1)) - set(seen))
    twice = [
        (number, origin)
        for number, origin in zip(seen, origins, strict=True)
        if seen.count(number) > 1
    ]
    assert (len(seen), missing[:20], twice[:6]) == (total, [], [])
    assert stats.garbled == 0


def test_follow_warns_when_a_truncated_file_has_no_copy_to_read_the_rest_from(tmp_path):
    path = tmp_path / "syslogemu.log"
    path.write_text("".join(_numbered(1, 10)))
    warnings: list[str] = []
    followed = logs._FollowedFile(path, from_start=True, warn=warnings.append)
    try:
        followed.read_lines()
        with open(path, "a") as out:
            out.writelines(_numbered(11, 5))  # written, not read, and then lost
        with open(path, "r+") as out:
            out.truncate(0)
        with open(path, "a") as out:
            out.writelines(_numbered(100, 2))
        assert _ids(followed.read_lines()) == [100, 101]
        assert warnings == [
            f"{path} was truncated and no copy of it was found beside it: lines written after "
            "its line 10 and before the truncation may be missing"
        ]
    finally:
        followed.close()
