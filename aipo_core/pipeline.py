"""Algorithm 1 of the AIPO paper as plain functions: one call per stage, artifacts on disk.

Iteration k (0-based, folder `iter_{k}`) starts from policy θ_k (the base model for k = 0, else
`iter_{k-1}/policy`), which is also the reference:

    self_instruct → instructions.jsonl     new prompts written by θ_k
    generate      → candidates.jsonl       N samples per prompt from θ_k
    rank          → pairs.jsonl            judge scores, best/worst pairs, reference log-probs,
                    candidate_scores.jsonl every candidate's score and its prompt's outcome
    train         → policy/                θ_{k+1} trained on the pairs, reference θ_k
    evaluate      → eval/{benchmark}.jsonl θ_{k+1} against the benchmark baseline, + analysis.json
                                           and pair_diagnostics.jsonl (the objective's rewards and
                                           gradient weights of every pair under θ_{k+1});
                    iteration 0 also evaluates θ_0 (eval/base/{benchmark}.jsonl) with the same
                    judge and prompts, so every curve starts at the base model

Every model-using stage resolves a `Placement` (`aipo_core.devices`: device, dtype, processes) from
the config and the worker's hardware, checks that its model fits (`aipo_core.preflight`), loads
straight onto the device and records `placement` in its summary. Generation, self-instruct and
evaluation use the inference placement (or vLLM's GPUs with generation.backend: vllm); rank (whose
reference log-probs must equal the trainer's step-0 log-probs) and train use the training
placement. The evaluate stage answers, then judges, holding one model at a time
(`aipo_core.resident`, docs/evaluation.md "Devices and memory").

Each stage writes its artifact atomically and then `stage_{name}.json` (its summary metrics);
that summary file is the completion marker, so re-running a finished stage returns the stored
summary without touching the model. A stage reads its inputs from `iter_{k}/` and writes into
its attempt's scratch folder; the outputs reach `iter_{k}/` by `artifacts.publish`, marker last.
`run_stage` publishes by itself unless given a scratch folder: the worker passes one per attempt
and publishes only while it still holds the stage's claim, so a stale attempt can never replace
a newer one's artifact. Every model and data file is loaded under the operator's
`ModelAccess` (aipo_core.access); old policy folders are pruned after each evaluate
(aipo_core.retention). The worker runs exactly these functions in child processes;
`run` chains them in-process for `aipo run --local`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aipo_core import artifacts
from aipo_core.access import ModelAccess, check_run_config
from aipo_core.config import BASE_JUDGE, POLICY_JUDGE, RunConfig
from aipo_core.devices import Hardware, Placement, inference_placement, judging_autocast, training_placement
from aipo_core.retention import prune_policies

if TYPE_CHECKING:  # heavy modules (torch); the stage functions import them when they run
    from aipo_core.eval_answers import Answers
    from aipo_core.eval_sample import EvalSample
    from aipo_core.resident import ResidentModels

logger = logging.getLogger(__name__)
Sink = Callable[[dict[str, Any]], None]
STAGES: tuple[str, ...] = ("self_instruct", "generate", "rank", "train", "evaluate")
CANDIDATE_SCORES_FILE = "candidate_scores.jsonl"
#: The scratch attempt name of an in-process stage (`run_stage` without a scratch folder).
LOCAL_ATTEMPT = "local"


@dataclass(frozen=True)
class StageContext:
    """Everything a stage needs besides its own inputs on disk."""

    config: RunConfig
    artifact_root: Path
    run_id: str
    iteration: int
    model_cache_dir: Path | None = None
    sink: Sink | None = None
    access: ModelAccess = ModelAccess()
    hardware: Hardware | None = None
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
        previous = artifacts.iteration_dir(self.artifact_root.absolute(), self.run_id, self.iteration - 1)
        return str(previous / "policy")

    def policy_field(self) -> str:
        """The name errors about θ_k use: the config field for θ_0, the artifact after that."""
        return "model" if self.iteration == 0 else f"iter_{self.iteration - 1}/policy"

    @property
    def policy_access(self) -> ModelAccess:
        """`access`, plus this run's own artifacts (the policies it trained) as a readable root."""
        return self.access.trusting(artifacts.run_dir(self.artifact_root, self.run_id))

    def policy_out(self) -> Path:
        """θ_{k+1} as published by the train stage (the train stage writes `out / "policy"`)."""
        return self.dir / "policy"


def stage_summary_path(ctx: StageContext, stage: str) -> Path:
    return ctx.dir / artifacts.stage_marker_name(stage)


@functools.cache
def _this_machine() -> Hardware:
    return Hardware.probe()


def _hardware(ctx: StageContext) -> Hardware:
    """The hardware placements are resolved against: the context's, else this machine's (probed once)."""
    return ctx.hardware or _this_machine()


def _model_shape(ctx: StageContext, spec: str, field: str):
    from aipo_core.models import resolve_model_path
    from aipo_core.preflight import model_shape

    remote_code = ctx.access.remote_code(ctx.config.trust_remote_code)
    path = resolve_model_path(
        spec, ctx.model_cache_dir, access=ctx.policy_access, field=field, trust_remote_code=remote_code
    )
    return model_shape(path, trust_remote_code=remote_code)


