"""/runs/{id}/iterations/{k}/prompts/{prompt_id}/candidates, /lineage/eval-samples and
/comparisons/paired over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aipo_core import artifacts
from aipo_core.eval_summary import SELF_JUDGED_LABEL
from backend.db import get_sessionmaker
from backend.schemas import MAX_COMPARED_RUNS
from backend.store import eval_samples, pairs
from tests.backend.conftest import Api

CANDIDATES = {
    "id": "p-0",
    "instruction": "Name a fruit.",
    "prompt": [{"role": "user", "content": "Name a fruit."}],
    "candidates": ["An orange.", "Ban", "A lemon, sour and bright.", "Cars."],
    "lengths": [4, 2, 9, 3],
    "finished": [True, False, True, True],
}
SCORES = {"id": "p-0", "scores": [0.2, None, 0.9, -1.5], "chosen": 2, "rejected": 3, "outcome": "pair"}
PAIR = {
    "id": "p-0",
    "prompt": CANDIDATES["prompt"],
    "chosen": [{"role": "assistant", "content": "A lemon, sour and bright."}],
    "rejected": [{"role": "assistant", "content": "Cars."}],
    "ref_chosen_logps": -12.0,
    "ref_rejected_logps": -7.5,
}


def write_iteration(root: Path, run_id: int, k: int, name: str, records: list[dict[str, Any]]) -> None:
    artifacts.write_jsonl_atomic(artifacts.iteration_dir(root, str(run_id), k) / name, records)


def candidates_url(run_id: int, prompt_id: str = "p-0", iteration: int = 0) -> str:
    return f"/api/v1/runs/{run_id}/iterations/{iteration}/prompts/{prompt_id}/candidates"


def test_every_candidate_of_a_pairs_prompt_with_scores_and_the_choice(api: Api) -> None:
    run_id = api.create_run(ranker={"kind": "llm_judge", "model": "policy"})["id"]
    other = {**CANDIDATES, "id": "p-1", "candidates": ["x", "y"], "lengths": [1, 1], "finished": [True, True]}
    write_iteration(api.home, run_id, 0, "candidates.jsonl", [other, CANDIDATES])
    write_iteration(api.home, run_id, 0, "candidate_scores.jsonl", [SCORES])
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        pairs.replace_pairs(session, run_id, 0, [PAIR])
        session.commit()
    body = api.client.get(candidates_url(run_id)).json()
    assert body["instruction"] == "Name a fruit." and body["outcome"] == "pair"
    assert body["ranker"].startswith("llm_judge:policy") and "highest" in body["selection_rule"]
    assert body["s_ref"] == -4.5 and body["pair_id"] is not None
    got = [
        (c["index"], c["score"], c["length"], c["finished"], c["role"], c["ref_logps"])
        for c in body["candidates"]
    ]
    assert got == [
        (0, 0.2, 4, True, None, None),
        (1, None, 2, False, None, None),
        (2, 0.9, 9, True, "chosen", -12.0),
        (3, -1.5, 3, True, "rejected", -7.5),
    ]
    assert (
        body["candidates"][2]["text"] == "A lemon, sour and bright." and body["candidates"][2]["chars"] == 25
    )
    # p-1 is in candidates.jsonl but not in the scores: fewer than two finished candidates.
    assert api.client.get(candidates_url(run_id, "p-1")).json()["outcome"] == "dropped_unfinished"


def test_candidates_without_recorded_scores_say_so(api: Api) -> None:
    run_id = api.create_run()["id"]
    write_iteration(api.home, run_id, 1, "candidates.jsonl", [CANDIDATES])
    body = api.client.get(candidates_url(run_id, iteration=1)).json()
    assert body["outcome"] is None and body["scores_unavailable_reason"]
    assert [c["score"] for c in body["candidates"]] == [None] * 4 and body["pair_id"] is None


def test_unknown_prompt_iteration_or_run_is_404(api: Api) -> None:
    run_id = api.create_run()["id"]
    write_iteration(api.home, run_id, 0, "candidates.jsonl", [CANDIDATES])
    for url in (candidates_url(run_id, "p-9"), candidates_url(run_id, iteration=3), candidates_url(999_999)):
        response = api.client.get(url)
        assert response.status_code == 404, url
    assert "p-9" in api.client.get(candidates_url(run_id, "p-9")).json()["detail"]
    assert api.client.get(candidates_url(run_id, "x" * 201)).status_code == 422


def test_a_symlink_out_of_the_run_folder_is_refused(api: Api, tmp_path_factory) -> None:
    run_id = api.create_run()["id"]
    outside = tmp_path_factory.mktemp("outside") / "candidates.jsonl"
    artifacts.write_jsonl_atomic(outside, [CANDIDATES])
    folder = artifacts.iteration_dir(api.home, str(run_id), 0)
    folder.mkdir(parents=True)
    (folder / "candidates.jsonl").symlink_to(outside)
    assert api.client.get(candidates_url(run_id)).status_code == 403


def seed_evaluations(api: Api, run_id: int, preferences: dict[str, list[float | None]]) -> None:
    """θ_0 (key "base") and θ_{k+1} (key str(k)) answers to prompts "0", "1", …."""
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        for key, prefs in preferences.items():
            records = [
                {"id": str(i), "instruction": f"q{i}", "output": f"{key} answer {i}",
                 "baseline_output": f"gpt {i}", "preference": p, "output_chars": 10 + i, "baseline_chars": 20}
                for i, p in enumerate(prefs)
            ]  # fmt: skip
            evaluated, iteration = ("base", 0) if key == "base" else ("policy", int(key))
            eval_samples.replace_eval_samples(
                session, run_id, iteration, "alpaca_eval", records, evaluated=evaluated
            )
        session.commit()


def test_an_eval_prompt_across_iterations_and_runs(api: Api) -> None:
    a = api.create_run(evaluation={"limit": 3, "seed": 7})["id"]
    b = api.create_run(evaluation={"judge": {"kind": "llm_judge", "model": "policy"}})["id"]
    seed_evaluations(api, a, {"base": [1.0, 2.0, 1.5], "0": [2.0, 2.0, 1.0], "1": [1.5, None, 1.0]})
    seed_evaluations(api, b, {"0": [1.0, 1.0, 1.0]})
    params = {"benchmark": "alpaca_eval", "prompt_id": "0", "run_ids": [b, a]}
    body = api.client.get("/api/v1/lineage/eval-samples", params=params).json()
    assert body["instruction"] == "q0" and body["baseline_output"] == "gpt 0"
    assert body["baseline_model"] == "gpt4_1106_preview"
    assert [r["run_id"] for r in body["runs"]] == [b, a]
    run_a = body["runs"][1]
    assert (run_a["sample_size"], run_a["eval_seed"], run_a["self_judged"]) == (3, 7, False)
    assert [(o["policy_index"], o["output"], o["verdict"]) for o in run_a["outputs"]] == [
        (0, "base answer 0", "baseline preferred"),
        (1, "0 answer 0", "model preferred"),
        (2, "1 answer 0", "tie"),
    ]
    assert body["runs"][0]["judge_label"] == SELF_JUDGED_LABEL
    assert body["runs"][0]["outputs"][0]["judge"] == "llm_judge:policy θ_1"
    missing = api.client.get("/api/v1/lineage/eval-samples", params=params | {"prompt_id": "nope"})
    assert missing.status_code == 404


def test_run_lists_are_capped_and_named_in_the_error(api: Api) -> None:
    ids = list(range(1, MAX_COMPARED_RUNS + 2))
    for path, extra in (
        ("/api/v1/lineage/eval-samples", {"prompt_id": "0"}),
        ("/api/v1/comparisons/paired", {}),
    ):
        response = api.client.get(path, params={"benchmark": "alpaca_eval", "run_ids": ids, **extra})
        assert response.status_code == 422, path
        assert [e["loc"] for e in response.json()["detail"]] == [["query", "run_ids"]]
        assert api.client.get(path, params={"benchmark": "alpaca_eval", **extra}).status_code == 422
    unknown = api.client.get(
        "/api/v1/comparisons/paired", params={"benchmark": "alpaca_eval", "run_ids": [999_999]}
    )
    assert unknown.status_code == 404


def test_paired_difference_between_runs_on_shared_prompts(api: Api) -> None:
    a, b, c = (api.create_run()["id"] for _ in range(3))
    seed_evaluations(api, a, {"base": [1.0] * 4, "0": [1.0, 1.0, 2.0, 1.0]})
    # b's latest (iteration 1) beats a's latest on prompts 0 and 1 and ties 3: d = 100, 100, 0, 50.
    seed_evaluations(api, b, {"0": [1.0] * 4, "1": [2.0, 2.0, 2.0, 1.5]})
    params = {"benchmark": "alpaca_eval", "run_ids": [a, b, c]}
    items = api.client.get("/api/v1/comparisons/paired", params=params).json()["items"]
    assert [(i["run_a"], i["run_b"]) for i in items] == [(a, b), (a, c), (b, c)]
    ab = items[0]
    assert (ab["policy_index_a"], ab["policy_index_b"], ab["n_shared"]) == (1, 2, 4)
    assert ab["difference"] == 62.5 and abs(ab["difference_se"] - 23.93567) < 1e-4
    assert ab["within_noise"] is False and ab["judge_a"] == ab["judge_b"]
    assert items[1]["difference"] is None and f"run {c}" in items[1]["unavailable_reason"]


def test_self_judged_runs_are_never_paired(api: Api) -> None:
    """Two self-judging runs at the same θ_j carry the same judge name, yet different judges."""
    self_judged = {"judge": {"kind": "llm_judge", "model": "policy"}}
    a, b = (api.create_run(evaluation=self_judged)["id"] for _ in range(2))
    for run_id in (a, b):
        seed_evaluations(api, run_id, {"0": [1.0, 2.0, 2.0]})
    params = {"benchmark": "alpaca_eval", "run_ids": [a, b]}
    (item,) = api.client.get("/api/v1/comparisons/paired", params=params).json()["items"]
    assert item["judge_a"] == item["judge_b"] == "llm_judge:policy θ_1"
    assert item["difference"] is None and item["unavailable_reason"].startswith("self-judged")
