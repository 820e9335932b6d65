"""The MLflow UI as a user meets it after `bench run` and `bench ui`, driven in headless
Chromium: the URL `bench ui` prints opens the runs of the suite just run (not MLflow's GenAI
overview), one row per (method, task) with its main metrics first and the splits it read, best
first; ticking the runs and pressing Compare shows their metrics side by side.

Run as a script, the same code makes the README's screenshot:

    python tests/test_ui_browser.py --screenshot docs/mlflow-runs.png
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CHROMIUM, free_port, stop_process_groups, wait_until_healthy
from lensbench.bench import cli
from lensbench.bench.tracking import read_suite_runs

pytestmark = pytest.mark.slow

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
# MLflow's UI is a large single-page app: on two busy cores its first render takes a minute.
UI_TIMEOUT_MS = 240_000
VIEWPORT = {"width": 1800, "height": 400}
EXPERIMENT = "lensbench-smoke"
MAIN_METRICS = ("auroc", "tpr0", "tpr10")  # the lens-finding kind's, first in the view

# The texts of the elements on the same row as ``cell`` and right of it, left to right: a row
# of the runs table or of the compare page's metrics, however the grid nests its cells.
ROW_TEXTS = """(cell) => {
    const box = cell.getBoundingClientRect(), middle = box.top + box.height / 2;
    const found = [];
    for (const element of document.querySelectorAll("body *")) {
        const text = element.textContent.trim();
        if (element.children.length || !text) continue;
        const r = element.getBoundingClientRect();
        if (r.left >= box.right && r.top <= middle && r.bottom >= middle && r.width > 0)
            found.push([r.left, text]);
    }
    return found.sort((a, b) => a[0] - b[0]).map((pair) => pair[1]);
}"""


def make_store(workdir: Path) -> list[dict]:
    """A tracked smoke suite in ``workdir``; its (method, task) runs, as read_suite_runs."""
    assert cli.main(["run", "--suite", "smoke", "--profile", "smoke", "--workdir",
                     str(workdir)]) == 0
    runs = read_suite_runs(f"sqlite:///{workdir.resolve()}/mlflow.db", EXPERIMENT)
    return [run for run in runs if run["parent_run_id"] is not None]


@contextlib.contextmanager
def bench_ui(workdir: Path, port: int) -> Iterator[str]:
    """`bench ui` on ``workdir`` as a subprocess: yields the runs-view URL it printed once the
    server answers; stops its whole process group (the UI's workers)."""
    log = workdir / "bench-ui.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "lensbench.bench.cli", "ui", "--workdir", str(workdir),
             "--port", str(port)], stdout=output, stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, process, log, "bench ui", timeout_s=UI_TIMEOUT_MS / 1000)
        printed = [line.split(": ", 1)[1] for line in log.read_text().splitlines()
                   if line.startswith("runs of the latest suite")]
        assert printed, f"bench ui printed no runs-view URL: {log.read_text()[-3000:]}"
        yield printed[0]
    finally:
        stop_process_groups([process], timeout_s=30)


def numbers(texts: list[str]) -> list[float]:
    found = []
    for text in texts:
        with contextlib.suppress(ValueError):
            found.append(float(text))
    return found


def check_runs_view(page, url: str, children: list[dict], screenshot: Path | None = None
                    ) -> list[dict]:
    """The runs view `bench ui` printed: the (method, task) runs only, best AUROC first, each
    row starting with its main metrics and naming the splits it read. Returns the runs in the
    table's order."""
    page.goto(url)
    ranked = sorted(children, key=lambda run: -run["metrics"]["auroc"])
    names = [page.get_by_text(run["name"], exact=True) for run in ranked]
    for name in names:
        name.wait_for(timeout=UI_TIMEOUT_MS)
    assert "/runs" in page.url and page.get_by_text("Token Usage").count() == 0
    assert page.get_by_text("smoke:smoke:seed0").count() == 0  # the suite run is filtered out
    tops = [name.bounding_box()["y"] for name in names]
    assert tops == sorted(tops), "runs are not sorted by AUROC, best first"
    for run, name in zip(ranked, names, strict=True):
        row = name.evaluate(ROW_TEXTS)
        values = numbers(row)
        expected = [run["metrics"][key] for key in MAIN_METRICS]
        assert values[:len(expected)] == expected, (run["name"], row)
        digest = run["params"]["split.train"][:12]
        assert any(text.startswith(f"smoke-ground@v1/train ({digest}") for text in row), row
    if screenshot is not None:
        for close in (page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]'),
                      page.get_by_role("button", name="Hide banner")):
            if close.count():  # the assistant panel and the shared-view note hide the table
                close.first.click()
                close.first.wait_for(state="hidden")
        page.screenshot(path=str(screenshot))
    return ranked


def check_compare_page(page, ranked: list[dict]) -> None:
    """Every run ticked and Compare pressed: MLflow's compare page shows their methods and
    AUROCs side by side, one column per run in the table's order (it rounds metrics to 3
    digits)."""
    page.get_by_role("checkbox", name="Select all runs").check()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text(f"Comparing {len(ranked)} Runs").wait_for(timeout=UI_TIMEOUT_MS)
    page.get_by_role("switch", name="Metrics - Show diff only").scroll_into_view_if_needed()
    # The metrics table lists its keys alphabetically and draws only the rows in view: auroc
    # is the first.
    label = page.get_by_role("link", name="auroc", exact=True)
    label.wait_for(timeout=UI_TIMEOUT_MS)
    shown = numbers(label.evaluate(ROW_TEXTS))
    expected = [run["metrics"]["auroc"] for run in ranked]
    assert len(shown) == len(expected), shown
    assert all(math.isclose(s, e, rel_tol=5e-3) for s, e in zip(shown, expected, strict=True)), (
        shown, expected)
    method = page.get_by_text("method", exact=True).last
    assert method.evaluate(ROW_TEXTS) == [run["params"]["method"] for run in ranked]


def drive(workdir: Path, chromium: str, screenshot: Path | None = None) -> None:
    """Make the store, start `bench ui`, check both pages in headless Chromium."""
    from playwright.sync_api import sync_playwright

    children = make_store(workdir)
    assert len(children) == 2
    with bench_ui(workdir, free_port()) as runs_url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            check_compare_page(page, check_runs_view(page, runs_url, children, screenshot))
            assert not errors, errors
        finally:
            browser.close()


def test_bench_ui_opens_on_the_runs_and_compares_them(tmp_path, chromium):
    screenshot = tmp_path / "runs.png"
    drive(tmp_path / "work", chromium, screenshot)
    assert screenshot.read_bytes().startswith(b"\x89PNG")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenshot", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lensbench-ui-") as folder:
        drive(Path(folder), CHROMIUM, args.screenshot.resolve())
    print(f"wrote {args.screenshot}")
