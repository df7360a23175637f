"""`aipo study length`: the AIPO paper's length study (Figs. 2, 3 and 6) at toy scale.

DPO and AIPO run side by side from the same base model, with a ranker that prefers longer
responses by a known bonus (`ranker.kind: length_biased`), and are evaluated by a fixed judge
that has no such bonus. The study writes, per objective and per model θ_j, the average response
length and win rate (each with its SE) and the Fig. 6 Spearman correlation of s_ref with the
length gap |y_w| − |y_l| of the pairs that trained it: table.md, table.json and length_study.svg.
docs/length_study.md describes the design and its limits.

Both runs use the project's run machinery (`aipo_core.pipeline.run_stage`, the stages `aipo run
--local` chains) with configs that differ only in the objective. Iteration 0's self_instruct,
generate and rank stages and θ_0's evaluation do not depend on the objective, so the second run
reuses the first run's: both objectives train their first step on the very same pairs from the
very same θ_0, whose evaluation both tables share.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from aipo_cli.svg_chart import Panel, Point, Series, panels_svg
from aipo_core import artifacts
from aipo_core.access import ModelAccess
from aipo_core.config import RunConfig, with_overrides

#: The two objectives compared, with the paper's hyperparameters (Shen et al. 2024, §5).
STUDY_OBJECTIVES: dict[str, dict[str, Any]] = {
    "dpo": {"name": "dpo", "beta": 0.1},
    "aipo": {"name": "aipo", "beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
}
#: Iteration 0's objective-independent stages and the artifact each publishes.
SHARED_STAGES = {"self_instruct": "instructions.jsonl", "generate": "candidates.jsonl", "rank": "pairs.jsonl"}
FIGURE = "length_study.svg"


def bundled_config() -> RunConfig:
    """aipo_cli/configs/length_study.yaml: the default study, sized for a 2-core CPU."""
    text = resources.files("aipo_cli").joinpath("configs/length_study.yaml").read_text(encoding="utf-8")
    return RunConfig.model_validate(yaml.safe_load(text))


def objective_configs(base: RunConfig) -> dict[str, RunConfig]:
    """One config per studied objective: `base` with only its objective (and name) replaced."""
    return {
        label: with_overrides(base, {"name": f"{base.name}-{label}", "objective": objective})
        for label, objective in STUDY_OBJECTIVES.items()
    }


def share_first_iteration(root: Path, source_run: str, target_run: str, benchmarks: Sequence[str]) -> None:
    """Give `target_run` the objective-independent work of `source_run`'s iteration 0.

    Its self_instruct, generate and rank outputs are copied with their completion markers (last),
    so the target resumes past those stages. θ_0's evaluation (θ_0's greedy answers judged by θ_0
    on the same sample) is copied into the target's in-process evaluate attempt folder, where the
    evaluate stage keeps the evaluations it finds finished (`aipo_core.pipeline.run_stage`), so
    the target evaluates only its own θ_1.
    """
    from aipo_core.eval_summary import BASE_EVALUATION, evaluation_path
    from aipo_core.pipeline import LOCAL_ATTEMPT

    source, target = (
        artifacts.iteration_dir(root, source_run, 0),
        artifacts.iteration_dir(root, target_run, 0),
    )
    for stage, name in SHARED_STAGES.items():
        marker = artifacts.stage_marker_name(stage)
        if artifacts.is_complete(target / marker):
            continue
        if not artifacts.is_complete(source / marker):
            raise FileNotFoundError(f"run {source_run}: iteration 0 has no completed {stage} stage to share")
        artifacts.write_jsonl_atomic(target / name, artifacts.read_jsonl(source / name))
        artifacts.write_json_atomic(target / marker, artifacts.read_json(source / marker))
    if artifacts.is_complete(target / artifacts.stage_marker_name("evaluate")):
        return
    attempt = artifacts.scratch_dir(root, target_run, 0, "evaluate", LOCAL_ATTEMPT)
    for benchmark in benchmarks:
        base = evaluation_path(source, BASE_EVALUATION, benchmark)
        if base.is_file():
            artifacts.write_jsonl_atomic(
                evaluation_path(attempt, BASE_EVALUATION, benchmark), artifacts.read_jsonl(base)
            )


@dataclass
class StudyRun:
    """One objective's run of the study; `seconds` adds up the stages this process ran."""

    objective: str
    run_id: str
    config: RunConfig
    seconds: float = 0.0


def study_runs(base: RunConfig, study_id: str) -> list[StudyRun]:
    """The study's runs (DPO first), named `{study_id}-{objective}`."""
    return [
        StudyRun(objective, f"{study_id}-{objective}", config)
        for objective, config in objective_configs(base).items()
    ]


