"""Algorithm 1 of the AIPO paper as plain functions: one call per stage, artifacts on disk.

Iteration k (0-based, folder `iter_{k}`) starts from policy θ_k (the base model for k = 0, else
`iter_{k-1}/policy`), which is also the reference:

    self_instruct → instructions.jsonl     new prompts written by θ_k
    generate      → candidates.jsonl       N samples per prompt from θ_k
    rank          → pairs.jsonl            judge scores, best/worst pairs, reference log-probs
    train         → policy/                θ_{k+1} trained on the pairs, reference θ_k
    evaluate      → eval/{benchmark}.jsonl θ_{k+1} against the benchmark baseline, + analysis

Each stage writes its artifact atomically and then `stage_{name}.json` (its summary metrics);
that summary file is the completion marker, so re-running a finished stage returns the stored
summary without touching the model. A stage reads its inputs from `iter_{k}/` and writes into
its attempt's scratch folder; the outputs reach `iter_{k}/` by `artifacts.publish`, marker last.
`run_stage` publishes by itself unless given a scratch folder: the worker passes one per attempt
and publishes only while it still holds the stage's claim, so a stale attempt can never replace
a newer one's artifact. The worker runs exactly these functions in child processes; `run`
chains them in-process for `aipo run --local`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aipo_core import artifacts
from aipo_core.config import RunConfig
from aipo_core.objectives import get_objective

Sink = Callable[[dict[str, Any]], None]
STAGES: tuple[str, ...] = ("self_instruct", "generate", "rank", "train", "evaluate")


@dataclass(frozen=True)
class StageContext:
    """Everything a stage needs besides its own inputs on disk."""

    config: RunConfig
    artifact_root: Path
    run_id: str
    iteration: int
    model_cache_dir: Path | None = None
    sink: Sink | None = None
    scratch: Path | None = None

    @property
    def dir(self) -> Path:
        """The published iteration folder, where a stage finds its inputs."""
        return artifacts.iteration_dir(self.artifact_root, self.run_id, self.iteration)

    @property
    def out(self) -> Path:
        """Where this stage attempt writes its outputs (its scratch folder; `dir` when none)."""
        return self.scratch if self.scratch is not None else self.dir

    def emit(self, event: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink(event)

    def progress(self, fraction: float, message: str) -> None:
        self.emit({"kind": "progress", "fraction": max(0.0, min(1.0, fraction)), "message": message})

    def policy_in(self) -> str:
        """θ_k: the policy this iteration samples from and uses as reference."""
        if self.iteration == 0:
            return self.config.model
        return str(artifacts.iteration_dir(self.artifact_root, self.run_id, self.iteration - 1) / "policy")

    def policy_out(self) -> Path:
        """θ_{k+1} as published by the train stage (the train stage writes `out / "policy"`)."""
        return self.dir / "policy"


def stage_summary_path(ctx: StageContext, stage: str) -> Path:
    return ctx.dir / artifacts.stage_marker_name(stage)


def stage_complete(ctx: StageContext, stage: str) -> bool:
    return artifacts.is_complete(stage_summary_path(ctx, stage))


def _load_policy(ctx: StageContext, spec: str):
    from aipo_core.models import load_model_and_tokenizer

    return load_model_and_tokenizer(
        spec, trust_remote_code=ctx.config.trust_remote_code, cache_dir=ctx.model_cache_dir
    )


def _imports_initial_pairs(ctx: StageContext) -> bool:
    """Iteration 0 of a run seeded with an existing preference dataset skips sampling."""
    return ctx.iteration == 0 and ctx.config.initial_pairs is not None


def stage_self_instruct(ctx: StageContext) -> dict[str, Any]:
    from aipo_core.data.pools import load_prompt_pool
    from aipo_core.self_instruct import generate_instructions, top_up_from_pool

    if _imports_initial_pairs(ctx):
        artifacts.write_jsonl_atomic(ctx.out / "instructions.jsonl", [])
        return {"skipped": "initial_pairs", "instructions": 0}
    cfg = ctx.config.self_instruct
    pool = load_prompt_pool(ctx.config.prompt_pool)
    model, tokenizer = _load_policy(ctx, ctx.policy_in())
    result = generate_instructions(
        model, tokenizer, pool, cfg, seed=ctx.config.seed + ctx.iteration, sink=ctx.sink
    )
    generated = len(result.instructions)
    instructions = top_up_from_pool(
        result.instructions, pool, cfg.num_instructions, seed=ctx.config.seed + ctx.iteration
    )
    artifacts.write_jsonl_atomic(ctx.out / "instructions.jsonl", instructions)
    return {
        "instructions": len(instructions),
        "generated": generated,
        "from_pool": len(instructions) - generated,
        "calls": result.calls,
        "tokens_per_s": result.tokens_per_s,
        **{f"dropped_{rule}": n for rule, n in result.drop_counts.items()},
    }


def stage_generate(ctx: StageContext) -> dict[str, Any]:
    from aipo_core.generation import generate_candidates, make_generator
    from aipo_core.models import resolve_model_path

    if _imports_initial_pairs(ctx):
        artifacts.write_jsonl_atomic(ctx.out / "candidates.jsonl", [])
        return {"skipped": "initial_pairs", "prompts": 0}
    instructions = artifacts.read_jsonl(ctx.dir / "instructions.jsonl")
    model, tokenizer = _load_policy(ctx, ctx.policy_in())
    generator = make_generator(
        ctx.config.generation,
        model,
        tokenizer,
        model_path=resolve_model_path(ctx.policy_in(), ctx.model_cache_dir),
        trust_remote_code=ctx.config.trust_remote_code,
    )
    records, stats = generate_candidates(
        instructions, generator, ctx.config.generation, seed=ctx.config.seed + ctx.iteration, sink=ctx.sink
    )
    artifacts.write_jsonl_atomic(ctx.out / "candidates.jsonl", records)
    return {"prompts": len(records), **stats}


def stage_rank(ctx: StageContext) -> dict[str, Any]:
    from aipo_core.ranking import make_ranker, rank_candidates, select_pairs

    model, tokenizer = _load_policy(ctx, ctx.policy_in())
    training = ctx.config.training
    summary: dict[str, Any] = {}
    if _imports_initial_pairs(ctx):
        from aipo_core.data.preferences import load_preference_pairs

        pairs = load_preference_pairs(ctx.config.initial_pairs, tokenizer=tokenizer)
        summary["imported"] = len(pairs)
    else:
        candidates = artifacts.read_jsonl(ctx.dir / "candidates.jsonl")
        ranker = make_ranker(
            ctx.config.ranker.kind,
            ctx.config.ranker.model,
            policy=(model, tokenizer),
            batch_size=ctx.config.ranker.batch_size,
            trust_remote_code=ctx.config.trust_remote_code,
        )
        scores = rank_candidates(candidates, ranker, sink=ctx.sink)
        pairs, drops = select_pairs(
            candidates,
            scores,
            tokenizer=tokenizer,
            max_prompt_tokens=training.max_prompt_length,
            max_response_tokens=training.max_length - training.max_prompt_length,
        )
        summary |= {"candidates": len(candidates), **{f"dropped_{k}": v for k, v in drops.items()}}
    ctx.progress(0.8, "reference log-probs")
    pairs = _score_pairs(ctx, pairs, model, tokenizer)
    artifacts.write_jsonl_atomic(ctx.out / "pairs.jsonl", pairs)
    s_ref = [p["s_ref"] for p in pairs]
    summary |= {
        "pairs": len(pairs),
        "agreement_rate": sum(s > 0 for s in s_ref) / len(s_ref) if s_ref else None,
    }
    return summary


def stage_train(ctx: StageContext) -> dict[str, Any]:
    from aipo_core.training import train_policy

    pairs = artifacts.read_jsonl(ctx.dir / "pairs.jsonl")
    if not pairs:
        raise ValueError(
            f"iteration {ctx.iteration}: no preference pairs survived ranking and filtering; "
            "raise self_instruct.num_instructions or generation.num_candidates"
        )
    model, tokenizer = _load_policy(ctx, ctx.policy_in())
    # train_policy saves atomically: policy/ exists only once it is complete.
    result = train_policy(
        model,
        tokenizer,
        pairs,
        objective=ctx.config.objective,
        training=ctx.config.training,
        output_dir=ctx.out / "policy",
        seed=ctx.config.seed + ctx.iteration,
        sink=ctx.sink,
    )
    return {"steps": result.steps, **result.metrics}


def _score_pairs(ctx: StageContext, pairs: list[dict[str, Any]], model, tokenizer) -> list[dict[str, Any]]:
    """Copies of `pairs` with `model`'s summed response log-probs, tokenized as the trainer does."""
    from aipo_core.training import attach_reference_logps

    training = ctx.config.training
    return attach_reference_logps(
        pairs,
        model,
        tokenizer,
        batch_size=training.batch_size,
        max_prompt_length=training.max_prompt_length,
        max_length=training.max_length,
        precision=training.precision,
    )