def _inference_placement(
    ctx: StageContext, spec: str, field: str, stage: str, *, rows: int, tokens: int
) -> Placement:
    """The inference placement, after checking that `spec` plus a KV cache of rows × tokens fits."""
    placement = inference_placement(ctx.config, _hardware(ctx))
    _check_inference_memory(ctx, spec, field, stage, placement, rows=rows, tokens=tokens)
    return placement


def _check_inference_memory(
    ctx: StageContext, spec: str, field: str, stage: str, placement: Placement, *, rows: int, tokens: int
) -> None:
    """Refuse (InsufficientMemoryError) when `spec` plus a KV cache of rows × tokens cannot fit."""
    from aipo_core.devices import available_memory
    from aipo_core.preflight import check_memory, inference_need

    shape = _model_shape(ctx, spec, field)
    need = inference_need(shape, placement, rows=rows, tokens=tokens)
    check_memory(stage, spec, shape, need, placement, available_memory(placement))


def _judge_shape(ctx: StageContext, kind: str, spec: str, field: str):
    """A judge, ranker or reward model measured without loading it (PairRM by its weights)."""
    from aipo_core.models import resolve_model_path
    from aipo_core.preflight import checkpoint_shape, model_shape

    if kind == "pairrm":
        from aipo_core.pairrm_compat import pairrm_folder

        folder, _ = pairrm_folder(spec, ctx.access, field)
        return checkpoint_shape(folder)
    remote_code = ctx.access.remote_code(ctx.config.trust_remote_code)
    path = resolve_model_path(
        spec, ctx.model_cache_dir, access=ctx.access, field=field, trust_remote_code=remote_code
    )
    head = "classifier" if kind == "reward_model" else "causal_lm"
    return model_shape(path, trust_remote_code=remote_code, head=head)


def _check_judge_memory(
    ctx: StageContext,
    stage: str,
    kind: str,
    spec: str,
    section: str,
    *,
    rows: int,
    tokens: int,
    whole_device: bool = False,
) -> None:
    """Refuse a separate judge / ranker model (an LLM, a reward model, PairRM) that cannot fit
    beside what this process holds now; `section` is its config section (ranker, evaluation.judge).
    `whole_device`: against a GPU's whole memory instead of what is free now, for a check made
    before this process has a CUDA context (measuring would create one, which would then hold
    memory while vLLM's children answer)."""
    from dataclasses import replace

    from aipo_core.access import PAIRRM_HUB_ID
    from aipo_core.devices import available_memory
    from aipo_core.preflight import check_memory, inference_need, inference_options

    if kind == "pairrm" and spec in (BASE_JUDGE, POLICY_JUDGE):
        spec = PAIRRM_HUB_ID  # base / policy name the published PairRM
    field = f"{section}.model"
    placement = inference_placement(ctx.config, _hardware(ctx))
    shape = _judge_shape(ctx, kind, spec, field)
    if whole_device and placement.device == "cuda":
        gpu = placement.gpus[0]
        available = gpu.memory_bytes
        placement = replace(placement, gpus=(replace(gpu, name=f"{gpu.name} (all of its memory)"),))
    else:
        available = available_memory(placement)
    check_memory(
        stage,
        spec,
        shape,
        inference_need(shape, placement, rows=rows, tokens=tokens),
        placement,
        available,
        options=lambda: inference_options(
            shape,
            placement,
            rows=rows,
            tokens=tokens,
            available=available,
            batch_field=f"{section}.batch_size",
        ),
        no_fit=f"No bf16 or batch-size setting fits: choose a smaller {field} or a device with more memory.",
    )


def _single_training_placement(ctx: StageContext) -> Placement:
    """The training placement reduced to one process: how reference / policy log-probs are scored."""
    from dataclasses import replace

    full = training_placement(ctx.config, _hardware(ctx))
    return replace(full, num_processes=1, strategy="single", gpus=full.gpus[:1])


def _scoring_placement(ctx: StageContext, spec: str, field: str, stage: str) -> Placement:
    """The training placement for one process (reference / policy log-probs), after a preflight."""
    placement = _single_training_placement(ctx)
    _check_scoring_memory(ctx, spec, field, stage, placement)
    return placement


def _check_scoring_memory(ctx: StageContext, spec: str, field: str, stage: str, placement: Placement) -> None:
    training = ctx.config.training
    _check_inference_memory(
        ctx, spec, field, stage, placement, rows=2 * training.batch_size, tokens=training.max_length
    )


def _load_policy(ctx: StageContext, spec: str, field: str, placement: Placement):
    from aipo_core.models import load_model_and_tokenizer

    return load_model_and_tokenizer(
        spec,
        access=ctx.policy_access,
        field=field,
        trust_remote_code=ctx.config.trust_remote_code,
        cache_dir=ctx.model_cache_dir,
        placement=placement,
    )


def _chat_template_note(tokenizer) -> dict[str, Any]:
    """Summary fields saying whether the prompts were formatted with the model's own chat template
    or with one we imposed because the checkpoint has none (a format the model never saw)."""
    from aipo_core.models import imposed_chat_template

    imposed = imposed_chat_template(tokenizer)
    if imposed is None:
        return {"chat_template": "model", "imposed_chat_template": 0}
    logger.warning(
        "the model has no chat template; prompts use %s, imposed by AIPO Lab (the model was not "
        "trained on this format)",
        imposed,
    )
    return {"chat_template": f"{imposed} (imposed)", "imposed_chat_template": 1}


