"""Every page renders through app.py's navigation, against the real seeded API and with no API at all."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.store import eval_samples, pairs, runs
from dashboard import api_client, derived, ui
from tests.dashboard.seeded_backend import SeededApi, config, judged, pair_records, store_evaluations

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PAGES = [ui.RUNS_PAGE, ui.RUN_DETAIL_PAGE, ui.COMPARE_PAGE, ui.PAIRS_PAGE, ui.LAUNCH_PAGE]


def open_page(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()  # registers the navigation's pages
    at.query_params.update(query)
    if page != ui.RUNS_PAGE:
        at.switch_page(page)
    return at.run()


def texts(at: AppTest) -> str:
    """Everything a user can read on the page, as one string."""
    parts = [
        e.value
        for kind in (
            "title",
            "subheader",
            "markdown",
            "caption",
            "text",
            "info",
            "error",
            "warning",
            "success",
            "code",
        )
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert ui.UNEXPECTED_ERROR not in texts(at)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def plotly_keys(at: AppTest) -> set[str]:
    return {chart.key for chart in at.get("plotly_chart")}


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_data(backend, page):
    at = open_page(page, run="1")
    assert_clean(at)
    assert "API unreachable" not in texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_when_api_is_down(api_down, page):
    at = open_page(page, run="1")
    assert_clean(at)
    assert "API unreachable" in texts(at)
    assert api_down in texts(at)


def test_wrong_token_says_so(backend, monkeypatch):
    monkeypatch.setenv("AIPO_API_TOKEN", "not-the-token")
    at = open_page(ui.RUNS_PAGE)
    assert_clean(at)
    assert "Not authorised" in texts(at) and "HTTP 401" in texts(at)


def test_runs_page_lists_runs_with_latest_win_rates(backend: SeededApi):
    at = open_page(ui.RUNS_PAGE)
    table = at.dataframe[0].value
    assert list(table["name"]) == [r["name"] for r in api_client.list_runs().items]
    assert list(table["name"])[-2:] == ["dpo-baseline", "aipo-smollm2"]
    first = table[table["name"] == "aipo-smollm2"].iloc[0]
    latest = api_client.get_run(1)["latest_evaluation"]
    for column in ("lc_win_rate", "lc_win_rate_se", "win_rate", "win_rate_se", "avg_length"):
        assert first[column] == latest[column], column
    assert first["status"] == "✓ succeeded" and first["judge_label"] == latest["judge_label"]
    assert (first["alpha"], first["lambda_"]) == (0.05, 0.2)
    running = table[table["name"] == "dpo-baseline"].iloc[0]
    assert running["eval_iteration"] == 0 and running["n"] == 40


def test_runs_page_sends_one_request_for_50_runs(backend: SeededApi, sent_requests):
    """The table's win rates come with the run list: no request per run."""
    with backend.session() as session:
        new = [runs.create_run(session, config(f"many-{i}", {"name": "dpo"})) for i in range(50)]
        session.flush()
        for n, run in enumerate(new):
            store_evaluations(session, run.id, policies=1, seed=n, strength=0.1)
        session.commit()
    at = open_page(ui.RUNS_PAGE)
    api_client.clear_cache()
    sent_requests.clear()
    at.run()  # one render of the page, nothing cached
    assert_clean(at)
    table = at.dataframe[0].value
    assert len(table) == 50 and table["lc_win_rate_se"].notna().all()
    paths = [request.url.path for request in sent_requests]
    assert sorted(paths) == ["/api/v1/health", "/api/v1/objectives", "/api/v1/runs"], paths


def test_runs_page_says_why_an_lc_win_rate_is_unavailable(backend: SeededApi):
    with backend.session() as session:
        run = runs.create_run(session, config("few-judgements", {"name": "dpo"}))
        session.flush()
        eval_samples.replace_eval_samples(session, run.id, 0, "alpaca_eval", judged(1, 0.0, n=10))
        session.commit()
    at = open_page(ui.RUNS_PAGE)
    row = at.dataframe[0].value.set_index("name").loc["few-judgements"]
    assert math.isnan(row["lc_win_rate"]) and not math.isnan(row["win_rate_se"])
    assert "too few judgements" in row["lc_unavailable_reason"]


