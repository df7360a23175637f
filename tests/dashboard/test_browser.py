"""The dashboard in a real browser, against real APIs:

* `streamlit run dashboard/app.py` started as `aipo up` starts it (aipo_cli.services.dashboard_command,
  the repository's .streamlit/config.toml) against the seeded API (tests/dashboard/seeded_backend.py);
* `aipo up`'s whole embedded stack (API, one worker, dashboard) after a real 2-iteration run of
  tiny-random-llama.

In both, every page and every run-detail tab renders the run's data with no error, and the page
requests nothing from any host but this machine. With AIPO_SCREENSHOTS=1 the real run's pages are
written to docs/screenshots/<page>.png (and the seeded sweep's heatmap to compare_sweep.png).

Uses the system Chromium (Debian package `chromium`); Playwright's own browser downloads are
never used. Without /usr/bin/chromium the test is skipped, unless AIPO_REQUIRE_SERVICES=1
(CI), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from aipo_cli.services import dashboard_command, running_stack
from tests.backend.live_server import free_port
from tests.worker.harness import TERMINAL, TINY_RUN

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
REQUIRED = os.environ.get("AIPO_REQUIRE_SERVICES") == "1"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

if not CHROMIUM.exists():
    if REQUIRED:
        pytest.fail(
            f"{CHROMIUM} is missing and AIPO_REQUIRE_SERVICES=1 (apt-get install chromium)", pytrace=False
        )
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)

try:
    from playwright import sync_api
except ImportError:
    if REQUIRED:
        raise
    pytest.skip("the playwright package is not installed", allow_module_level=True)


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=2).text.strip() == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"streamlit did not become healthy at {url} within {timeout_s:.0f} s")


@pytest.fixture
def dashboard_url(backend, tmp_path) -> Iterator[str]:
    """A headless `streamlit run dashboard/app.py` on a random port, pointed at the seeded API,
    in server-token mode (what `aipo up` runs on 127.0.0.1)."""
    env = {
        "AIPO_DASHBOARD_AUTH": "server-token",
        "AIPO_API_TOKEN": backend.token,
        "AIPO_HOME": str(tmp_path),
    }
    yield from _dashboard(backend.url, env, tmp_path)


@pytest.fixture
def login_dashboard_url(backend, tmp_path) -> Iterator[str]:
    """The same in login mode, without the server's token in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("AIPO_API_TOKEN", "AIPO_HOME")}
    yield from _dashboard(backend.url, {"AIPO_DASHBOARD_AUTH": "login"}, tmp_path, base=env)


