"""Policy retention: exactly the right `iter_k/policy` folders go, never one a stage still needs."""

import json

import pytest

from aipo_core import artifacts
from aipo_core.config import RunConfig
from aipo_core.retention import POLICIES_FILE, prune_policies, still_needed


def config(iterations=4, keep="last", best=True, benchmarks=("alpaca_eval",)) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "r",
            "model": "tiny-random-llama",
            "iterations": iterations,
            "training": {"keep_policies": keep, "keep_best_policy": best},
            "evaluation": {"benchmarks": list(benchmarks)},
        }
    )


def finish(root, k, *, lc=None, win=50.0, evaluated=True):
    """Iteration k as the pipeline leaves it: policy/ written, train (and evaluate) marked done."""
    folder = artifacts.iteration_dir(root, "r", k)
    (folder / "policy").mkdir(parents=True)
    (folder / "policy" / "model.safetensors").write_bytes(b"weights")
    artifacts.write_json_atomic(folder / "stage_train.json", {})
    if evaluated:
        metrics = {"alpaca_eval/win_rate": win, "alpaca_eval/lc_win_rate": lc}
        artifacts.write_json_atomic(folder / "stage_evaluate.json", metrics)


def policies(root) -> list[int]:
    return [k for k in range(10) if (artifacts.iteration_dir(root, "r", k) / "policy").is_dir()]


def test_default_keeps_the_last_and_the_best_by_lc(tmp_path):
    for k, lc in enumerate([10.0, 30.0, 20.0, 15.0]):
        finish(tmp_path, k, lc=lc)
    decision = prune_policies(tmp_path, "r", config())
    assert policies(tmp_path) == [1, 3]
    assert (decision.deleted, decision.best, decision.metric) == ([0, 2], 1, "alpaca_eval/lc_win_rate")
    recorded = json.loads((artifacts.run_dir(tmp_path, "r") / POLICIES_FILE).read_text())
    assert recorded["kept"] == [1, 3] and recorded["deleted"] == [0, 2] and recorded["notes"] == []


def test_raw_win_rate_decides_when_any_lc_is_missing_and_says_so(tmp_path):
    for k, (lc, win) in enumerate([(10.0, 60.0), (None, 40.0), (30.0, 50.0), (5.0, 45.0)]):
        finish(tmp_path, k, lc=lc, win=win)
    decision = prune_policies(tmp_path, "r", config())
    assert policies(tmp_path) == [0, 3] and decision.metric == "alpaca_eval/win_rate"
    assert decision.notes == ["best policy chosen by raw win rate: no LC win rate for iteration(s) [1]"]


@pytest.mark.parametrize(
    ("keep", "best", "kept"),
    [("all", True, [0, 1, 2, 3]), (2, False, [2, 3]), (2, True, [0, 2, 3]), ("last", False, [3])],
)
def test_keep_policies_settings(tmp_path, keep, best, kept):
    for k, lc in enumerate([40.0, 10.0, 20.0, 15.0]):
        finish(tmp_path, k, lc=lc)
    prune_policies(tmp_path, "r", config(keep=keep, best=best))
    assert policies(tmp_path) == kept


def test_a_policy_the_next_iteration_still_trains_from_is_kept(tmp_path):
    """iter_1/policy is θ_2, read by iteration 2's train; its retry after a crash needs it."""
    for k in range(3):
        finish(tmp_path, k, lc=float(k), evaluated=k < 2)
    (artifacts.iteration_dir(tmp_path, "r", 2) / "stage_train.json").unlink()  # crashed before its marker
    assert still_needed(artifacts.run_dir(tmp_path, "r"), 1, iterations=4)
    prune_policies(tmp_path, "r", config(best=False))
    assert policies(tmp_path) == [1, 2]


def test_a_policy_whose_own_evaluation_is_pending_is_kept(tmp_path):
    finish(tmp_path, 0, lc=50.0, evaluated=False)
    finish(tmp_path, 1, lc=10.0)
    prune_policies(tmp_path, "r", config(best=False))
    assert policies(tmp_path) == [0, 1]


def test_pruning_is_idempotent_and_clears_an_interrupted_removal(tmp_path):
    for k in range(3):
        finish(tmp_path, k, lc=float(k))
    leftover = artifacts.iteration_dir(tmp_path, "r", 0) / ".policy.deleting"
    leftover.mkdir()
    prune_policies(tmp_path, "r", config(iterations=3))
    assert not leftover.exists() and policies(tmp_path) == [2]
    again = prune_policies(tmp_path, "r", config(iterations=3))
    assert again.deleted == [] and again.kept == [2]
    recorded = json.loads((artifacts.run_dir(tmp_path, "r") / POLICIES_FILE).read_text())
    assert recorded["deleted"] == [0, 1]


def test_no_benchmark_means_no_best_only_the_newest(tmp_path):
    for k in range(3):
        finish(tmp_path, k)
    prune_policies(tmp_path, "r", config(iterations=3, benchmarks=()))
    assert policies(tmp_path) == [2]
