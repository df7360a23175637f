"""/runs/{id}/iterations, /stages (live progress) and a stage's log over HTTP."""

from __future__ import annotations

import numpy as np

from backend.db import get_sessionmaker
from backend.store import eval_samples, metrics, pairs, stages
from tests.backend.conftest import Api
from tests.backend.store.test_pairs import pair_record


def test_stages_show_live_progress(api: Api) -> None:
    run = api.create_run(iterations=2)
    stage_id = api.launcher.sent[-1][1]
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        stages.claim_stage(session, stage_id)
        stages.heartbeat(session, stage_id, progress=0.4, message="12/30 instructions")
        session.commit()
    items = api.client.get(f"/api/v1/runs/{run['id']}/stages").json()["items"]
    assert len(items) == 10
    assert items[0]["status"] == "running" and items[0]["progress"] == 0.4
    assert items[0]["message"] == "12/30 instructions" and items[0]["heartbeat_at"] is not None
    assert {s["status"] for s in items[1:]} == {"pending"}
    only_1 = api.client.get(f"/api/v1/runs/{run['id']}/stages", params={"iteration": 1}).json()["items"]
    assert [s["name"] for s in only_1] == ["self_instruct", "generate", "rank", "train", "evaluate"]
    assert api.client.get(f"/api/v1/runs/{run['id']}").json()["status"] == "running"


def test_iterations_carry_eval_metrics_and_pair_stats(api: Api) -> None:
    run = api.create_run(iterations=2)
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        metrics.ingest_metrics(
            session,
            run["id"],
            [{"iteration": 0, "stage": "evaluate", "key": "alpaca_eval/win_rate", "step": 0, "value": 11.5}],
        )
        pairs.replace_pairs(session, run["id"], 0, [pair_record(i, s_ref=1.0) for i in range(4)])
        session.commit()
    items = api.client.get(f"/api/v1/runs/{run['id']}/iterations").json()["items"]
    assert [it["index"] for it in items] == [0, 1]
    assert items[0]["eval_metrics"] == {"alpaca_eval/win_rate": 11.5}
    assert items[0]["pair_stats"]["pairs"] == 4 and items[0]["pair_stats"]["agreement_rate"] == 1.0
    assert items[0]["status"] == "queued" and items[0]["stages"]["self_instruct"] == "queued"
    assert items[1]["status"] == "pending" and items[1]["pair_stats"] is None


def _judged(rng: np.random.Generator, strength: float, n: int = 40) -> list[dict]:
    """n eval records against AlpacaEval baselines: shorter answers, wins more likely when longer."""
    records = []
    for i in range(n):
        baseline_chars = int(rng.integers(800, 2500))
        output_chars = int(baseline_chars * rng.uniform(0.3, 1.3))
        length = np.tanh((output_chars - baseline_chars) / 600)
        p_win = 1.0 / (1.0 + np.exp(-(strength + 1.0 * length)))
        records.append(
            {
                "id": str(10 * i),
                "instruction": f"q{i}",
                "output": "o" * output_chars,
                "baseline_output": "b" * baseline_chars,
                "preference": 2.0 if rng.random() < p_win else 1.0,
                "output_chars": output_chars,
                "baseline_chars": baseline_chars,
                "output_tokens": 10,
            }
        )
    return records


def _store_evaluations(api: Api, run_id: int, evaluations: dict[tuple[str, int], list[dict]]) -> None:
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        for (evaluated, iteration), records in evaluations.items():
            eval_samples.replace_eval_samples(
                session, run_id, iteration, "alpaca_eval", records, evaluated=evaluated
            )
            prefix = "base/" if evaluated == "base" else ""
            metrics.ingest_metrics(
                session,
                run_id,
                [{"iteration": iteration, "stage": "evaluate", "key": f"{prefix}alpaca_eval/n", "step": 0,
                  "value": len(records)}],
            )  # fmt: skip
        session.commit()


