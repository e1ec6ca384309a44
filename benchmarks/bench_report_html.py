"""report.html figures: `k3s-netpol report` end to end on the 144-probe x/y/z matrix over two
nodes (the tests' data: log lines as ulogd2 writes them, every cell status present), the page's
size, and the time headless Chromium takes to load and render it (network off). Prints figures;
asserts nothing.

    python benchmarks/bench_report_html.py [--no-browser]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from report_html_data import BrowserMissing, chromium, xyz_run  # noqa: E402


def write_inputs(work: Path) -> list[str]:
    """The report command's inputs for the x/y/z run; returns its arguments."""
    report, texts = xyz_run()
    rows = [row.to_dict() for row in report.rows]
    probes = [
        {k: row[k] for k in ("from", "to", "port", "protocol")}
        | {"allowed": row["expected"] == "allowed"}
        for row in rows
    ]
    (work / "expected.json").write_text(json.dumps({"probes": probes}))
    (work / "observed.jsonl").write_text(
        "".join(
            json.dumps(
                {k: row[k] for k in ("from", "to", "port", "protocol")}
                | {"connected": row["observed"] == "allowed"}
            )
            + "\n"
            for row in rows
            if row["observed"] != "not probed"
        )
    )
    pods: dict[str, dict[str, str]] = {}
    for row in rows:
        for pod, ip in ((row["from"], row["source_ip"]), (row["to"], row["destination_ip"])):
            namespace, name = pod.split("/")
            node = "node-a" if namespace == "x" else "node-b"
            pods[pod] = {"namespace": namespace, "name": name, "ip": ip, "node": node}
    (work / "pods.json").write_text(json.dumps({"pods": list(pods.values())}))
    by_node: dict[str, list[str]] = defaultdict(list)
    for text in texts.values():
        by_node[text.split()[3]].append(text)
    arguments = [
        "--expected",
        str(work / "expected.json"),
        "--observed",
        str(work / "observed.jsonl"),
    ]
    for node, lines in sorted(by_node.items()):
        (work / f"{node}.log").write_text("\n".join(lines) + "\n")
        arguments += ["--log", f"{node}={work / f'{node}.log'}"]
    return [*arguments, "--pods", str(work / "pods.json"), "--out", str(work / "out")]


def browser_load(page: Path, profile: Path) -> tuple[float, float] | None:
    try:
        driver = chromium(profile)
    except BrowserMissing as missing:
        print(f"browser: SKIPPED ({missing})")
        return None
    try:
        driver.get(page.as_uri())  # a first load warms the browser's caches
        figures = []
        for _ in range(5):
            started = time.perf_counter()
            driver.get(page.as_uri())
            wall = (time.perf_counter() - started) * 1000
            loaded = driver.execute_script(
                "return performance.getEntriesByType('navigation')[0].loadEventEnd"
            )
            figures.append((float(loaded), wall))
        return min(figures)
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-html-") as name:
        work = Path(name)
        arguments = write_inputs(work)
        command = [sys.executable, "-m", "k3s_netpol", "report", *arguments]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        page = work / "out" / "report.html"
        print(
            f"k3s-netpol report, 144 probes over 2 nodes: {seconds * 1000:.0f} ms "
            f"(exit {result.returncode}: 1 is the mismatches put in on purpose)"
        )
        print(f"report.html: {page.stat().st_size / 1024:.0f} KiB (goal under 500 KB)")
        print(f"report.json: {(work / 'out' / 'report.json').stat().st_size / 1024:.0f} KiB")
        if not args.no_browser:
            figures = browser_load(page, work / "profile")
            if figures is not None:
                print(
                    f"Chromium load + render: {figures[0]:.0f} ms to the load event, "
                    f"{figures[1]:.0f} ms per driver.get (best of 5; goal under 1 s)"
                )


if __name__ == "__main__":
    main()