def run_length_study(
    base: RunConfig,
    *,
    artifact_root: Path,
    study_id: str,
    model_cache_dir: Path | None = None,
    access: ModelAccess | None = None,
    say: Callable[[str], None] = print,
    after_iteration: Callable[[list[StudyRun]], None] | None = None,
) -> list[StudyRun]:
    """Run every objective of `STUDY_OBJECTIVES` on `base`, iteration by iteration (DPO's
    iteration k, then AIPO's, then k + 1), so a study stopped early has both curves equally far.

    Each stage runs through `aipo_core.pipeline.run_stage`, so a re-run with the same
    `study_id` resumes past finished stages. `after_iteration` sees the runs after each round.
    """
    from aipo_core.pipeline import STAGES, run_stage

    runs = study_runs(base, study_id)
    for study_run in runs:
        config_path = artifacts.run_dir(artifact_root, study_run.run_id) / "config.json"
        artifacts.write_json_atomic(config_path, study_run.config.model_dump())
    for k in range(base.iterations):
        for study_run in runs:
            if k == 0 and study_run is not runs[0]:
                benchmarks = base.evaluation.benchmarks
                share_first_iteration(artifact_root, runs[0].run_id, study_run.run_id, benchmarks)
            for stage in STAGES:
                started = time.monotonic()
                run_stage(
                    stage,
                    study_run.config,
                    artifact_root=artifact_root,
                    run_id=study_run.run_id,
                    iteration=k,
                    model_cache_dir=model_cache_dir,
                    access=access,
                )
                took = time.monotonic() - started
                study_run.seconds += took
                say(f"{study_run.objective} iter {k} {stage}: {took:.0f} s")
        if after_iteration is not None:
            after_iteration(runs)
    return runs


# --------------------------------------------------------------------------- table


def mean_and_se(values: Sequence[float]) -> tuple[float | None, float | None]:
    """The mean and its standard error (None where undefined: no value, or one for the SE)."""
    if not values:
        return None, None
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return statistics.fmean(values), se


def _pair_columns(root: Path, run_id: str, k: int, evaluate: dict[str, Any]) -> dict[str, Any]:
    """Iteration k's training pairs: how many, their length gap (tokens) and the Fig. 6 ρ."""
    pairs = artifacts.read_jsonl(artifacts.iteration_dir(root, run_id, k) / "pairs.jsonl")
    gap, gap_se = mean_and_se([float(p["chosen_length"] - p["rejected_length"]) for p in pairs])
    analysis = evaluate.get("pair_analysis", {})
    return {
        "pairs": len(pairs),
        "pair_length_gap": gap,
        "pair_length_gap_se": gap_se,
        "s_ref_length_gap_spearman": analysis.get("s_ref_length_gap_spearman"),
        "s_ref_length_gap_spearman_ci95": [
            analysis.get("s_ref_length_gap_spearman_ci95_low"),
            analysis.get("s_ref_length_gap_spearman_ci95_high"),
        ],
        "s_ref_length_gap_n": analysis.get("s_ref_length_gap_n"),
    }


def study_rows(runs: Sequence[StudyRun], root: Path) -> list[dict[str, Any]]:
    """One row per objective and evaluated model θ_j (θ_0 first), on the first benchmark, from the
    artifacts on disk: every evaluation finished so far, however far the study got."""
    from aipo_core.eval_summary import load_run_evaluations, summarize_evaluations

    rows = []
    for study_run in runs:
        config = study_run.config
        benchmark = config.evaluation.benchmarks[0]
        evaluations = load_run_evaluations(root, study_run.run_id, config)
        by_index = {e.policy_index: e for e in evaluations if e.benchmark == benchmark}
        for summary in summarize_evaluations(evaluations, config):
            if summary.benchmark != benchmark:
                continue
            evaluation = by_index[summary.policy_index]
            tokens, tokens_se = mean_and_se([float(t) for t in evaluation.output_tokens if t is not None])
            chars, chars_se = mean_and_se([float(c) for c in evaluation.output_chars if c is not None])
            row = {
                "objective": study_run.objective,
                "model": f"θ_{summary.policy_index}",
                "policy_index": summary.policy_index,
                "iteration": summary.iteration,
                "avg_tokens": tokens,
                "avg_tokens_se": tokens_se,
                "avg_chars": chars,
                "avg_chars_se": chars_se,
                "n_eval": len(evaluation.prompt_ids),
                **{
                    k: summary.metrics.get(k)
                    for k in (
                        "win_rate",
                        "win_rate_se",
                        "lc_win_rate",
                        "lc_win_rate_se",
                        "lc_unavailable_reason",
                    )
                },
                "judge": summary.judge_label,
            }
            if summary.iteration is not None:
                folder = artifacts.iteration_dir(root, study_run.run_id, summary.iteration)
                evaluate = artifacts.read_json(folder / artifacts.stage_marker_name("evaluate"))
                row |= _pair_columns(root, study_run.run_id, summary.iteration, evaluate)
            rows.append(row)
    return rows


def _pm(value: float | None, se: float | None, spec: str = ".1f") -> str:
    if value is None:
        return "–"
    return format(value, spec) + (f" ± {format(se, spec)}" if se is not None else "")