def _dashboard(
    api_url: str, extra: dict[str, str], tmp_path, base: dict[str, str] | None = None
) -> Iterator[str]:
    port = free_port()
    env = {**(os.environ if base is None else base), "AIPO_API_URL": api_url, **extra}
    log = (tmp_path / "streamlit.log").open("w")
    process = subprocess.Popen(
        [*dashboard_command(port), "--server.fileWatcherType", "none", "--global.developmentMode", "false"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=APP.parents[1],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.mark.timeout(240)
def test_runs_page_in_a_browser(dashboard_url, tmp_path):
    screenshot = tmp_path / "runs-page.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(dashboard_url, wait_until="domcontentloaded")
            page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
            # The runs table draws on a canvas and mirrors its cells in an accessibility table.
            cell = page.locator("[role=gridcell]", has_text="aipo-smollm2")
            cell.first.wait_for(state="attached", timeout=60_000)
            assert cell.count() == 1
            assert page.get_by_text("6 of 6 runs").is_visible()
            assert page.get_by_text("API unreachable").count() == 0
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("AIPO_SCREENSHOT_DIR"):
        target = Path(os.environ["AIPO_SCREENSHOT_DIR"]) / screenshot.name
        target.write_bytes(screenshot.read_bytes())


@pytest.mark.timeout(240)
def test_login_mode_in_a_browser(login_dashboard_url, backend):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(login_dashboard_url, wait_until="domcontentloaded")
            field = page.get_by_label("API token")
            field.wait_for(timeout=60_000)
            assert field.get_attribute("type") == "password"
            assert page.locator("[role=gridcell]").count() == 0
            field.fill("wrong-token")
            page.get_by_role("button", name="Sign in").click()
            page.get_by_text("That token was not accepted").wait_for(timeout=30_000)
            field.fill(backend.token)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
            page.locator("[role=gridcell]", has_text="aipo-smollm2").first.wait_for(
                state="attached", timeout=60_000
            )
            assert page.get_by_text("Signed in as").first.is_visible()
            assert backend.token not in page.url
            # A second browser context is another person: signed out.
            other = browser.new_page()
            other.goto(login_dashboard_url, wait_until="domcontentloaded")
            other.get_by_label("API token").wait_for(timeout=60_000)
            assert other.locator("[role=gridcell]").count() == 0
            page.get_by_role("button", name="Sign out").click()
            page.get_by_label("API token").wait_for(timeout=30_000)
        finally:
            browser.close()


def _no_error_on(page, name: str) -> None:  # noqa: ANN001 - a Playwright Page
    assert page.locator("[data-testid=stException]").count() == 0, name
    assert page.get_by_text("Something went wrong while drawing this page.").count() == 0, name
    assert page.get_by_text("API unreachable").count() == 0, name


def _settle(page) -> None:  # noqa: ANN001 - a Playwright Page
    """Wait until Streamlit has finished running the page script (no running indicator)."""
    page.wait_for_load_state("networkidle", timeout=60_000)
    page.locator("[data-testid=stStatusWidget]").wait_for(state="detached", timeout=60_000)


RUN_DETAIL_TABS = {
    "Win rate vs length": "run_detail_win_rate",
    "Rewards": "run_detail_rewards",
    "Pair diagnostics": "run_detail_pairs",
    "Training curves": "run_detail_curves",
    "Eval samples": "run_detail_samples",
    "Logs": "run_detail_logs",
}


def visit_every_page(
    dashboard_url: str, run_id: int, run_name: str, *, sweep: bool, shots: Callable[[str], str | None]
) -> list[str]:
    """Open every page and every run-detail tab of run `run_id`, checking each shows its data and
    no error; with AIPO_SCREENSHOTS=1, a page's screenshot is docs/screenshots/<shots(page)>.png
    (None: not shot). Returns every URL the page requested."""
    requested: list[str] = []

    def _screenshot(page, name: str) -> None:  # noqa: ANN001 - a Playwright Page
        if os.environ.get("AIPO_SCREENSHOTS") == "1" and (file := shots(name)) is not None:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{file}.png"), full_page=True)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            # Tall: Streamlit scrolls inside its own container, so a screenshot shows one viewport.
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.on("request", lambda request: requested.append(request.url))

            page.goto(dashboard_url, wait_until="domcontentloaded")
            page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
            page.locator("[role=gridcell]", has_text=run_name).first.wait_for(
                state="attached", timeout=60_000
            )
            _settle(page)
            assert page.get_by_text("Deploy").count() == 0  # client.toolbarMode = viewer
            _no_error_on(page, "runs")
            _screenshot(page, "runs")

            page.goto(f"{dashboard_url}/run?run={run_id}", wait_until="domcontentloaded")
            page.get_by_text(f"#{run_id} {run_name}").wait_for(timeout=60_000)
            _settle(page)
            _no_error_on(page, "run detail")
            for tab, name in RUN_DETAIL_TABS.items():
                page.get_by_role("tab", name=tab).click()
                _settle(page)
                panel = page.locator("[role=tabpanel]:visible")
                assert panel.count() == 1, tab
                if tab == "Eval samples":
                    cell = page.locator("[role=gridcell]", has_text="alpaca_eval")
                    cell.first.wait_for(state="attached", timeout=60_000)
                elif tab != "Logs":
                    assert panel.locator(".js-plotly-plot").count() >= 1, tab
                _no_error_on(page, tab)
                _screenshot(page, name)

            page.goto(f"{dashboard_url}/comparison?runs={run_id}", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Compare runs").wait_for(timeout=60_000)
            page.get_by_text("Sweep heatmap").wait_for(timeout=60_000)
            _settle(page)
            if sweep:
                page.locator(".js-plotly-plot .heatmaplayer").first.wait_for(state="attached", timeout=60_000)
            _no_error_on(page, "compare")
            _screenshot(page, "compare")
            if sweep and os.environ.get("AIPO_SCREENSHOTS") == "1" and (file := shots("compare")):
                # The heatmap sits below the page's first 2000 px: shoot the chart itself too.
                heatmap = page.locator('[data-testid="stPlotlyChart"]', has=page.locator(".heatmaplayer"))
                heatmap.first.screenshot(path=str(SCREENSHOTS / f"{file}_heatmap.png"))

            page.goto(f"{dashboard_url}/preference-pairs?run={run_id}", wait_until="domcontentloaded")
            page.get_by_text("Pairs 1–").first.wait_for(timeout=60_000)
            _settle(page)
            _no_error_on(page, "pairs")
            _screenshot(page, "pairs")

            page.goto(f"{dashboard_url}/new-run", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Launch").wait_for(timeout=60_000)
            _settle(page)
            _no_error_on(page, "launch")
            _screenshot(page, "launch")
        finally:
            browser.close()
    return requested


def off_this_machine(requested: list[str]) -> list[str]:
    return sorted(
        {url for url in requested if url.startswith("http") and urlsplit(url).hostname not in LOCAL_HOSTS}
    )


@pytest.mark.timeout(480)
def test_every_page_and_tab_renders_and_stays_on_this_machine(dashboard_url):
    """The seeded data (a 2×2 sweep among it): every page, every tab, nothing fetched from outside."""
    # Its screenshot: the sweep heatmap, which the real run of the next test has none of.
    shots = {"compare": "compare_sweep"}.get
    requested = visit_every_page(dashboard_url, 1, "aipo-smollm2", sweep=True, shots=shots)
    assert not off_this_machine(requested), off_this_machine(requested)



def embedded_env(home: Path) -> dict[str, str]:
    """The environment of `aipo up`'s embedded stack under `home`: SQLite, the filesystem broker."""
    return {
        "AIPO_HOME": str(home),
        "AIPO_DATABASE_URL": f"sqlite:///{home / 'aipo.db'}",
        "AIPO_BROKER_URL": "filesystem://",
        "AIPO_API_TOKEN": "browser-test-token",
    }


@pytest.fixture
def finished_tiny_run(tmp_path: Path) -> Iterator[tuple[str, dict]]:
    """`aipo up`'s embedded stack (SQLite, filesystem broker, one worker) after a real 2-iteration
    run of tiny-random-llama (tests/worker/harness.TINY_RUN) has finished."""
    home = tmp_path / "home"
    env = embedded_env(home)
    with running_stack(
        api_port=free_port(), dashboard_port=free_port(), workers=1, env=env, ready_timeout_s=120
    ) as stack:
        headers = {"Authorization": f"Bearer {stack.token}"}
        with httpx.Client(base_url=f"{stack.api_url}/api/v1", headers=headers, timeout=30) as api:
            created = api.post("/runs", json={**TINY_RUN, "name": "tiny-browser", "iterations": 2})
            assert created.status_code == 201, created.text
            run_id = created.json()["id"]
            deadline = time.monotonic() + 540
            while (run := api.get(f"/runs/{run_id}").json())["status"] not in TERMINAL:
                assert time.monotonic() < deadline, f"the tiny run did not finish: {run['progress']}"
                time.sleep(2)
        assert run["status"] == "succeeded", run["error"]
        _wait_healthy(stack.dashboard_url, stack.service("dashboard").process)
        yield stack.dashboard_url, run


@pytest.mark.timeout(900)
def test_a_finished_tiny_run_in_the_embedded_stack(finished_tiny_run):
    """The real stack after a real run: every page and tab shows it, nothing fetched from outside."""
    dashboard_url, run = finished_tiny_run
    assert run["latest_evaluation"]["policy_index"] == 2
    requested = visit_every_page(dashboard_url, run["id"], run["name"], sweep=False, shots=lambda page: page)
    assert not off_this_machine(requested), off_this_machine(requested)