def _policy_margins(ctx: StageContext, pairs: list[dict[str, Any]], model, tokenizer) -> list[float]:
    """s_θ = logπθ(y_w) − logπθ(y_l) under the trained policy θ_{k+1}, one per pair (for Eq. 8)."""
    if not pairs:
        return []
    # The scorer names its margin s_ref; here the scoring model is θ_{k+1}, so it is s_θ.
    return [p["s_ref"] for p in _score_pairs(ctx, pairs, model, tokenizer)]


def stage_evaluate(ctx: StageContext) -> dict[str, Any]:
    from aipo_core.analysis import analyze_pairs
    from aipo_core.evaluation import evaluate_policy, make_judge

    model, tokenizer = _load_policy(ctx, str(ctx.policy_out()))
    judge = make_judge(ctx.config.evaluation.judge, policy=(model, tokenizer))
    summary: dict[str, Any] = {}
    benchmarks = ctx.config.evaluation.benchmarks
    for i, benchmark in enumerate(benchmarks):
        ctx.progress(i / len(benchmarks), f"evaluating {benchmark}")
        result = evaluate_policy(
            model,
            tokenizer,
            benchmark,
            ctx.config.evaluation,
            judge=judge,
            seed=ctx.config.seed,
            sink=ctx.sink,
        )
        artifacts.write_jsonl_atomic(ctx.out / "eval" / f"{benchmark}.jsonl", result.records)
        summary |= {f"{benchmark}/{k}": v for k, v in result.metrics.items()}
    pairs = artifacts.read_jsonl(ctx.dir / "pairs.jsonl")
    objective = ctx.config.objective.resolved()
    ctx.progress(0.9, "pair analysis")
    analysis = analyze_pairs(
        pairs,
        s_theta=_policy_margins(ctx, pairs, model, tokenizer),
        beta=objective["beta"],
        alpha=objective.get("alpha", 0.0)
        if get_objective(ctx.config.objective.name).scales_reference
        else 0.0,
        similarity=bool(pairs),
    )
    artifacts.write_json_atomic(ctx.out / "analysis.json", analysis)
    return summary


