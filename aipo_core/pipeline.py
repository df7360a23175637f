"""Algorithm 1 of the AIPO paper as plain functions: one call per stage, artifacts on disk.

Iteration k (0-based, folder `iter_{k}`) starts from policy θ_k (the base model for k = 0, else
`iter_{k-1}/policy`), which is also the reference:

    self_instruct → instructions.jsonl     new prompts written by θ_k
    generate      → candidates.jsonl       N samples per prompt from θ_k
    rank          → pairs.jsonl            judge scores, best/worst pairs, reference log-probs
    train         → policy/                θ_{k+1} trained on the pairs, reference θ_k
    evaluate      → eval/{benchmark}.jsonl θ_{k+1} against the benchmark baseline, + analysis

Every model-using stage resolves a `Placement` (`aipo_core.devices`: device, dtype, processes) from
the config and the worker's hardware, checks that its model fits (`aipo_core.preflight`), loads
straight onto the device and records `placement` in its summary. Generation, self-instruct and
evaluation use the inference placement; rank (whose reference log-probs must equal the trainer's
step-0 log-probs) and train use the training placement.

Each stage writes its artifact atomically and then `stage_{name}.json` (its summary metrics);
that summary file is the completion marker, so re-running a finished stage returns the stored
summary without touching the model. The worker runs exactly these functions in child processes;
`run` chains them in-process for `aipo run --local`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aipo_core import artifacts
from aipo_core.config import RunConfig
from aipo_core.devices import Hardware, Placement, inference_placement, training_placement
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
    hardware: Hardware | None = None

    @property
    def dir(self) -> Path:
        return artifacts.iteration_dir(self.artifact_root, self.run_id, self.iteration)

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
        """θ_{k+1}: written by the train stage."""
        return self.dir / "policy"


def stage_summary_path(ctx: StageContext, stage: str) -> Path:
    return ctx.dir / f"stage_{stage}.json"


def stage_complete(ctx: StageContext, stage: str) -> bool:
    return artifacts.is_complete(stage_summary_path(ctx, stage))


@functools.cache
def _this_machine() -> Hardware:
    return Hardware.probe()


def _hardware(ctx: StageContext) -> Hardware:
    """The hardware placements are resolved against: the context's, else this machine's (probed once)."""
    return ctx.hardware or _this_machine()


def _model_shape(ctx: StageContext, spec: str):
    from aipo_core.models import resolve_model_path
    from aipo_core.preflight import model_shape

    path = resolve_model_path(spec, ctx.model_cache_dir)
    return model_shape(path, trust_remote_code=ctx.config.trust_remote_code)


def _inference_placement(ctx: StageContext, spec: str, stage: str, *, rows: int, tokens: int) -> Placement:
    """The inference placement, after checking that `spec` plus a KV cache of rows × tokens fits."""
    from aipo_core.devices import available_memory
    from aipo_core.preflight import check_memory, inference_need

    placement = inference_placement(ctx.config, _hardware(ctx))
    shape = _model_shape(ctx, spec)
    need = inference_need(shape, placement, rows=rows, tokens=tokens)
    check_memory(stage, spec, shape, need, placement, available_memory(placement))
    return placement


def _scoring_placement(ctx: StageContext, spec: str, stage: str) -> Placement:
    """The training placement for one process (reference / policy log-probs), after a preflight."""
    from dataclasses import replace

    from aipo_core.devices import available_memory
    from aipo_core.preflight import check_memory, inference_need

    training = ctx.config.training
    full = training_placement(ctx.config, _hardware(ctx))
    placement = replace(full, num_processes=1, strategy="single", gpus=full.gpus[:1])
    shape = _model_shape(ctx, spec)
    need = inference_need(shape, placement, rows=2 * training.batch_size, tokens=training.max_length)
    check_memory(stage, spec, shape, need, placement, available_memory(placement))
    return placement


def _load_policy(ctx: StageContext, spec: str, placement: Placement):
    from aipo_core.models import load_model_and_tokenizer

    return load_model_and_tokenizer(
        spec,
        trust_remote_code=ctx.config.trust_remote_code,
        cache_dir=ctx.model_cache_dir,
        placement=placement,
    )


def _imports_initial_pairs(ctx: StageContext) -> bool:
    """Iteration 0 of a run seeded with an existing preference dataset skips sampling."""
    return ctx.iteration == 0 and ctx.config.initial_pairs is not None


def stage_self_instruct(ctx: StageContext) -> dict[str, Any]:
    from aipo_core.data.pools import load_prompt_pool
    from aipo_core.self_instruct import generate_instructions, top_up_from_pool

    if _imports_initial_pairs(ctx):
        artifacts.write_jsonl_atomic(ctx.dir / "instructions.jsonl", [])
        return {"skipped": "initial_pairs", "instructions": 0}
    cfg = ctx.config.self_instruct
    pool = load_prompt_pool(ctx.config.prompt_pool)
    placement = _inference_placement(
        ctx, ctx.policy_in(), "self_instruct", rows=cfg.batch_size, tokens=1024 + cfg.max_new_tokens
    )
    model, tokenizer = _load_policy(ctx, ctx.policy_in(), placement)
    result = generate_instructions(
        model, tokenizer, pool, cfg, seed=ctx.config.seed + ctx.iteration, sink=ctx.sink
    )
    generated = len(result.instructions)
    instructions = top_up_from_pool(
        result.instructions, pool, cfg.num_instructions, seed=ctx.config.seed + ctx.iteration
    )
    artifacts.write_jsonl_atomic(ctx.dir / "instructions.jsonl", instructions)
    return {
        "instructions": len(instructions),
        "generated": generated,
        "from_pool": len(instructions) - generated,
        "calls": result.calls,
        "tokens_per_s": result.tokens_per_s,
        **{f"dropped_{rule}": n for rule, n in result.drop_counts.items()},
        "placement": placement.describe(),
    }


def stage_generate(ctx: StageContext) -> dict[str, Any]:
    from aipo_core.generation import generate_candidates, make_generator

    if _imports_initial_pairs(ctx):
        artifacts.write_jsonl_atomic(ctx.dir / "candidates.jsonl", [])
        return {"skipped": "initial_pairs", "prompts": 0}
    instructions = artifacts.read_jsonl(ctx.dir / "instructions.jsonl")
    cfg = ctx.config.generation
    if cfg.backend == "vllm":
        placement, generator = _vllm_generator(ctx)
    else:
        placement = _inference_placement(
            ctx,
            ctx.policy_in(),
            "generate",
            rows=cfg.batch_size * cfg.num_candidates,
            tokens=ctx.config.training.max_prompt_length + cfg.max_new_tokens,
        )
        model, tokenizer = _load_policy(ctx, ctx.policy_in(), placement)
        generator = make_generator(cfg, model, tokenizer)
    records, stats = generate_candidates(
        instructions, generator, cfg, seed=ctx.config.seed + ctx.iteration, sink=ctx.sink
    )
    artifacts.write_jsonl_atomic(ctx.dir / "candidates.jsonl", records)
    return {"prompts": len(records), **stats, "placement": placement.describe()}


def _vllm_generator(ctx: StageContext):
    """vLLM in child processes over tensor × data parallel GPUs; this process never loads weights,
    so the GPUs are entirely vLLM's while it samples and entirely free once it has returned."""
    from aipo_core.devices import inference_placement
    from aipo_core.generation import vllm_generator
    from aipo_core.models import load_tokenizer, resolve_model_path

    cfg = ctx.config.generation
    placement = inference_placement(ctx.config, _hardware(ctx), gpus=cfg.gpus)
    if placement.device != "cuda":
        raise RuntimeError("generation.backend 'vllm' needs a CUDA GPU; use backend: hf on CPU workers")
    path = resolve_model_path(ctx.policy_in(), ctx.model_cache_dir)
    tokenizer = load_tokenizer(
        ctx.policy_in(), cache_dir=ctx.model_cache_dir, trust_remote_code=ctx.config.trust_remote_code
    )
    generator = vllm_generator(
        cfg, path, tokenizer, placement=placement, trust_remote_code=ctx.config.trust_remote_code
    )
    return placement, generator


