"""Lineage, uncertainty and length-exploitation views (dashboard/lineage.py and the pages that use
it), rendered by streamlit's AppTest against the real backend (backend.app.create_app on SQLite,
seeded through the store functions, served by uvicorn on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from aipo_core import artifacts
from backend.app import create_app
from backend.db import dispose_engines, get_sessionmaker
from backend.migrate import upgrade
from backend.store import eval_samples, pairs, runs
from dashboard import api_client, ui
from tests.backend.conftest import TOKEN, make_settings, serve, small_config
from tests.dashboard.test_pages import assert_clean, open_page, plotly_keys, texts

PROMPTS = 80


@dataclass
class Seeded:
    aipo: int
    dpo: int
    queued: int  # nothing evaluated yet


def _evaluation(rng: np.random.Generator, win: float, length: float) -> list[dict]:
    """PROMPTS judged answers: wins with probability `win`, answers about `length` chars long."""
    chars = rng.normal(length, 40, PROMPTS).clip(20).round()
    wins = rng.random(PROMPTS) < win
    return [
        {"id": str(i), "instruction": f"question {i}", "output": f"answer {i} of {length:.0f} chars",
         "baseline_output": f"baseline {i}", "preference": 2.0 if w else 1.0, "output_chars": int(c),
         "baseline_chars": 400, "output_tokens": int(c) // 4}
        for i, (w, c) in enumerate(zip(wins, chars, strict=True))
    ]  # fmt: skip


def _seed(database_url: str, home: Path) -> Seeded:
    rng = np.random.default_rng(0)
    with get_sessionmaker(database_url)() as session:
        aipo = runs.create_run(
            session, small_config(name="aipo-run", evaluation={"limit": PROMPTS, "seed": 3})
        )
        dpo = runs.create_run(
            session,
            small_config(name="dpo-run", objective={"name": "dpo", "beta": 0.1}, evaluation={"seed": 3}),
        )
        queued = runs.create_run(session, small_config(name="queued-run"))
        session.flush()
        # AIPO: same length, more wins; DPO: 60% longer answers, win rate flat (length exploitation).
        for run, plan in (
            (aipo, [(0.3, 400), (0.5, 410), (0.7, 420)]),
            (dpo, [(0.3, 400), (0.3, 520), (0.3, 640)]),
        ):
            for j, (win, length) in enumerate(plan):
                evaluated, iteration = ("base", 0) if j == 0 else ("policy", j - 1)
                records = _evaluation(rng, win, length)
                eval_samples.replace_eval_samples(
                    session, run.id, iteration, "alpaca_eval", records, evaluated=evaluated
                )
        pair = {
            "id": "p-0",
            "prompt": "Name a fruit.",
            "chosen": "A lemon, sour and bright.",
            "rejected": "Cars.",
            "ref_chosen_logps": -12.0,
            "ref_rejected_logps": -7.5,
        }
        pairs.replace_pairs(session, aipo.id, 0, [pair])
        session.commit()
        ids = Seeded(aipo=aipo.id, dpo=dpo.id, queued=queued.id)
    folder = artifacts.iteration_dir(home, str(ids.aipo), 0)
    candidates = ["An orange.", "A lemon, sour and bright.", "Cars.", "Bana"]
    artifacts.write_jsonl_atomic(
        folder / "candidates.jsonl",
        [{"id": "p-0", "instruction": "Name a fruit.", "candidates": candidates, "lengths": [4, 9, 3, 2],
          "finished": [True, True, True, False]}],
    )  # fmt: skip
    artifacts.write_jsonl_atomic(
        folder / "candidate_scores.jsonl",
        [{"id": "p-0", "scores": [0.2, 0.9, -1.5, None], "chosen": 1, "rejected": 2, "outcome": "pair"}],
    )
    return ids


@pytest.fixture
def lineage_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Seeded]:
    """The real API on a SQLite database seeded for these views (a length-exploiting DPO run, a
    prompt's candidates with scores), and the dashboard's env pointing at it. Its own data, not
    conftest's `backend`: the shared seed has no θ_0 → θ_2 length growth nor candidate files."""
    database_url = f"sqlite:///{tmp_path / 'aipo.db'}"
    upgrade(database_url)
    seeded = _seed(database_url, tmp_path)
    with serve(create_app(make_settings(tmp_path, database_url))) as url:
        monkeypatch.setenv("AIPO_API_URL", url)
        monkeypatch.setenv("AIPO_DASHBOARD_AUTH", "server-token")
        monkeypatch.setenv("AIPO_API_TOKEN", TOKEN)
        monkeypatch.setenv("AIPO_HOME", str(tmp_path))
        api_client.clear_cache()
        yield seeded
    api_client.clear_cache()
    dispose_engines()


def test_run_detail_shows_rates_with_se_judge_protocol_and_length_view(lineage_backend: Seeded) -> None:
    at = open_page(ui.RUN_DETAIL_PAGE, run=str(lineage_backend.aipo))
    assert_clean(at)
    iterations = at.dataframe[1].value
    assert iterations["win_rate_se"].notna().all() and iterations["lc_win_rate_se"].notna().all()
    assert "Win rates of θ_{k+1}, ± SE · judge: base model θ_0 (tiny-random-llama), fixed" in texts(at)
    assert {"wr_len", "len_exploit"} <= plotly_keys(at)
    assert (
        f"judge: base model θ_0 (tiny-random-llama), fixed · alpaca_eval: {PROMPTS} prompts judged"
        in texts(at)
    )
    assert f"a seeded sample of {PROMPTS}, evaluation seed 3" in texts(at)
    chart = next(c for c in at.get("plotly_chart") if c.key == "wr_len")
    assert "error_y" in chart.proto.spec and "1.96" in chart.proto.spec
    # Eval samples tab: one prompt across this run's θ_0, θ_1, θ_2 with the judge's verdicts.
    assert "question 0" in texts(at) and "answer 0 of 410 chars" in texts(at)
    assert "**θ_2** ·" in texts(at) and "baseline 0" in texts(at)


def test_run_detail_flags_length_growth_without_lc_gain(lineage_backend: Seeded) -> None:
    at = open_page(ui.RUN_DETAIL_PAGE, run=str(lineage_backend.dpo))
    assert_clean(at)
    warnings = [w.value for w in at.warning]
    assert any("dpo-run θ_2: answers +60% longer than θ_0" in w for w in warnings), warnings
    assert not any("aipo-run" in w for w in warnings)


def test_compare_marks_noise_and_shows_a_prompt_across_runs(lineage_backend: Seeded) -> None:
    at = open_page(
        ui.COMPARE_PAGE, runs=f"{lineage_backend.aipo},{lineage_backend.dpo},{lineage_backend.queued}"
    )
    assert_clean(at)
    assert {"cmp_wr", "cmp_paired", "cmp_len_exploit"} <= plotly_keys(at)
    table = next(d.value for d in at.dataframe if "Model" in d.value.columns)
    assert len(table) == 6 and all(" ± " in text for text in table["Win rate (%)"])  # 2 runs × θ_0..θ_2
    assert not any("lc_win_rate" in d.value.columns for d in at.dataframe)  # no bare rates
    differences = next(d.value for d in at.dataframe if "Shared prompts" in d.value.columns)
    assert list(differences["Shared prompts"]) == [PROMPTS, 0, 0]
    assert (
        differences["Difference (points)"].iloc[1]
        == f"n/a (run {lineage_backend.queued} has no evaluation on this benchmark)"
    )
    assert differences["Verdict"].iloc[0] in ("within noise", "beyond noise")
    assert " ± " in differences["Difference (points)"].iloc[0]
    assert f"#{lineage_backend.aipo} aipo-run" in texts(at) and f"#{lineage_backend.dpo} dpo-run" in texts(at)
    assert "answer 0 of 640 chars" in texts(at)  # DPO's θ_2 next to AIPO's answers


def test_pairs_page_opens_every_candidate_of_a_pair(lineage_backend: Seeded) -> None:
    at = open_page(ui.PAIRS_PAGE, run=str(lineage_backend.aipo))
    assert_clean(at)
    assert "Candidate 0" not in texts(at)  # fetched only when opened
    at.toggle(key="candidates_0_p-0").set_value(True).run()
    assert_clean(at)
    shown = texts(at)
    assert "**Candidate 1** :green[**chosen**] · score 0.9 · 9 tokens" in shown
    assert "**Candidate 3**  · score – · 2 tokens · 4 chars · :orange[cut off at max_new_tokens]" in shown
    assert "log πref -12.0" in shown and "Outcome: **pair**" in shown


def test_an_unknown_prompt_is_not_found_with_its_id(lineage_backend: Seeded) -> None:
    with pytest.raises(api_client.ApiNotFound, match="'nope' in the candidates of iteration 0"):
        api_client.prompt_candidates(lineage_backend.aipo, 0, "nope")


def test_run_detail_of_a_run_not_yet_evaluated_renders(lineage_backend: Seeded) -> None:
    at = open_page(ui.RUN_DETAIL_PAGE, run=str(lineage_backend.queued))
    assert_clean(at)
    assert at.dataframe[1].value["lc_win_rate"].isna().all()
    assert "len_exploit" not in plotly_keys(at)
