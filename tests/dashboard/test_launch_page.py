"""The Launch page against the real seeded API: the cost summary is drawn before any button is
pressed, refused settings disable the button, and every submission carries one Idempotency-Key
per form state (a repeat returns the run the first one created)."""

from __future__ import annotations

import httpx
from streamlit.testing.v1 import AppTest

from dashboard import api_client, launch_summary, ui
from tests.dashboard.test_pages import assert_clean, button, open_page


def metrics(at: AppTest, tab: int = 0) -> dict[str, str]:
    """The summary figures on one tab (Form, YAML, Sweep)."""
    return {m.label: m.value for m in at.tabs[tab].metric}


def keys_sent(sent: list[httpx.Request], path: str) -> list[str | None]:
    """The Idempotency-Key header of every POST to `path`."""
    return [r.headers.get("Idempotency-Key") for r in sent if (r.method, r.url.path) == ("POST", path)]


def test_the_summary_is_shown_before_launching(backend):
    at = open_page(ui.LAUNCH_PAGE)
    assert_clean(at)
    shown = metrics(at)
    # The default config: 2 iterations × 32 instructions × 4 candidates on SmolLM2-135M
    # (aipo_core/estimate.py; the same figures the API serves and `aipo submit --dry-run` prints).
    assert shown["Candidates"] == "256"
    assert shown["Generated tokens (at most)"] == "65,536"
    assert shown["Training tokens (at most)"] == "81,920"
    assert shown["Model size"] == "134.5M"
    assert metrics(at, tab=1)["Candidates"] == "256"  # the YAML tab, same config
    assert metrics(at, tab=2)["Runs"] == "6"  # the sweep tab's default grid
    captions = [c.value for c in at.caption]
    assert any("2 × 32 × 4 = 256 candidates" in c and "on queue gpu" in c for c in captions), captions
    assert api_client.list_runs().total == 6 and not button(at, "Launch run").disabled


def test_the_summary_follows_the_fields(backend):
    at = open_page(ui.LAUNCH_PAGE)
    next(n for n in at.number_input if n.label == "Candidates / prompt").set_value(8).run()
    assert metrics(at)["Candidates"] == "512"
    assert api_client.list_runs().total == 6  # nothing created


def test_refused_settings_disable_the_button_before_any_click(backend):
    at = open_page(ui.LAUNCH_PAGE)
    next(n for n in at.number_input if n.label == "Epochs").set_value(0.0).run()
    assert button(at, "Launch run").disabled
    assert any("`training.epochs`" in e.value for e in at.error)
    assert api_client.list_runs().total == 6  # nothing created


def test_one_key_per_form_state(backend, sent_requests):
    at = open_page(ui.LAUNCH_PAGE)
    at.text_input[0].input("first").run()
    button(at, "Launch run").click().run()
    button(at, "Launch run").click().run()  # the same settings again: the same key
    at.text_input[0].input("second").run()
    button(at, "Launch run").click().run()
    assert_clean(at)
    first, again, second = keys_sent(sent_requests, "/api/v1/runs")
    assert first == again and second != first and first is not None
    assert [r["name"] for r in api_client.list_runs(limit=2).items] == ["second", "first"]  # one run each
    other_session = open_page(ui.LAUNCH_PAGE)
    other_session.text_input[0].input("first").run()
    button(other_session, "Launch run").click().run()
    assert keys_sent(sent_requests, "/api/v1/runs")[-1] not in (first, second)


def test_sweep_launch_sends_a_key(backend, sent_requests):
    at = open_page(ui.LAUNCH_PAGE)
    button(at, "Launch sweep").click().run()
    assert_clean(at)
    assert keys_sent(sent_requests, "/api/v1/sweeps")[-1] is not None


def test_figures_are_formatted_for_people():
    assert [launch_summary.parameters(v) for v in (134_515_008, 2_000_000_000, 64_512, 7, None)] == [
        "134.5M",
        "2.0B",
        "64.5K",
        "7",
        "unknown",
    ]
    assert launch_summary.count(1234567) == "1,234,567" and launch_summary.count(None) == "–"