def test_iterations_serve_the_base_model_and_run_level_lc(api: Api) -> None:
    """θ_0 is served as `base_evaluations` (not an iteration); one slope for θ_0, θ_1, θ_2."""
    run = api.create_run(iterations=2)
    rng = np.random.default_rng(0)
    stored = {
        ("base", 0): _judged(rng, -0.5),
        ("policy", 0): _judged(rng, 0.0),
        ("policy", 1): _judged(rng, 0.5),
    }
    _store_evaluations(api, run["id"], stored)

    body = api.client.get(f"/api/v1/runs/{run['id']}/iterations").json()
    assert [it["index"] for it in body["items"]] == [0, 1]
    assert body["judge_label"] == "base model θ_0 (tiny-random-llama), fixed" and body["self_judged"] is False
    base = body["base_evaluations"]["alpaca_eval"]
    first, second = (it["evaluations"]["alpaca_eval"] for it in body["items"])
    assert (base["evaluated"], base["iteration"], base["policy_index"]) == ("base", None, 0)
    assert (first["evaluated"], first["iteration"], first["policy_index"]) == ("policy", 0, 1)
    assert second["policy_index"] == 2
    for ev, records in zip((base, first, second), stored.values(), strict=True):
        assert ev["judge"] == "llm_judge:tiny-random-llama" and ev["self_judged"] is False
        assert ev["prompt_ids"] == [r["id"] for r in records] and ev["n"] == 40
        assert ev["win_rate"] == 100.0 * sum(r["preference"] - 1 for r in records) / 40
        assert ev["win_rate_se"] > 0 and ev["baseline_model"] == "gpt4_1106_preview"
        # 120 judgements by one fixed judge: one slope, estimated from all of them.
        assert ev["slope_source"] == "estimated" and ev["lc_pooled_n"] == 120
        assert ev["lc_win_rate"] is not None and ev["lc_win_rate_se"] > 0
        assert ev["lc_unavailable_reason"] is None
    assert len({(ev["length_slope"], ev["length_slope_se"]) for ev in (base, first, second)}) == 1
    # The flat metrics carry θ_{k+1} only (θ_0's 'base/…' keys are not an iteration's), with the run-level LC.
    flat = body["items"][0]["eval_metrics"]
    assert flat["alpaca_eval/n"] == 40 and not any("base" in key for key in flat)
    assert flat["alpaca_eval/lc_win_rate"] == first["lc_win_rate"]

    # A re-stored evaluation (a retried stage) is read at once: the summary is never stale.
    redone = [{**r, "preference": 2.0 if i % 2 else 1.0} for i, r in enumerate(stored["policy", 1])]
    _store_evaluations(api, run["id"], {("policy", 1): redone})
    again = api.client.get(f"/api/v1/runs/{run['id']}/iterations").json()
    assert again["items"][1]["evaluations"]["alpaca_eval"]["win_rate"] == 50.0
    assert again["base_evaluations"]["alpaca_eval"]["length_slope"] != base["length_slope"]


def test_self_judged_evaluations_are_labelled_and_not_pooled(api: Api) -> None:
    """judge.model: policy: every θ_j judged by itself, so no shared slope and a clear label."""
    run = api.create_run(iterations=1, evaluation={"judge": {"kind": "llm_judge", "model": "policy"}})
    rng = np.random.default_rng(1)
    _store_evaluations(api, run["id"], {("base", 0): _judged(rng, 0.0), ("policy", 0): _judged(rng, 0.3)})
    body = api.client.get(f"/api/v1/runs/{run['id']}/iterations").json()
    assert body["judge_label"] == "self-judged (changes every iteration)" and body["self_judged"] is True
    base = body["base_evaluations"]["alpaca_eval"]
    first = body["items"][0]["evaluations"]["alpaca_eval"]
    assert (base["judge"], first["judge"]) == ("llm_judge:policy θ_0", "llm_judge:policy θ_1")
    for ev in (base, first):
        assert ev["self_judged"] is True and ev["judge_label"] == "self-judged (changes every iteration)"
        # 40 judgements by a judge seen once: too few to estimate its length slope.
        assert ev["lc_win_rate"] is None and ev["lc_win_rate_se"] is None
        assert "too few judgements" in ev["lc_unavailable_reason"] and ev["win_rate"] is not None
    assert body["items"][0]["eval_metrics"]["alpaca_eval/lc_win_rate"] is None


def test_stage_log_is_served_from_the_worker_log_file(api: Api) -> None:
    run = api.create_run()
    stage_id = api.launcher.sent[-1][1]
    url = f"/api/v1/runs/{run['id']}/stages/{stage_id}/log"
    assert api.client.get(url).status_code == 404  # nothing logged yet
    log = stages.stage_log_path(api.settings.resolved_artifact_root, run["id"], 0, "self_instruct")
    log.parent.mkdir(parents=True)
    log.write_text("line 1\nline 2\n")
    response = api.client.get(url)
    assert response.status_code == 200 and response.text == "line 1\nline 2\n"
    assert response.headers["content-type"].startswith("text/plain")
    assert api.client.get(url, params={"tail_bytes": 7}).text == "line 2\n"
    other = api.create_run()
    assert api.client.get(f"/api/v1/runs/{other['id']}/stages/{stage_id}/log").status_code == 404