def test_runs_page_filters_by_status(backend: SeededApi):
    at = open_page(ui.RUNS_PAGE)
    at.selectbox[0].select("running").run()
    assert list(at.dataframe[0].value["name"]) == ["dpo-baseline"]
    at.selectbox[0].select("failed").run()
    assert "No runs match these filters." in texts(at)


def test_runs_page_empty_state(empty_backend: SeededApi):
    at = open_page(ui.RUNS_PAGE)
    assert_clean(at)
    assert "No runs yet — launch one." in texts(at)


def test_run_detail_shows_stages_iterations_and_charts(backend: SeededApi):
    at = open_page(ui.RUN_DETAIL_PAGE, run="1")
    assert "#1 aipo-smollm2" in texts(at)
    stages, iterations = at.dataframe[0].value, at.dataframe[1].value
    assert len(stages) == 10 and set(stages["status"]) == {"✓ succeeded"}
    served = api_client.run_iterations(1)["items"]
    assert list(iterations["lc_win_rate"]) == [
        it["evaluations"]["alpaca_eval"]["lc_win_rate"] for it in served
    ]
    assert iterations["lc_win_rate_se"].notna().all()
    assert "lambda_ = 0.2" in texts(at) and "alpha = 0.05" in texts(at)  # the registry's, resolved
    assert "Win rates of θ_{k+1}, ± SE · judge:" in texts(at)  # who judged, on what sample
    assert {"wr_len", "rewards", "s_ref", "weights", "len_logp", "len_hist"} <= plotly_keys(at)
    assert "started" in texts(at)  # the log of the last stage is shown


def test_run_detail_cancel_changes_the_run(backend: SeededApi):
    at = open_page(ui.RUN_DETAIL_PAGE, run="2")
    button(at, "Cancel").click().run()
    assert_clean(at)
    assert api_client.get_run(2)["status"] == "cancelled"
    assert "cancelled" in texts(at)


def test_run_detail_resume_requeues_a_failed_run(backend: SeededApi):
    backend.set_status(2, "failed", error="train: CUDA out of memory")
    at = open_page(ui.RUN_DETAIL_PAGE, run="2")
    assert "Failed: train: CUDA out of memory" in texts(at)
    assert button(at, "Cancel").disabled
    button(at, "Resume").click().run()
    assert_clean(at)
    assert api_client.get_run(2)["status"] == "queued"


def test_run_detail_clone_opens_the_new_run(backend: SeededApi):
    at = open_page(ui.RUN_DETAIL_PAGE, run="1")
    button(at, "Clone").click().run()
    assert_clean(at)
    assert api_client.get_run(7)["parent_run_id"] == 1
    # The page moves to ?run=7 (AppTest replays its own query params, so only the toast is visible here).
    assert [t.value for t in at.toast] == ["Run #1 cloned into #7."]


def test_compare_overlays_runs_and_draws_the_sweep_heatmap(backend: SeededApi):
    at = open_page(ui.COMPARE_PAGE)
    assert_clean(at)
    assert {"cmp_wr", "cmp_curve", "sweep_heat"} <= plotly_keys(at)
    sweep_table = at.dataframe[-1].value
    children = api_client.get_sweep(1)["runs"]
    served = [r["latest_evaluation"] for r in children]
    assert sorted(sweep_table["LC win rate (%)"]) == sorted(
        derived.rate_text(e["lc_win_rate"], e["lc_win_rate_se"], e["lc_unavailable_reason"]) for e in served
    )
    assert all(" ± " in text for text in sweep_table["LC win rate (%)"])  # every rate with its SE
    assert len(sweep_table) == 4
    heatmap = next(c for c in at.get("plotly_chart") if c.key == "sweep_heat")
    (cells,) = json.loads(heatmap.proto.spec)["data"]
    assert any(" ± " in text for row in cells["text"] for text in row)  # cells read "rate ± SE"


def test_pairs_page_filters_by_agreement_and_text(backend: SeededApi):
    at = open_page(ui.PAIRS_PAGE, run="1")
    page = texts(at)
    assert "Name three primes." in page and "Pairs 1–6 of 6" in page
    agreement = next(s for s in at.selectbox if s.label == "Judge / reference agreement")
    agreement.select("reference disagrees (s_ref ≤ 0)").run()
    page = texts(at)
    assert "Pairs 1–2 of 2" in page
    assert "Write a haiku about rain." in page and "Name three primes." not in page
    at.text_input[0].input("synonym").run()
    assert "Pairs 1–1 of 1" in texts(at)