def _earlier_instructions(ctx: StageContext) -> list[str]:
    """Every instruction of iterations 0..k-1 of this run (their instructions.jsonl)."""
    texts: list[str] = []
    for j in range(ctx.iteration):
        path = artifacts.iteration_dir(ctx.artifact_root, ctx.run_id, j) / "instructions.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"iteration {j} has no instructions.jsonl; run its stages first")
        texts += [record["instruction"] for record in artifacts.read_jsonl(path)]
    return texts


def _decontamination_summary(*counts: dict[str, int]) -> dict[str, int]:
    """`decontaminated` (total) and `decontaminated_{reason}` over several per-reason counts."""
    from aipo_core.decontamination import REASONS

    totals = {reason: sum(part.get(reason, 0) for part in counts) for reason in REASONS}
    return {"decontaminated": sum(totals.values()), **{f"decontaminated_{r}": n for r, n in totals.items()}}


def _imports_initial_pairs(ctx: StageContext) -> bool:
    """Iteration 0 of a run seeded with an existing preference dataset skips sampling."""
    return ctx.iteration == 0 and ctx.config.initial_pairs is not None


def stage_self_instruct(ctx: StageContext) -> dict[str, Any]:
    """New instructions, none of them a benchmark prompt or an earlier iteration's instruction
    (`aipo_core.decontamination`): the pool is cleaned at load, generated instructions and
    pool top-ups are checked one by one; `decontaminated*` counts all three."""
    from aipo_core.data.pools import load_prompt_pool
    from aipo_core.decontamination import Decontaminator
    from aipo_core.self_instruct import generate_instructions, top_up_from_pool

    if _imports_initial_pairs(ctx):
        artifacts.write_jsonl_atomic(ctx.out / "instructions.jsonl", [])
        return {"skipped": "initial_pairs", "instructions": 0}
    from aipo_core.data.pools import BUNDLED_POOLS

    cfg = ctx.config.self_instruct
    decontaminator = Decontaminator(_earlier_instructions(ctx))
    pool_spec = ctx.access.check_data_spec(ctx.config.prompt_pool, "prompt_pool", BUNDLED_POOLS)
    pool, pool_drops = decontaminator.clean_prompts(load_prompt_pool(pool_spec))
    if not pool:
        raise ValueError(f"prompt_pool {ctx.config.prompt_pool!r}: every prompt is a benchmark prompt")
    placement = _inference_placement(
        ctx,
        ctx.policy_in(),
        ctx.policy_field(),
        "self_instruct",
        rows=cfg.batch_size,
        tokens=1024 + cfg.max_new_tokens,
    )
    model, tokenizer = _load_policy(ctx, ctx.policy_in(), ctx.policy_field(), placement)
    result = generate_instructions(
        model,
        tokenizer,
        pool,
        cfg,
        seed=ctx.config.seed + ctx.iteration,
        sink=ctx.sink,
        decontaminator=decontaminator,
    )
    generated = len(result.instructions)
    instructions, top_up_drops = top_up_from_pool(
        result.instructions,
        pool,
        cfg.num_instructions,
        seed=ctx.config.seed + ctx.iteration,
        decontaminator=decontaminator,
    )
    artifacts.write_jsonl_atomic(ctx.out / "instructions.jsonl", instructions)
    return {
        "instructions": len(instructions),
        "generated": generated,
        "from_pool": len(instructions) - generated,
        "calls": result.calls,
        "tokens_per_s": result.tokens_per_s,
        **{f"dropped_{rule}": n for rule, n in result.drop_counts.items()},
        **_decontamination_summary(pool_drops, result.drop_counts, top_up_drops),
        "decontaminated_pool": sum(pool_drops.values()),
        "placement": placement.describe(),
    }


def stage_generate(ctx: StageContext) -> dict[str, Any]:
    from aipo_core.generation import generate_candidates, make_generator

    if _imports_initial_pairs(ctx):
        artifacts.write_jsonl_atomic(ctx.out / "candidates.jsonl", [])
        return {"skipped": "initial_pairs", "prompts": 0}
    instructions = artifacts.read_jsonl(ctx.dir / "instructions.jsonl")
    cfg = ctx.config.generation
    if cfg.backend == "vllm":
        placement = _vllm_placement(ctx)
        generator, tokenizer = _vllm_generator(
            ctx, ctx.policy_in(), ctx.policy_field(), placement, "generate"
        )
    else:
        placement = _inference_placement(
            ctx,
            ctx.policy_in(),
            ctx.policy_field(),
            "generate",
            rows=cfg.batch_size * cfg.num_candidates,
            tokens=ctx.config.training.max_prompt_length + cfg.max_new_tokens,
        )
        model, tokenizer = _load_policy(ctx, ctx.policy_in(), ctx.policy_field(), placement)
        generator = make_generator(cfg, model, tokenizer)
    records, stats = generate_candidates(
        instructions, generator, cfg, seed=ctx.config.seed + ctx.iteration, sink=ctx.sink
    )
    artifacts.write_jsonl_atomic(ctx.out / "candidates.jsonl", records)
    unfinished = sum(not done for record in records for done in record["finished"])
    return {
        "prompts": len(records),
        **stats,
        "unfinished": unfinished,
        **_chat_template_note(tokenizer),
        "placement": placement.describe(),
    }


