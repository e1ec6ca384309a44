"""The C field splitter (k3s_netpol._logemu) gives, line by line, what logscan's regex gives."""

from __future__ import annotations

import random
import re

import pytest
from benchmark_modules import bench_logs
from test_logscan import ICMP_LINE, IPV6_LINE, tricky_variants

from k3s_netpol import logscan
from k3s_netpol.logs import LogParseError, parse_logemu_line

try:
    from k3s_netpol import _logemu
except ImportError:  # pragma: no cover - the assertion below says what is wrong
    _logemu = None

MODES = ("events", "summary")


def regex_rows(text: str, mode: str) -> list[tuple[str, ...] | None]:
    """The regex's groups of each line, and the packet key logscan.packet_key makes of them."""
    layout = logscan._LAYOUTS[mode]
    rows: list[tuple[str, ...] | None] = []
    for line in logscan._lines_of(text):
        found = layout.pattern.match(line)
        if found is None:
            rows.append(None)
            continue
        groups = found.groups("")
        rows.append(logscan._keyed(groups, layout))
    return rows


def c_rows(text: str, mode: str) -> list[tuple[str, ...] | None]:
    assert _logemu is not None
    split = _logemu.rows(text.encode(), mode == "events")
    assert split is not None
    rows, misses = split
    assert misses == rows.count(None)
    return rows


def mutations(line: str, rng: random.Random, count: int) -> list[str]:
    """Random edits with the characters the format turns on: spaces, '=', digits, hex, names."""
    alphabet = " = 0123456789abcdefxMARKSEQDFTCPUDPINOUTSRCDST:.-/\t"
    out = []
    for _ in range(count):
        chars = list(line)
        for _ in range(rng.choice((1, 1, 2, 3))):
            at = rng.randrange(len(chars) + 1)
            roll = rng.random()
            if roll < 0.4 and chars:
                del chars[min(at, len(chars) - 1)]
            elif roll < 0.8:
                chars.insert(at, rng.choice(alphabet))
            elif chars:
                chars[min(at, len(chars) - 1)] = rng.choice(alphabet)
        out.append("".join(chars))
    return out


def test_the_extension_is_built():
    assert _logemu is not None, (
        "k3s_netpol._logemu is missing: scripts/setup.sh builds it (pip install -e . with gcc "
        "and python3-dev); without it `k3s-netpol logs` falls back to the slower regex"
    )


@pytest.mark.parametrize("mode", MODES)
def test_the_benchmark_lines_split_as_the_regex_splits_them(mode):
    text = "".join(bench_logs().synthetic_lines(3000, seed=5))
    rows = c_rows(text, mode)
    assert None not in rows
    assert rows == regex_rows(text, mode)
    assert len(rows[0]) == (12 if mode == "events" else 6)
    assert len({row[-1] for row in rows}) > len(rows) // 3  # packets, each of one or more lines


@pytest.mark.parametrize("mode", MODES)
def test_edge_lines_are_taken_or_left_exactly_as_the_regex_does(mode):
    lines = [
        variant.rstrip("\n")
        for line in bench_logs().synthetic_lines(300, seed=3)
        for variant in [line, *tricky_variants(line)]
    ]
    lines += [IPV6_LINE, ICMP_LINE, "", " ", "x", "Jan  1 00:00:00 n  IN=", "{}"]
    text = "\n".join(lines) + "\n"
    got, expected = c_rows(text, mode), regex_rows(text, mode)
    assert got == expected
    assert 0 < got.count(None) < len(got) - 300


@pytest.mark.parametrize("mode", MODES)
def test_random_edits_are_taken_or_left_exactly_as_the_regex_does(mode):
    rng = random.Random(17)
    lines = [
        mutated
        for line in bench_logs().synthetic_lines(400, seed=9)
        for mutated in mutations(line.rstrip("\n"), rng, 25)
    ]
    text = "\n".join(lines)  # and the last line unterminated
    got, expected = c_rows(text, mode), regex_rows(text, mode)
    assert len(got) == len(lines)
    mismatches = [
        (line, want, have)
        for line, want, have in zip(lines, expected, got, strict=True)
        if want != have
    ]
    assert not mismatches[:5]
    taken = sum(row is not None for row in got)
    assert 0.2 * len(lines) < taken < 0.8 * len(lines)


def test_what_it_leaves_to_the_regex():
    assert _logemu is not None
    line = next(iter(bench_logs().synthetic_lines(1, seed=1))).rstrip("\n")
    assert _logemu.rows(f"{line}\r\n".encode(), True) is None
    accented = line.replace("DROP by policy ", "DROP by policy caf\u00e9-", 1)
    rows, misses = _logemu.rows(f"{line}\n{accented}\n".encode(), False)  # type: ignore[misc]
    assert misses == 1
    assert rows[1] is None
    assert logscan._SUMMARY_ROW.match(accented) is not None  # the regex takes it instead
    assert _logemu.rows(b"", False) == ([], 0)
    assert _logemu.rows(b"\n\n", False) == ([None, None], 2)


@pytest.mark.parametrize("mode", MODES)
def test_impossible_addresses_and_ports_are_left_to_the_full_parser_which_counts_them(mode):
    line = next(iter(bench_logs().synthetic_lines(1, seed=1))).rstrip("\n")
    bad = [
        re.sub(r" SRC=[^ ]+", " SRC=999.0.0.1", line),
        re.sub(r" DST=[^ ]+", " DST=10.42.0.256", line),
        re.sub(r" DST=[^ ]+", " DST=1.2.3.4.5", line),
        re.sub(r" SPT=[0-9]+", " SPT=65536", line),
        re.sub(r" DPT=[0-9]+", " DPT=99999", line),
        re.sub(r" DPT=[0-9]+", " DPT=123456", line),
    ]
    good = [
        re.sub(r" SRC=[^ ]+", " SRC=255.255.255.255", line),
        re.sub(r" SPT=[0-9]+", " SPT=65535", line),
        re.sub(r" DPT=[0-9]+", " DPT=0", line),
    ]
    text = "\n".join(bad + good) + "\n"
    rows = c_rows(text, mode)
    assert rows == regex_rows(text, mode)
    assert rows[: len(bad)] == [None] * len(bad)
    assert None not in rows[len(bad) :]
    for variant in bad:
        with pytest.raises(LogParseError, match=r"is not an IP address|is not a port"):
            parse_logemu_line(variant)