def test_pairs_page_paginates_with_cursors(backend: SeededApi):
    extra = [
        {**record, "id": f"x-{n}", "prompt": [{"role": "user", "content": f"Extra prompt {n}"}]}
        for n, (_, record) in enumerate(pair_records())
    ]
    with backend.session() as session:
        pairs.replace_pairs(session, 1, 1, [r for i, r in pair_records() if i == 1] + extra)
        session.commit()
    at = open_page(ui.PAIRS_PAGE, run="1")
    next(s for s in at.selectbox if s.label == "Per page").select(10).run()
    assert "Pairs 1–10 of 12" in texts(at) and button(at, "Previous").disabled
    button(at, "Next").click().run()
    page = texts(at)
    assert "Pairs 11–12 of 12" in page and "Extra prompt 5" in page and "Name three primes." not in page
    assert button(at, "Next").disabled
    button(at, "Previous").click().run()
    assert "Pairs 1–10 of 12" in texts(at)


def test_launch_form_sends_the_config(backend: SeededApi, sent_requests):
    at = open_page(ui.LAUNCH_PAGE)
    at.text_input[0].input("my-aipo-run")
    button(at, "Launch run").click().run()
    assert_clean(at)
    (sent,) = [
        json.loads(r.content) for r in sent_requests if (r.method, r.url.path) == ("POST", "/api/v1/runs")
    ]
    assert api_client.get_run(7)["name"] == "my-aipo-run"
    assert sent["name"] == "my-aipo-run"
    assert sent["objective"] == {"name": "aipo", "beta": 0.1, "alpha": 0.05, "lambda_": 0.2}
    assert "launched" in texts(at)


def test_launch_yaml_shows_422_field_errors_inline(backend: SeededApi):
    at = open_page(ui.LAUNCH_PAGE)
    at.text_area(key="yaml_text").input(
        "name: x\nmodel: tiny-random-llama\nobjective: {name: dpo, alpha: 0.1}\n"
    )
    button(at, "Launch from YAML").click().run()
    assert_clean(at)
    assert api_client.list_runs().total == 6  # nothing created
    errors = [e.value for e in at.error]
    assert any("`objective`" in e and "alpha" in e for e in errors), errors


def test_launch_yaml_syntax_error_is_local(backend: SeededApi):
    at = open_page(ui.LAUNCH_PAGE)
    at.text_area(key="yaml_text").input("name: [unclosed\n")
    button(at, "Launch from YAML").click().run()
    assert_clean(at)
    assert any("not valid YAML (line" in e.value for e in at.error)


def test_launch_prefills_from_a_run(backend: SeededApi):
    at = open_page(ui.LAUNCH_PAGE, **{"from": "2"})
    assert "Starting from the config of run #2." in texts(at)
    assert "name: dpo-baseline" in at.text_area(key="yaml_text").value


def test_launch_form_shows_field_errors_of_the_api(backend: SeededApi):
    at = open_page(ui.LAUNCH_PAGE)
    next(n for n in at.number_input if n.label == "Epochs").set_value(0.0)
    button(at, "Launch run").click().run()
    assert_clean(at)
    assert api_client.list_runs().total == 6  # nothing created
    errors = [e.value for e in at.error]
    # Once in the summary at the top of the form, once under the Training section.
    assert sum("`training.epochs`" in e and "greater than 0" in e for e in errors) == 2, errors


def test_launch_sweep_creates_one_run_per_grid_point(backend: SeededApi):
    at = open_page(ui.LAUNCH_PAGE)
    button(at, "Launch sweep").click().run()
    assert_clean(at)
    assert len(api_client.get_sweep(2)["grid"]["objective.alpha"]) == 3
    assert "created with 6 runs" in texts(at)


def test_a_failing_page_shows_a_message_not_a_traceback(backend, monkeypatch):
    def broken(run_id):
        raise KeyError("secret internal detail")

    monkeypatch.setattr("dashboard.api_client.run_iterations", broken)  # simulate a bug in a page's data path
    at = open_page(ui.RUN_DETAIL_PAGE, run="1")
    assert not at.exception
    page = texts(at)
    assert ui.UNEXPECTED_ERROR in page and "KeyError" in page
    assert "secret internal detail" not in page