def _vllm_placement(ctx: StageContext) -> Placement:
    """The tensor × data parallel GPUs the vllm backend samples on; refused on a CPU worker."""
    placement = inference_placement(ctx.config, _hardware(ctx), gpus=ctx.config.generation.gpus)
    if placement.device != "cuda":
        raise RuntimeError(
            "generation.backend 'vllm' needs a CUDA GPU; use backend: hf on CPU workers "
            "(the generate and evaluate stages both sample with it)"
        )
    return placement


def _vllm_generator(ctx: StageContext, spec: str, field: str, placement: Placement, stage: str):
    """vLLM in child processes over tensor × data parallel GPUs; this process never loads weights,
    so the GPUs are entirely vLLM's while it samples and entirely free once it has returned."""
    from aipo_core.generation import vllm_generator
    from aipo_core.models import load_tokenizer, resolve_model_path
    from aipo_core.preflight import check_vllm_memory, model_shape

    remote_code = ctx.access.remote_code(ctx.config.trust_remote_code)
    checked = {"access": ctx.policy_access, "field": field, "trust_remote_code": remote_code}
    path = resolve_model_path(spec, ctx.model_cache_dir, **checked)
    cfg = ctx.config.generation
    shape = model_shape(path, trust_remote_code=remote_code)
    check_vllm_memory(
        stage,
        spec,
        shape,
        placement,
        tensor_parallel=cfg.tensor_parallel_size,
        utilization=cfg.gpu_memory_utilization,
    )
    tokenizer = load_tokenizer(spec, cache_dir=ctx.model_cache_dir, **checked)
    generator = vllm_generator(cfg, path, tokenizer, placement=placement, trust_remote_code=remote_code)
    return generator, tokenizer


def stage_rank(ctx: StageContext) -> dict[str, Any]:
    """Pairs from the candidates (unfinished ones excluded unless generation.keep_unfinished), or
    the imported preference set for an initial_pairs iteration 0, decontaminated and cut to what
    training can take whole; then the reference log-probs."""
    from aipo_core.ranking import (
        exclude_unfinished,
        make_ranker,
        rank_candidates,
        select_pairs_with_outcomes,
    )

    # The training placement: the reference log-probs below must be the trainer's step-0 forward.
    placement = _scoring_placement(ctx, ctx.policy_in(), ctx.policy_field(), "rank")
    model, tokenizer = _load_policy(ctx, ctx.policy_in(), ctx.policy_field(), placement)
    training = ctx.config.training
    summary: dict[str, Any] = _chat_template_note(tokenizer)
    if _imports_initial_pairs(ctx):
        from aipo_core.data.preferences import load_preference_pairs
        from aipo_core.decontamination import Decontaminator
        from aipo_core.ranking import filter_by_training_length

        path = ctx.access.check_path(ctx.config.initial_pairs, "initial_pairs")
        imported = load_preference_pairs(path, tokenizer=tokenizer)
        pairs, contaminated = Decontaminator().clean_pairs(imported)
        pairs, too_long = filter_by_training_length(
            pairs, tokenizer, max_prompt_tokens=training.max_prompt_length, max_length=training.max_length
        )
        summary |= {
            "imported": len(imported),
            **_decontamination_summary(contaminated),
            **{f"dropped_{reason}": n for reason, n in too_long.items()},
        }
    else:
        candidates = artifacts.read_jsonl(ctx.dir / "candidates.jsonl")
        summary["candidates"] = len(candidates)
        finished_only, unfinished = exclude_unfinished(candidates)
        if ctx.config.generation.keep_unfinished:
            unfinished["dropped_unfinished"] = 0
        else:
            candidates = finished_only
        ranker_config = ctx.config.ranker
        if not (ranker_config.kind == "llm_judge" and ranker_config.model == POLICY_JUDGE):
            _check_judge_memory(
                ctx,
                "rank",
                ranker_config.kind,
                ranker_config.model,
                "ranker",
                rows=ranker_config.batch_size,
                tokens=training.max_prompt_length + 2 * ctx.config.generation.max_new_tokens,
            )
        inference = inference_placement(ctx.config, _hardware(ctx))
        ranker = make_ranker(
            ctx.config.ranker.kind,
            ctx.config.ranker.model,
            access=ctx.access,
            policy=(model, tokenizer),
            batch_size=ctx.config.ranker.batch_size,
            trust_remote_code=ctx.config.trust_remote_code,
            cache_dir=ctx.model_cache_dir,
            # A separate judge or reward model is an inference model: compute dtype, no autocast.
            placement=inference,
            length_bias=ctx.config.ranker.length_bias,
        )
        with judging_autocast(placement, inference):
            scores = rank_candidates(candidates, ranker, sink=ctx.sink)
        pairs, drops, outcomes = select_pairs_with_outcomes(
            candidates,
            scores,
            tokenizer=tokenizer,
            max_prompt_tokens=training.max_prompt_length,
            max_length=training.max_length,
        )
        # Read back by the lineage API (backend/store/candidates.py): every candidate's score.
        artifacts.write_jsonl_atomic(ctx.out / CANDIDATE_SCORES_FILE, outcomes)
        summary |= {
            **unfinished,
            **{f"dropped_{k}": v for k, v in drops.items()},
        }
    ctx.progress(0.8, "reference log-probs")
    pairs = _score_pairs(ctx, pairs, model, tokenizer, placement)
    artifacts.write_jsonl_atomic(ctx.out / "pairs.jsonl", pairs)
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
            f"iteration {ctx.iteration}: no preference pairs survived ranking and filtering "
            f"(counts per reason in {stage_summary_path(ctx, 'rank').name}); raise "
            "self_instruct.num_instructions or generation.num_candidates, or generation.max_new_tokens "
            "when candidates are cut off before EOS (dropped_unfinished)"
        )
    placement = _training_placement(ctx, ctx.policy_in(), ctx.policy_field())
    if placement.num_processes > 1:
        from aipo_core.distributed import train_distributed

        steps, metrics = train_distributed(
            model=ctx.policy_in(),
            config=ctx.config,
            pairs_path=ctx.dir / "pairs.jsonl",
            output_dir=ctx.out / "policy",
            placement=placement,
            seed=ctx.config.seed + ctx.iteration,
            workdir=ctx.out,
            sink=ctx.sink,
            model_cache_dir=ctx.model_cache_dir,
        )
        return {"steps": steps, **metrics, "placement": placement.describe()}
    model, tokenizer = _load_policy(ctx, ctx.policy_in(), ctx.policy_field(), placement)
    template = _chat_template_note(tokenizer)
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
        placement=placement,
    )
    return {"steps": result.steps, **result.metrics, **template, "placement": placement.describe()}