def stage_rank(ctx: StageContext) -> dict[str, Any]:
    from aipo_core.ranking import make_ranker, rank_candidates, select_pairs

    # The training placement: the reference log-probs below must be the trainer's step-0 forward.
    placement = _scoring_placement(ctx, ctx.policy_in(), "rank")
    model, tokenizer = _load_policy(ctx, ctx.policy_in(), placement)
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
            cache_dir=ctx.model_cache_dir,
            # A separate judge or reward model is an inference model: compute dtype, no autocast.
            placement=inference_placement(ctx.config, _hardware(ctx)),
        )
        with placement.autocast():
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
    pairs = _score_pairs(ctx, pairs, model, tokenizer, placement)
    artifacts.write_jsonl_atomic(ctx.dir / "pairs.jsonl", pairs)
    s_ref = [p["s_ref"] for p in pairs]
    summary |= {
        "pairs": len(pairs),
        "agreement_rate": sum(s > 0 for s in s_ref) / len(s_ref) if s_ref else None,
        "placement": placement.describe(),
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
    placement = _training_placement(ctx, ctx.policy_in())
    if placement.num_processes > 1:
        from aipo_core.distributed import train_distributed

        steps, metrics = train_distributed(
            model=ctx.policy_in(),
            config=ctx.config,
            pairs_path=ctx.dir / "pairs.jsonl",
            output_dir=ctx.policy_out(),
            placement=placement,
            seed=ctx.config.seed + ctx.iteration,
            workdir=ctx.dir,
            sink=ctx.sink,
            model_cache_dir=ctx.model_cache_dir,
        )
        return {"steps": steps, **metrics, "placement": placement.describe()}
    model, tokenizer = _load_policy(ctx, ctx.policy_in(), placement)
    # train_policy saves atomically: policy/ exists only once it is complete.
    result = train_policy(
        model,
        tokenizer,
        pairs,
        objective=ctx.config.objective,
        training=ctx.config.training,
        output_dir=ctx.policy_out(),
        seed=ctx.config.seed + ctx.iteration,
        sink=ctx.sink,
        placement=placement,
    )
    return {"steps": result.steps, **result.metrics, "placement": placement.describe()}


def _training_placement(ctx: StageContext, spec: str) -> Placement:
    """The training placement, after checking weights + gradients + AdamW + activations fit."""
    from aipo_core.devices import available_memory
    from aipo_core.preflight import check_memory, training_need, training_options

    training = ctx.config.training
    placement = training_placement(ctx.config, _hardware(ctx))
    shape = _model_shape(ctx, spec)
    available = available_memory(placement)
    check_memory(
        "train",
        spec,
        shape,
        training_need(shape, placement, training),
        placement,
        available,
        options=lambda: training_options(shape, placement, training, available),
    )
    return placement


def _score_pairs(
    ctx: StageContext, pairs: list[dict[str, Any]], model, tokenizer, placement: Placement
) -> list[dict[str, Any]]:
    """Copies of `pairs` with `model`'s summed response log-probs, tokenized and computed (device,
    weight dtype, autocast) as the trainer does; `model` must be loaded with the training placement."""
    from aipo_core.training import attach_reference_logps

    training = ctx.config.training
    return attach_reference_logps(
        pairs,
        model,
        tokenizer,
        batch_size=training.batch_size,
        max_prompt_length=training.max_prompt_length,
        max_length=training.max_length,
        placement=placement,
    )


def _policy_margins(
    ctx: StageContext, pairs: list[dict[str, Any]], model, tokenizer, placement: Placement
) -> list[float]:
    """s_θ = logπθ(y_w) − logπθ(y_l) under the trained policy θ_{k+1}, one per pair (for Eq. 8),
    computed like s_ref (training placement). `model` was loaded with `placement` (the inference
    one); when its weight dtype differs from training's, θ_{k+1} is loaded again for the scoring."""
    if not pairs:
        return []
    scoring = _scoring_placement(ctx, str(ctx.policy_out()), "evaluate")
    if scoring.dtype != placement.dtype or scoring.device != placement.device:
        del model
        model, tokenizer = _load_policy(ctx, str(ctx.policy_out()), scoring)
    # The scorer names its margin s_ref; here the scoring model is θ_{k+1}, so it is s_θ.
    return [p["s_ref"] for p in _score_pairs(ctx, pairs, model, tokenizer, scoring)]


def stage_evaluate(ctx: StageContext) -> dict[str, Any]:
    from aipo_core.analysis import analyze_pairs, default_embedder
    from aipo_core.evaluation import evaluate_policy, make_judge

    evaluation = ctx.config.evaluation
    placement = _inference_placement(
        ctx,
        str(ctx.policy_out()),
        "evaluate",
        rows=evaluation.judge.batch_size,
        tokens=ctx.config.training.max_prompt_length + evaluation.max_new_tokens,
    )
    model, tokenizer = _load_policy(ctx, str(ctx.policy_out()), placement)
    judge = make_judge(
        evaluation.judge,
        policy=(model, tokenizer),
        trust_remote_code=ctx.config.trust_remote_code,
        cache_dir=ctx.model_cache_dir,
        placement=placement,
    )
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
        artifacts.write_jsonl_atomic(ctx.dir / "eval" / f"{benchmark}.jsonl", result.records)
        summary |= {f"{benchmark}/{k}": v for k, v in result.metrics.items()}
    pairs = artifacts.read_jsonl(ctx.dir / "pairs.jsonl")
    objective = ctx.config.objective.resolved()
    ctx.progress(0.9, "pair analysis")
    analysis = analyze_pairs(
        pairs,
        s_theta=_policy_margins(ctx, pairs, model, tokenizer, placement),
        beta=objective["beta"],
        alpha=objective.get("alpha", 0.0)
        if get_objective(ctx.config.objective.name).scales_reference
        else 0.0,
        similarity=bool(pairs),
        embedder=default_embedder(placement.torch_device().type) if pairs else None,
    )
    artifacts.write_json_atomic(ctx.dir / "analysis.json", analysis)
    return {**summary, "placement": placement.describe()}


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
    hardware: Hardware | None = None,
) -> dict[str, Any]:
    """Run one stage of one iteration (idempotent) and return its summary metrics.

    `hardware` defaults to what this process sees (`Hardware.probe()`).
    """
    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"stage {stage!r} is unknown; expected one of {', '.join(STAGES)}")
    if not 0 <= iteration < config.iterations:
        raise ValueError(f"iteration {iteration} is outside 0..{config.iterations - 1}")
    ctx = StageContext(config, Path(artifact_root), str(run_id), iteration, model_cache_dir, sink, hardware)
    summary_path = stage_summary_path(ctx, stage)
    if artifacts.is_complete(summary_path):
        return artifacts.read_json(summary_path)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ctx.progress(0.0, f"{stage} started")
    summary = STAGE_FUNCTIONS[stage](ctx)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    artifacts.write_json_atomic(summary_path, summary)
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
