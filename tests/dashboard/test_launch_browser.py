"""The Launch page in Chromium against the real embedded stack (`aipo up`'s API and dashboard on
SQLite and the filesystem broker; no worker is needed to count runs): Enter in a field creates no
run, the cost summary is on the page before launching and equals the API's preview, and a double
click on Launch, or another click on the same settings, creates exactly one run."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aipo_cli.services import Stack, running_stack
from dashboard.run_form import DEFAULT_CONFIG
from tests.backend.live_server import free_port
from tests.dashboard.test_browser import CHROMIUM, CHROMIUM_FLAGS, embedded_env, sync_api

SUMMARY = ".st-key-launch_summary_form"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    home = tmp_path / "home"
    env = embedded_env(home)
    with running_stack(
        api_port=free_port(), dashboard_port=free_port(), workers=0, env=env, ready_timeout_s=120
    ) as started:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{started.dashboard_url}/_stcore/health", timeout=2).text.strip() == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.5)
        yield started


def api(stack: Stack) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.api_url}/api/v1", headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
    )


def runs(stack: Stack) -> list[dict]:
    with api(stack) as client:
        return client.get("/runs").json()["items"]


def shown_figures(page) -> dict[str, str]:  # noqa: ANN001 - a Playwright Page
    """The summary's metrics as the browser shows them: label → value."""
    summary = page.locator(SUMMARY)
    labels = summary.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    values = summary.locator('[data-testid="stMetricValue"]').all_inner_texts()
    return {label.strip(): value.strip() for label, value in zip(labels, values, strict=True)}


def settle(page, seconds: float = 3.0) -> None:  # noqa: ANN001
    """Let Streamlit finish the rerun a committed field started."""
    page.wait_for_timeout(int(seconds * 1000))
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=60_000)


@pytest.mark.timeout(420)
def test_enter_never_launches_and_launch_creates_exactly_one_run(stack: Stack, tmp_path: Path) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{stack.dashboard_url}/new-run", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Launch").wait_for(timeout=90_000)
            page.locator(SUMMARY).wait_for(timeout=90_000)

            name = page.get_by_label("Name", exact=True)
            name.fill("browser-run")
            name.press("Enter")
            iterations = page.get_by_label("Iterations", exact=True)
            iterations.fill("3")
            iterations.press("Enter")
            # The field was committed (the summary follows it) and nothing was launched.
            page.locator(SUMMARY).get_by_text("384", exact=True).wait_for(timeout=60_000)
            settle(page)
            assert runs(stack) == []

            config = copy.deepcopy(DEFAULT_CONFIG) | {"name": "browser-run", "iterations": 3}
            with api(stack) as client:
                preview = client.post("/runs/preview", json=config).json()
            assert shown_figures(page) == {
                "Candidates": f"{preview['candidates']:,}",
                "Generated tokens (at most)": f"{preview['generation_tokens']['total']:,}",
                "Training tokens (at most)": f"{preview['training_tokens']:,}",
                "Model size": "134.5M",
            }
            assert preview["candidates"] == 3 * 32 * 4 and preview["model"]["parameters"] == 134_515_008
            page.screenshot(path=str(tmp_path / "launch-summary.png"), full_page=True)

            launch = page.get_by_role("button", name="Launch run")
            launch.dblclick()
            page.get_by_text("launched.").first.wait_for(timeout=60_000)
            settle(page)
            # Clicked again on the same settings (an impatient user, a page rerun): no second run.
            launch.click()
            page.get_by_text("already sent").first.wait_for(timeout=60_000)
            settle(page)
        finally:
            browser.close()
    created = runs(stack)
    assert len(created) == 1, [(r["id"], r["name"]) for r in created]
    assert created[0]["name"] == "browser-run" and created[0]["config"]["iterations"] == 3