def _training_placement(ctx: StageContext, spec: str, field: str) -> Placement:
    """The training placement, after checking weights + gradients + AdamW + activations fit."""
    from aipo_core.devices import available_memory
    from aipo_core.preflight import check_memory, training_need, training_options

    training = ctx.config.training
    placement = training_placement(ctx.config, _hardware(ctx))
    shape = _model_shape(ctx, spec, field)
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

    if not pairs:
        return []  # the train stage says why there is nothing to train on
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


# Per pair, in pairs.jsonl order: the objective's rewards and gradient weight under θ_{k+1}.
PAIR_DIAGNOSTICS = "pair_diagnostics.jsonl"


@dataclass(frozen=True)
class _Subject:
    """A model the evaluate stage evaluates: θ_0 (iteration 0 only) or θ_{k+1}."""

    evaluated: str  # aipo_core.eval_summary.POLICY_EVALUATION or BASE_EVALUATION
    spec: str
    field: str
    index: int  # j of θ_j

    def name(self, placement: Placement) -> str:
        """The model as loaded with `placement`: θ_j on a device in a dtype (one ResidentModels key)."""
        described = placement.describe()
        return f"θ_{self.index} ({described['device']}, {described['dtype']})"


def _base_subject(ctx: StageContext) -> _Subject:
    from aipo_core.eval_summary import BASE_EVALUATION

    return _Subject(BASE_EVALUATION, ctx.config.model, "model", 0)


def _subjects(ctx: StageContext) -> list[_Subject]:
    """θ_0 first in iteration 0 (every curve starts at the base model), then θ_{k+1}."""
    from aipo_core.eval_summary import POLICY_EVALUATION

    policy = _Subject(
        POLICY_EVALUATION, str(ctx.policy_out().absolute()), f"iter_{ctx.iteration}/policy", ctx.iteration + 1
    )
    return [_base_subject(ctx), policy] if ctx.iteration == 0 else [policy]


def _judge_mode(ctx: StageContext) -> str:
    """'base' (θ_0 judges), 'policy' (each evaluated model judges itself) or 'separate' (a judge
    model of its own, PairRM, a reward model or the AlpacaEval annotator)."""
    judge = ctx.config.evaluation.judge
    if judge.kind == "llm_judge" and judge.model in (BASE_JUDGE, POLICY_JUDGE):
        return judge.model
    return "separate"


def _answering_placement(ctx: StageContext) -> Placement:
    """Where the evaluated models answer: vLLM's GPUs with generation.backend: vllm, else the
    inference placement (refused before anything loads when vllm is asked for on a CPU worker)."""
    if ctx.config.generation.backend == "vllm":
        return _vllm_placement(ctx)
    return inference_placement(ctx.config, _hardware(ctx))


def _hold_subject(
    ctx: StageContext,
    models: ResidentModels,
    subject: _Subject,
    role: str,
    placement: Placement,
    *,
    rows: int,
):
    """`subject`'s (model, tokenizer) with `placement`, loaded (after a preflight) unless held."""
    evaluation = ctx.config.evaluation
    tokens = ctx.config.training.max_length + evaluation.max_new_tokens

    def load():
        _check_inference_memory(
            ctx, subject.spec, subject.field, "evaluate", placement, rows=rows, tokens=tokens
        )
        return _load_policy(ctx, subject.spec, subject.field, placement)

    return models.hold(subject.name(placement), role, load)