STAGE_FUNCTIONS: dict[str, Callable[[StageContext], dict[str, Any]]] = {
    "self_instruct": stage_self_instruct,
    "generate": stage_generate,
    "rank": stage_rank,
    "train": stage_train,
    "evaluate": stage_evaluate,
}


def run_stage(
    stage: str,
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    iteration: int,
    sink: Sink | None = None,
    model_cache_dir: Path | None = None,
    scratch_dir: Path | None = None,
) -> dict[str, Any]:
    """Run one stage of one iteration (idempotent) and return its summary metrics.

    Without `scratch_dir` the stage's outputs are published into `iter_{k}/` before returning.
    With one, they (and the completion marker) are left there for the caller to `publish`.
    """
    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"stage {stage!r} is unknown; expected one of {', '.join(STAGES)}")
    if not 0 <= iteration < config.iterations:
        raise ValueError(f"iteration {iteration} is outside 0..{config.iterations - 1}")
    root = Path(artifact_root)
    summary_path = artifacts.iteration_dir(root, str(run_id), iteration) / artifacts.stage_marker_name(stage)
    if artifacts.is_complete(summary_path):
        return artifacts.read_json(summary_path)
    publish_here = scratch_dir is None
    if scratch_dir is None:
        out = artifacts.scratch_dir(root, str(run_id), iteration, stage, "local")
        artifacts.discard_scratch(out)  # left behind by an earlier run that crashed
    else:
        out = Path(scratch_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(config, root, str(run_id), iteration, model_cache_dir, sink, scratch=out)
    started = time.perf_counter()
    ctx.progress(0.0, f"{stage} started")
    summary = STAGE_FUNCTIONS[stage](ctx)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    artifacts.write_json_atomic(out / artifacts.stage_marker_name(stage), summary)
    if publish_here:
        artifacts.publish(out, ctx.dir, marker=artifacts.stage_marker_name(stage))
        artifacts.discard_scratch(out)
    ctx.progress(1.0, f"{stage} done")
    return summary


def run(
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    sink: Sink | None = None,
    model_cache_dir: Path | None = None,
    on_stage: Callable[[int, str, dict[str, Any]], None] | None = None,
) -> list[dict[str, dict[str, Any]]]:
    """Algorithm 1 for `config.iterations` iterations; resumes past completed stages.

    Returns one dict per iteration mapping stage name → summary metrics.
    """
    artifacts.write_json_atomic(artifacts.run_dir(artifact_root, run_id) / "config.json", config.model_dump())
    history = []
    for k in range(config.iterations):
        summaries: dict[str, dict[str, Any]] = {}
        for stage in STAGES:
            summaries[stage] = run_stage(
                stage,
                config,
                artifact_root=artifact_root,
                run_id=run_id,
                iteration=k,
                sink=sink,
                model_cache_dir=model_cache_dir,
            )
            if on_stage is not None:
                on_stage(k, stage, summaries[stage])
        history.append(summaries)
    return history