def _rho(row: dict[str, Any]) -> str:
    rho = row.get("s_ref_length_gap_spearman")
    if rho is None:
        return "–" if row.get("iteration") is None else "n/a"
    low, high = row.get("s_ref_length_gap_spearman_ci95") or [None, None]
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"{rho:.2f}{interval} (n={row.get('s_ref_length_gap_n')})"


MARKDOWN_HEADER = (
    "| objective | model | trained on iter | pairs | pair Δlen (tok, chosen − rejected) "
    "| ρ(s_ref, Δlen) [95% CI] | avg length (tok) | avg length (chars) | win rate % | LC win rate % |"
)


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The study table as Markdown: one line per objective and θ_j, values ± SE."""
    lines = [MARKDOWN_HEADER, "|" + "---|" * MARKDOWN_HEADER.count(" | ") + "---|"]
    for row in rows:
        iteration = row.get("iteration")
        lc = _pm(row.get("lc_win_rate"), row.get("lc_win_rate_se"))
        cells = [
            row["objective"],
            row["model"] + (" (base)" if iteration is None else ""),
            "–" if iteration is None else str(iteration),
            "–" if iteration is None else str(row.get("pairs")),
            _pm(row.get("pair_length_gap"), row.get("pair_length_gap_se")),
            _rho(row),
            _pm(row.get("avg_tokens"), row.get("avg_tokens_se")),
            _pm(row.get("avg_chars"), row.get("avg_chars_se"), ".0f"),
            _pm(row.get("win_rate"), row.get("win_rate_se")),
            lc if row.get("lc_win_rate") is not None else "n/a",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    reasons = sorted({r["lc_unavailable_reason"] for r in rows if r.get("lc_unavailable_reason")})
    if reasons:
        lines += ["", "LC win rate n/a: " + "; ".join(reasons) + "."]
    return "\n".join(lines) + "\n"


def _series(
    rows: Sequence[dict[str, Any]], value: str, bar: Callable[[dict[str, Any]], tuple[Any, Any]]
) -> list[Series]:
    by_objective: dict[str, list[Point]] = {}
    for row in rows:
        low, high = bar(row)
        by_objective.setdefault(row["objective"], []).append(
            Point(row["policy_index"], row.get(value), low, high)
        )
    return [Series(objective, points) for objective, points in by_objective.items()]


def _se_bar(value: str) -> Callable[[dict[str, Any]], tuple[float | None, float | None]]:
    """The error bar value ± its SE (none where either is undefined)."""

    def bar(row: dict[str, Any]) -> tuple[float | None, float | None]:
        y, se = row.get(value), row.get(f"{value}_se")
        return (y - se, y + se) if y is not None and se is not None else (None, None)

    return bar


def _rho_interval(row: dict[str, Any]) -> tuple[Any, Any]:
    low, high = row.get("s_ref_length_gap_spearman_ci95") or [None, None]
    return low, high


def figure_svg(rows: Sequence[dict[str, Any]], caption: str) -> str:
    """Figs. 2-3 (average length, win rate, ± SE) and Fig. 6 (ρ, 95% CI) against θ_j."""
    trained = [row for row in rows if row.get("iteration") is not None]
    panels = [
        Panel("avg response length (tokens) ± SE", _series(rows, "avg_tokens", _se_bar("avg_tokens"))),
        Panel("win rate % vs baseline ± SE", _series(rows, "win_rate", _se_bar("win_rate"))),
        Panel(
            "ρ(s_ref, |y_w|−|y_l|), pairs that trained θ_j, 95% CI",
            _series(trained, "s_ref_length_gap_spearman", _rho_interval),
            unavailable="too few pairs for a correlation",
        ),
    ]
    return panels_svg(panels, x_label="model θ_j (j = iterations trained)", caption=caption)


def write_outputs(runs: Sequence[StudyRun], root: Path, out: Path) -> list[dict[str, Any]]:
    """table.md, table.json and the figure under `out`; returns the rows."""
    rows = study_rows(runs, root)
    config = runs[0].config
    meta = {
        "objectives": {r.objective: r.config.objective.model_dump(exclude_none=True) for r in runs},
        "ranker": config.ranker.model_dump(exclude_none=True),
        "judge": rows[0]["judge"] if rows else None,
        "iterations": config.iterations,
        "run_ids": {r.objective: r.run_id for r in runs},
        "seconds_this_process": {r.objective: round(r.seconds, 1) for r in runs},
    }
    out.mkdir(parents=True, exist_ok=True)
    artifacts.write_json_atomic(out / "table.json", {"meta": meta, "rows": rows})
    (out / "table.md").write_text(table_markdown(rows), encoding="utf-8")
    bias = config.ranker.length_bias
    ranker = (
        f"ranker +{bias.bonus} per {bias.unit.replace('_', ' ')}" if bias else f"ranker {config.ranker.kind}"
    )
    caption = f"{ranker}; judge: {meta['judge']}; {rows[0]['n_eval'] if rows else 0} eval prompts"
    (out / FIGURE).write_text(figure_svg(rows, caption), encoding="utf-8")
    return rows