def _answer(
    ctx: StageContext,
    models: ResidentModels,
    subject: _Subject,
    samples: list[EvalSample],
    placement: Placement,
    sink: Sink,
) -> dict[str, Answers]:
    """`subject`'s answers to `samples`: from vLLM's child processes (after releasing whatever
    this process holds, so vLLM gets the GPUs) or from the model loaded here with HF."""
    from aipo_core.eval_answers import answer_samples
    from aipo_core.evaluation import GENERATION_BATCH_SIZE
    from aipo_core.generation import HFGenerator

    def answered(done: int, total: int) -> None:
        sink(
            {
                "kind": "progress",
                "fraction": done / total,
                "message": f"θ_{subject.index}: answered {done}/{total}",
            }
        )

    evaluation = ctx.config.evaluation
    if ctx.config.generation.backend == "vllm":
        models.release()
        generator, _ = _vllm_generator(ctx, subject.spec, subject.field, placement, "evaluate")
        return answer_samples(generator, samples, evaluation, on_answered=answered)
    model, tokenizer = _hold_subject(ctx, models, subject, "answers", placement, rows=GENERATION_BATCH_SIZE)
    generator = HFGenerator(model, tokenizer, batch_size=GENERATION_BATCH_SIZE)
    return answer_samples(generator, samples, evaluation, on_answered=answered)


def _check_evaluation_judge_memory(ctx: StageContext, *, whole_device: bool = False) -> None:
    """The judge preflight of the evaluate stage, for a separate judge model (not the API annotator)."""
    judge, evaluation = ctx.config.evaluation.judge, ctx.config.evaluation
    if _judge_mode(ctx) != "separate" or judge.kind == "alpaca_eval":
        return
    _check_judge_memory(
        ctx,
        "evaluate",
        judge.kind,
        judge.model,
        "evaluation.judge",
        rows=judge.batch_size,
        tokens=ctx.config.training.max_length + evaluation.max_new_tokens,
        whole_device=whole_device,
    )


def _hold_judge(ctx: StageContext, models: ResidentModels, subject: _Subject, placement: Placement):
    """The evaluation judge for `subject`'s answers. A judge that is one of the run's models (θ_0
    with `model: base`, the evaluated model with `model: policy`) wraps that model as held; a
    separate judge is held itself, after the evaluated model has been released."""
    from aipo_core.evaluation import make_judge

    config = ctx.config.evaluation.judge
    mode = _judge_mode(ctx)
    shared = {
        "access": ctx.access,
        "trust_remote_code": ctx.config.trust_remote_code,
        "cache_dir": ctx.model_cache_dir,
        "placement": placement,
    }
    if mode == "separate":

        def load():
            _check_evaluation_judge_memory(ctx)  # now that the evaluated models are released
            return make_judge(config, **shared)

        return models.hold(f"judge {config.kind}:{config.model}", "judge", load)
    judge_subject = subject if mode == POLICY_JUDGE else _base_subject(ctx)
    held = _hold_subject(ctx, models, judge_subject, "judge", placement, rows=config.batch_size)
    return make_judge(config, policy=held, base=held, **shared)


def _judge(
    ctx: StageContext,
    models: ResidentModels,
    answered: list[tuple[_Subject, dict[str, Answers]]],
    samples: dict[str, EvalSample],
    placement: Placement,
    window: tuple[float, float],
) -> None:
    """Judge every answer set against its benchmark's baseline and write eval/…/{benchmark}.jsonl;
    progress runs over `window` (start, width) of the stage, one equal share per answer set."""
    from aipo_core.eval_summary import BASE_EVALUATION, BENCHMARK_BASELINES, evaluation_path, judge_info
    from aipo_core.evaluation import judge_answers

    info = judge_info(ctx.config)
    start, width = window
    share = width / sum(len(answers) for _, answers in answered)
    done = 0
    for subject, answers in answered:
        judge = _hold_judge(ctx, models, subject, placement)
        for benchmark, subject_answers in answers.items():
            result = judge_answers(
                samples[benchmark],
                subject_answers,
                judge=judge,
                judge_name=info.name(subject.index),
                baseline_model=BENCHMARK_BASELINES.get(benchmark),
                sink=_scaled_sink(ctx, start + share * done, share),
                metric_prefix=f"{BASE_EVALUATION}/" if subject.evaluated == BASE_EVALUATION else "",
            )
            artifacts.write_jsonl_atomic(
                evaluation_path(ctx.out, subject.evaluated, benchmark), result.records
            )
            done += 1


def _policy_logps(
    ctx: StageContext, pairs: list[dict[str, Any]], models: ResidentModels
) -> tuple[list[float], list[float]]:
    """logπθ(y_w), logπθ(y_l) under the trained policy θ_{k+1}, one each per pair, computed like
    s_ref (the single-process training placement: the trainer's device, weight dtype, autocast)."""
    if not pairs:
        return [], []
    policy = _subjects(ctx)[-1]
    scoring = _single_training_placement(ctx)

    def load():
        _check_scoring_memory(ctx, policy.spec, policy.field, "evaluate", scoring)
        return _load_policy(ctx, policy.spec, policy.field, scoring)

    model, tokenizer = models.hold(policy.name(scoring), "pair analysis", load)
    # The scorer names its outputs ref_*; here the scoring model is θ_{k+1}, so they are the policy's.
    scored = _score_pairs(ctx, pairs, model, tokenizer, scoring)
    return [p["ref_chosen_logps"] for p in scored], [p["ref_rejected_logps"] for p in scored]


