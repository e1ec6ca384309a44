"""report.html in headless Chromium with the network off: the grid's cells per outcome, a blocked
cell's details with its log line, the event filters; the render time is printed and a screenshot
saved under the artifacts directory (K3S_NETPOL_ARTIFACTS_DIR or ./artifacts)."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_html_data import (
    LAB_RUN,
    LAB_RUN_COUNTS,
    XYZ_COUNTS,
    BrowserMissing,
    chromium,
    lab_run,
    xyz_run,
)

from k3s_netpol.report_html import cell_status, render, write_html


def artifacts_dir() -> Path:
    directory = Path(os.environ.get("K3S_NETPOL_ARTIFACTS_DIR") or "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    except BrowserMissing as missing:
        pytest.skip(f"SKIPPED: {missing}")
    try:
        yield driver
    finally:
        driver.quit()


def load(browser: Any, page: Path) -> float:
    """Open the file; return the milliseconds from navigation start to the load event's end."""
    started = time.perf_counter()
    browser.get(page.resolve().as_uri())
    wall = (time.perf_counter() - started) * 1000
    loaded = browser.execute_script(
        "return performance.getEntriesByType('navigation')[0].loadEventEnd"
    )
    print(f"{page.name}: loaded and rendered in {loaded:.0f} ms ({wall:.0f} ms as the test saw it)")
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    return float(loaded)


VISIBLE_CELLS = """
const counts = {};
const backgrounds = {};
for (const cell of document.querySelectorAll('table.grid td.c[data-status]')) {
  if (!cell.offsetParent || cell.getBoundingClientRect().width === 0) { continue; }
  const status = cell.dataset.status;
  counts[status] = (counts[status] || 0) + 1;
  const style = getComputedStyle(cell);
  backgrounds[status] = style.backgroundColor + ' ' + style.backgroundImage;
}
return [counts, backgrounds];
"""


def visible_cells(browser: Any) -> tuple[dict[str, int], dict[str, str]]:
    """Visible cells per status, and each status's background: painted, one per status."""
    counts, backgrounds = browser.execute_script(VISIBLE_CELLS)
    assert "rgba(0, 0, 0, 0) none" not in backgrounds.values(), backgrounds
    assert len(set(backgrounds.values())) == len(backgrounds), backgrounds
    return counts, backgrounds


def open_cell(browser: Any, status: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    link = browser.find_element(By.CSS_SELECTOR, f"td.c.s-{status} a")
    link.click()
    details = browser.find_element(By.ID, link.get_attribute("href").rpartition("#")[2])
    WebDriverWait(browser, 5).until(expected_conditions.visibility_of(details))
    return details


@pytest.fixture(scope="module")
def lab_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("lab-run")
    shutil.copytree(LAB_RUN.parent, directory, dirs_exist_ok=True)
    return write_html(lab_run(), directory / "report.html")


@pytest.fixture(scope="module")
def xyz_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    report, texts = xyz_run()
    page = tmp_path_factory.mktemp("xyz") / "report.html"
    page.write_text(render(report.to_dict(), "2026-11-29 10:14:21 UTC", texts), encoding="utf-8")
    return page, report


def test_recorded_lab_run_in_chromium(browser: Any, lab_page: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    load(browser, lab_page)
    counts, _ = visible_cells(browser)
    assert counts == LAB_RUN_COUNTS
    assert browser.find_element(By.ID, "verdict").text == "OK"
    browser.save_screenshot(str(artifacts_dir() / "report-html.png"))

    details = open_cell(browser, "blocked-logged")
    text = details.text
    row = lab_run()["rows"][int(details.get_attribute("id").removeprefix("probe-"))]
    assert cell_status(row).key == "blocked-logged"
    assert f"{row['from']} → {row['to']} {row['port']}/TCP" in text
    assert re.search(
        rf"k3s-netpol-lab +IN=cni0 OUT=cni0 .*SRC={row['source_ip']} DST={row['destination_ip']}"
        rf" .*DPT={row['port']} ",
        text,
    ), text
    assert "node k3s-netpol-lab" in text
    browser.save_screenshot(str(artifacts_dir() / "report-html-details.png"))

    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    assert not browser.find_element(By.ID, "details").is_displayed()


def test_144_probe_matrix_in_chromium(browser: Any, xyz_page: tuple[Path, Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    page, report = xyz_page
    loaded = load(browser, page)
    print(f"144 probes: rendered in {loaded:.0f} ms, goal under 1000 ms")
    counts, _ = visible_cells(browser)
    assert counts == XYZ_COUNTS

    details = open_cell(browser, "blocked-unlogged")
    assert "No log line for this flow." in details.text
    details = open_cell(browser, "blocked-logged")
    assert re.search(r"node-[ab] +IN=cni0 OUT=cni0 ", details.text)
    assert "DROP by policy" in details.text

    Select(browser.find_element(By.ID, "f-ns")).select_by_value("y")
    with_y = [
        event
        for event in report.events
        if any(ip.startswith("10.42.0.2") for ip in (event.source, event.destination))
    ]
    count = browser.find_element(By.ID, "event-count").text
    assert count == f"{len(with_y)} of {len(report.events)} events"
    shown = [row for row in browser.find_elements(By.CSS_SELECTOR, ".event-table tbody tr")]
    visible = [row for row in shown if row.is_displayed()]
    assert len(visible) == len(with_y)
    assert all("y" in row.get_attribute("data-ns").split() for row in visible)
    Select(browser.find_element(By.ID, "f-kind")).select_by_value("false")
    false_with_y = [event for event in with_y if not event.real]
    assert browser.find_element(By.ID, "event-count").text.startswith(f"{len(false_with_y)} of")
    browser.find_element(By.CSS_SELECTOR, "#details .close").click()
    assert not browser.find_element(By.ID, "details").is_displayed()
    browser.execute_script("document.querySelector('.grids').scrollIntoView()")
    browser.save_screenshot(str(artifacts_dir() / "report-html-144.png"))