def _analysis_summary(analysis: dict[str, Any]) -> dict[str, Any]:
    """The analysis' headline numbers, with their uncertainty, for the evaluate stage's summary."""
    gap = analysis["s_ref_length_gap"]
    spearman = gap["spearman"] or {}
    headline: dict[str, Any] = {
        "s_ref_length_gap_n": gap["n"],
        "s_ref_length_gap_spearman": spearman.get("rho"),
        "s_ref_length_gap_spearman_p": spearman.get("p_value"),
        "s_ref_length_gap_spearman_ci95_low": (spearman.get("ci95") or [None, None])[0],
        "s_ref_length_gap_spearman_ci95_high": (spearman.get("ci95") or [None, None])[1],
    }
    objective = analysis.get("objective")
    if objective:
        accuracy = objective["accuracy"]
        headline |= {
            "gradient_weight_mean": objective["gradient_weight"]["mean"],
            "reward_margin_mean": objective["margins"]["mean"],
            "reward_accuracy": accuracy["rate"],
            "reward_accuracy_ci95_low": (accuracy["ci95"] or [None, None])[0],
            "reward_accuracy_ci95_high": (accuracy["ci95"] or [None, None])[1],
        }
    return {k: v for k, v in headline.items() if v is not None}


def _analyze(ctx: StageContext, models: ResidentModels) -> dict[str, Any]:
    """Pair analysis under θ_{k+1}: writes analysis.json and pair_diagnostics.jsonl, returns headlines."""
    from aipo_core.analysis import analyze_pairs, default_embedder, pair_objective_values

    pairs = artifacts.read_jsonl(ctx.dir / "pairs.jsonl")
    name, hyperparameters = ctx.config.objective.name, ctx.config.objective.resolved()
    chosen, rejected = _policy_logps(ctx, pairs, models)
    models.release()  # the sentence embedder below is the last model this stage loads
    device = inference_placement(ctx.config, _hardware(ctx)).torch_device().type
    analysis = analyze_pairs(
        pairs,
        policy_logps=(chosen, rejected),
        objective=name,
        hyperparameters=hyperparameters,
        similarity=bool(pairs),
        embedder=default_embedder(device) if pairs else None,
    )
    per_pair = pair_objective_values(pairs, chosen, rejected, objective=name, hyperparameters=hyperparameters)
    artifacts.write_jsonl_atomic(ctx.out / PAIR_DIAGNOSTICS, per_pair)
    artifacts.write_json_atomic(ctx.out / "analysis.json", analysis)
    return _analysis_summary(analysis)


def _scaled_sink(ctx: StageContext, start: float, width: float) -> Sink:
    """A sink that maps a sub-task's progress fractions onto [start, start + width] of the stage."""

    def sink(event: dict[str, Any]) -> None:
        if event.get("kind") == "progress":
            event = {**event, "fraction": start + width * float(event.get("fraction", 0.0))}
        ctx.emit(event)

    return sink


def _evaluation_metrics(ctx: StageContext, samples: list[EvalSample]) -> dict[str, Any]:
    """Raw metrics of every evaluation file of this stage, θ_0's under `base/`."""
    from aipo_core.eval_summary import BASE_EVALUATION, evaluation_path
    from aipo_core.evaluation import eval_metrics

    summary: dict[str, Any] = {}
    for subject in _subjects(ctx):
        prefix = f"{BASE_EVALUATION}/" if subject.evaluated == BASE_EVALUATION else ""
        for sample in samples:
            records = artifacts.read_jsonl(evaluation_path(ctx.out, subject.evaluated, sample.benchmark))
            summary |= {f"{prefix}{sample.benchmark}/{k}": v for k, v in eval_metrics(records).items()}
    return summary


def stage_evaluate(ctx: StageContext) -> dict[str, Any]:
    """Answer, then judge, then analyse the pairs, holding one model at a time (aipo_core.resident):

    1. every evaluated model (θ_0 in iteration 0, θ_{k+1}) answers the fixed evaluation sample,
       through vLLM's child processes with generation.backend: vllm, else loaded here with HF;
       with `judge.model: base` θ_0 answers last and stays loaded to judge;
    2. the judge judges every answer against the baseline: the held θ_0, each evaluated model
       itself (`model: policy`, judged right after it answered), or a separate judge model, loaded
       once the evaluated models are released (a preflight checks it fits first);
    3. θ_{k+1} scores the pairs as the trainer would (pair analysis).

    Evaluation files already written by an earlier attempt in the same scratch folder are kept
    (each file is atomic); only what is missing is answered and judged. `model_lifetimes` in the
    summary lists every load and the earlier models still alive when it started (none, unless a
    reference leaked). docs/evaluation.md "Devices and memory".
    """
    from aipo_core.eval_sample import evaluation_sample
    from aipo_core.eval_summary import evaluation_path, judge_info
    from aipo_core.resident import ResidentModels

    evaluation = ctx.config.evaluation
    placement = _answering_placement(ctx)
    inference = inference_placement(ctx.config, _hardware(ctx))
    samples = [evaluation_sample(b, evaluation.limit, evaluation.seed) for b in evaluation.benchmarks]
    artifacts.write_json_atomic(
        ctx.out / "eval" / "sample.json", {sample.benchmark: sample.describe() for sample in samples}
    )
    by_benchmark = {sample.benchmark: sample for sample in samples}
    mode = _judge_mode(ctx)
    # Before answering: a judge that cannot fit even the whole device fails the stage now.
    _check_evaluation_judge_memory(ctx, whole_device=True)
    # θ_0 judging with model: base answers last, so it is still loaded when judging starts.
    order = sorted(_subjects(ctx), key=lambda s: mode == BASE_JUDGE and s.index == 0)
    pending = [
        (
            subject,
            [s for s in samples if not evaluation_path(ctx.out, subject.evaluated, s.benchmark).is_file()],
        )
        for subject in order
    ]
    pending = [(subject, todo) for subject, todo in pending if todo]
    steps = max(1, 2 * len(pending))
    models: ResidentModels = ResidentModels()
    answered: list[tuple[_Subject, dict[str, Answers]]] = []
    for n, (subject, todo) in enumerate(pending):
        # Progress shares: self-judged, answer n and judge n alternate; else all answers, then judging.
        start = 0.9 * (2 * n if mode == POLICY_JUDGE else n) / steps
        ctx.progress(start, f"θ_{subject.index} answers {len(todo)} benchmark(s)")
        answers = _answer(ctx, models, subject, todo, placement, _scaled_sink(ctx, start, 0.9 / steps))
        if mode == POLICY_JUDGE:  # judged by itself, while it is loaded
            judging = (0.9 * (2 * n + 1) / steps, 0.9 / steps)
            _judge(ctx, models, [(subject, answers)], by_benchmark, inference, judging)
        else:
            answered.append((subject, answers))
    if answered:
        judging = (0.9 * len(pending) / steps, 0.9 * len(answered) / steps)
        _judge(ctx, models, answered, by_benchmark, inference, judging)
    summary: dict[str, Any] = {"judge": judge_info(ctx.config).label, **_evaluation_metrics(ctx, samples)}
    ctx.progress(0.9, "pair analysis")
    summary["pair_analysis"] = _analyze(ctx, models)
    return {**summary, "model_lifetimes": models.describe(), "placement": placement.describe()}


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
    access: ModelAccess | None = None,
    hardware: Hardware | None = None,
    scratch_dir: Path | None = None,
) -> dict[str, Any]:
    """Run one stage of one iteration (idempotent) and return its summary metrics.

    `access` is the operator's loading policy (default: built-in models and bundled data only);
    the whole config is checked against it before anything loads. After an evaluate stage the
    run's policy folders are pruned per `training.keep_policies` (aipo_core.retention).
    `hardware` defaults to what this process sees (`Hardware.probe()`). Without `scratch_dir` the
    stage's outputs are published into `iter_{k}/` before returning; with one, they (and the
    completion marker) are left there for the caller to `publish`.
    """
    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"stage {stage!r} is unknown; expected one of {', '.join(STAGES)}")
    if not 0 <= iteration < config.iterations:
        raise ValueError(f"iteration {iteration} is outside 0..{config.iterations - 1}")
    access = access or ModelAccess()
    check_run_config(config, access)
    root, marker = Path(artifact_root), artifacts.stage_marker_name(stage)
    summary_path = artifacts.iteration_dir(root, str(run_id), iteration) / marker
    if artifacts.is_complete(summary_path):
        summary = artifacts.read_json(summary_path)
    else:
        publish_here = scratch_dir is None
        if scratch_dir is None:
            # In-process runs have one attempt at a time: a crashed call's scratch folder is kept,
            # so a retried evaluate reuses the evaluations it had finished (files are atomic).
            out = artifacts.scratch_dir(root, str(run_id), iteration, stage, LOCAL_ATTEMPT)
        else:
            out = Path(scratch_dir)
        out.mkdir(parents=True, exist_ok=True)
        ctx = StageContext(
            config, root, str(run_id), iteration, model_cache_dir, sink, access, hardware, scratch=out
        )
        started = time.perf_counter()
        ctx.progress(0.0, f"{stage} started")
        summary = STAGE_FUNCTIONS[stage](ctx)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        artifacts.write_json_atomic(out / marker, summary)
        if publish_here:
            artifacts.publish(out, ctx.dir, marker=marker)
            artifacts.discard_scratch(out)
        ctx.progress(1.0, f"{stage} done")
    if stage == "evaluate":
        prune_policies(root, str(run_id), config)
    return summary


def run(
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    sink: Sink | None = None,
    model_cache_dir: Path | None = None,
    on_stage: Callable[[int, str, dict[str, Any]], None] | None = None,
    access: ModelAccess | None = None,
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
                access=access,
            )
            if on_stage is not None:
                on_stage(k, stage, summaries[stage])
        history.append(summaries)
    return history
