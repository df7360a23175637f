"""Request and response models of the HTTP API (docs/architecture.md §8), with OpenAPI examples.

Names follow <Thing><Role>: RunCreate (request), RunPublic (one run), RunList (a page), ...
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from aipo_core.config import RunConfig
from backend.routing import STAGES as PIPELINE_STAGES
from backend.store.models import RUN_STATUSES, STAGE_STATUSES
from backend.validation import storable_text

SafeStr = Annotated[str, AfterValidator(storable_text)]
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
StageStatus = Literal["pending", "queued", "running", "succeeded", "failed", "cancelled", "skipped"]
assert set(RunStatus.__args__) == set(RUN_STATUSES)  # type: ignore[attr-defined]
assert set(StageStatus.__args__) == set(STAGE_STATUSES)  # type: ignore[attr-defined]
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1

EXAMPLE_CONFIG: dict[str, Any] = {
    "name": "aipo-smollm2",
    "model": "smollm2-135m-instruct",
    "iterations": 2,
    "seed": 0,
    "prompt_pool": "self_instruct_seeds",
    "self_instruct": {"num_instructions": 32, "num_seed_examples": 8, "temperature": 0.5, "top_p": 0.9},
    "generation": {
        "backend": "hf",
        "num_candidates": 4,
        "temperature": 0.7,
        "top_p": 1.0,
        "max_new_tokens": 128,
    },
    "ranker": {"kind": "llm_judge", "model": "policy"},
    "objective": {"name": "aipo", "beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
    "training": {"batch_size": 8, "learning_rate": 5.0e-7, "epochs": 1, "warmup_ratio": 0.1},
    "evaluation": {
        "benchmarks": ["alpaca_eval"],
        "limit": 32,
        "seed": 0,
        "judge": {"kind": "llm_judge", "model": "base"},
    },
}
EXAMPLE_TIME = "2025-01-01T12:00:00Z"


class ErrorPublic(BaseModel):
    """Error body of 401/404/409 responses."""

    detail: str = Field(examples=["run 7 not found"])


class HealthPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok", "database": "ok"}]})
    status: Literal["ok"]
    database: Literal["ok", "unreachable"]


class RunCreate(RunConfig):
    """A run config (YAML keys as JSON); unknown keys are rejected."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_CONFIG]})


class RunProgressPublic(BaseModel):
    stages_done: int
    stages_total: int
    fraction: float = Field(ge=0, le=1)
    current_stage: str | None
    current_iteration: int | None


class RunEvaluationPublic(BaseModel):
    """A run's latest evaluation (docs/evaluation.md): the highest θ_j evaluated on the run's first
    benchmark, with who judged it, the sample it was judged on, and every rate's standard error."""

    benchmark: str
    evaluated: Literal["base", "policy"]
    iteration: int | None = Field(description="The iteration that trained the evaluated policy; θ_0: null.")
    policy_index: int = Field(description="j of the evaluated θ_j (0 = base model).")
    judge: str
    judge_label: str
    self_judged: bool = Field(description="The evaluated policy judged itself (not comparable across j).")
    n: int = Field(description="Judged prompts.")
    seed: int = Field(description="evaluation.seed: runs with the same seed are judged on the same prompts.")
    win_rate: float | None
    win_rate_se: float | None
    lc_win_rate: float | None
    lc_win_rate_se: float | None
    lc_unavailable_reason: str | None
    avg_length: float | None = Field(description="Mean output length in characters.")
    avg_tokens: float | None


class RunPublic(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "name": "aipo-smollm2",
                    "objective": "aipo",
                    "status": "running",
                    "config": EXAMPLE_CONFIG,
                    "error": None,
                    "created_at": EXAMPLE_TIME,
                    "updated_at": EXAMPLE_TIME,
                    "launched_at": EXAMPLE_TIME,
                    "started_at": EXAMPLE_TIME,
                    "finished_at": None,
                    "sweep_id": None,
                    "sweep_point": None,
                    "parent_run_id": None,
                    "created_by": "alice",
                    "progress": {
                        "stages_done": 3,
                        "stages_total": 10,
                        "fraction": 0.3,
                        "current_stage": "train",
                        "current_iteration": 0,
                    },
                    "latest_evaluation": {
                        "benchmark": "alpaca_eval",
                        "evaluated": "policy",
                        "iteration": 0,
                        "policy_index": 1,
                        "judge": "llm_judge:smollm2-135m-instruct",
                        "judge_label": "base model θ_0 (smollm2-135m-instruct), fixed",
                        "self_judged": False,
                        "n": 32,
                        "seed": 0,
                        "win_rate": 31.2,
                        "win_rate_se": 7.1,
                        "lc_win_rate": None,
                        "lc_win_rate_se": None,
                        "lc_unavailable_reason": "too few judgements to estimate this judge's length slope "
                        "(32 < 50)",
                        "avg_length": 410.5,
                        "avg_tokens": 96.0,
                    },
                }
            ]
        },
    )
    id: int
    name: str
    objective: str
    status: RunStatus
    config: dict[str, Any]
    error: str | None
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    sweep_id: int | None
    sweep_point: dict[str, Any] | None
    parent_run_id: int | None
    created_by: str | None = Field(
        None, description='Name of the token that created the run ("operator": the bootstrap token).'
    )
    progress: RunProgressPublic | None = None
    latest_evaluation: RunEvaluationPublic | None = Field(
        None, description="The latest evaluation (null before the first evaluate stage has finished)."
    )


class RunList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [], "total": 0, "limit": 50, "offset": 0, "active": 0}]}
    )
    items: list[RunPublic]
    total: int
    limit: int
    offset: int
    active: int = Field(
        description="Runs queued or running, whatever the filters (should a runs page keep refreshing?)."
    )


class RunClone(BaseModel):
    """Overrides as dotted paths into the parent's config."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"overrides": {"objective.alpha": 0.03, "name": "aipo-alpha-0.03"}}]},
    )
    overrides: dict[SafeStr, Any] = Field(default_factory=dict, max_length=100)


class SweepCreate(BaseModel):
    """A base config plus a grid of dotted-path overrides; one child run per grid point."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "aipo-grid",
                    "base_config": EXAMPLE_CONFIG,
                    "grid": {"objective.alpha": [0.03, 0.05, 0.07], "objective.lambda_": [0.2, 0.5]},
                    "max_concurrent": 2,
                }
            ]
        },
    )
    name: SafeStr = Field(min_length=1, max_length=150)
    base_config: RunCreate
    grid: dict[SafeStr, Annotated[list[Any], Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=8
    )
    max_concurrent: int = Field(2, ge=1, le=256, description="Child runs active at once; the rest wait.")


class SweepPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "name": "aipo-grid",
                    "base_config": EXAMPLE_CONFIG,
                    "grid": {"objective.alpha": [0.03, 0.05, 0.07], "objective.lambda_": [0.2, 0.5]},
                    "max_concurrent": 2,
                    "created_at": EXAMPLE_TIME,
                    "created_by": "alice",
                    "status_counts": {"queued": 4, "running": 2},
                    "runs": [],
                }
            ]
        }
    )
    id: int
    name: str
    base_config: dict[str, Any]
    grid: dict[str, list[Any]]
    max_concurrent: int
    created_at: datetime
    created_by: str | None = Field(None, description="Name of the token that created the sweep.")
    status_counts: dict[str, int]
    runs: list[RunPublic]


class PlacementPublic(BaseModel):
    """Where a stage's model ran (`aipo_core.devices.Placement.describe()`)."""

    device: str = Field(description="cpu or cuda:<index> (the first of its GPUs)")
    dtype: str = Field(description="dtype the weights were loaded in")
    compute_dtype: str = Field(description="dtype of the forward (autocast), e.g. bfloat16")
    num_processes: int
    strategy: str = Field(description="single | ddp | fsdp | deepspeed_zero3")
    gpu_count: int
    gpu_name: str | None
    gpu_memory_gib: float | None


class StagePublic(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 4,
                    "run_id": 1,
                    "iteration": 0,
                    "name": "train",
                    "position": 3,
                    "queue": "gpu",
                    "status": "running",
                    "attempt": 1,
                    "progress": 0.42,
                    "message": "step 21/50",
                    "heartbeat_at": EXAMPLE_TIME,
                    "task_id": "5d0c…",
                    "artifact_path": None,
                    "log_path": "/home/u/.aipo/runs/1/logs/iter_0_train.log",
                    "error": None,
                    "queued_at": EXAMPLE_TIME,
                    "started_at": EXAMPLE_TIME,
                    "finished_at": None,
                    "placement": None,
                }
            ]
        },
    )
    id: int
    run_id: int
    iteration: int
    name: str
    position: int
    queue: str
    status: StageStatus
    attempt: int
    progress: float
    message: str | None
    heartbeat_at: datetime | None
    task_id: str | None
    artifact_path: str | None
    log_path: str | None
    error: str | None
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    placement: PlacementPublic | None = Field(
        None, description="Device, dtypes, processes and GPU the stage's model ran on (set when done)."
    )


class StageList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": []}]})
    items: list[StagePublic]


class PairStatsPublic(BaseModel):
    pairs: int
    agreement_rate: float | None = Field(description="P(s_ref > 0): the reference agrees with the judge.")
    mean_s_ref: float | None
    mean_chosen_length: float | None
    mean_rejected_length: float | None


class EvaluationPublic(BaseModel):
    """One model judged against a benchmark's baseline, raw and length-controlled (docs/evaluation.md).

    Every rate is a percentage with its standard error. `lc_win_rate` is null when the judgements
    cannot support one, and `lc_unavailable_reason` says why. LC is computed when read, over all of
    the run's evaluations by the same judge on the same benchmark (one shared length slope).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "benchmark": "alpaca_eval",
                    "evaluated": "policy",
                    "iteration": 0,
                    "policy_index": 1,
                    "judge": "llm_judge:smollm2-135m-instruct",
                    "judge_label": "base model θ_0 (smollm2-135m-instruct), fixed",
                    "self_judged": False,
                    "baseline_model": "gpt4_1106_preview",
                    "prompt_ids": ["63", "77", "81"],
                    "n": 32,
                    "n_unjudged": 0,
                    "win_rate": 31.2,
                    "win_rate_se": 7.1,
                    "lc_win_rate": None,
                    "lc_win_rate_se": None,
                    "lc_unavailable_reason": "too few judgements to estimate this judge's length slope "
                    "(32 < 50)",
                    "slope_source": "estimated",
                    "length_slope": None,
                    "length_slope_se": None,
                    "lc_pooled_n": 32,
                    "lc_pooled_evaluations": 1,
                    "discrete_win_rate": 31.2,
                    "avg_length": 410.5,
                    "avg_tokens": 96.0,
                }
            ]
        }
    )
    benchmark: str
    evaluated: Literal["base", "policy"] = Field(
        description="'base' = θ_0, the initial model before any training; "
        "'policy' = θ_{k+1}, trained in iteration k."
    )
    iteration: int | None = Field(description="The iteration that trained the evaluated policy; θ_0: null.")
    policy_index: int = Field(description="j of the evaluated θ_j (0 = base model): the x-axis of a curve.")
    judge: str = Field(description="Who judged: llm_judge:smollm2-135m-instruct, llm_judge:policy θ_2, …")
    judge_label: str = Field(description="For display, e.g. 'self-judged (changes every iteration)'.")
    self_judged: bool = Field(description="The evaluated policy judged itself (a different judge each time).")
    baseline_model: str | None = Field(description="Whose answers the model is compared with.")
    prompt_ids: list[str] = Field(description="The benchmark prompts evaluated (the run's fixed sample).")
    n: int = Field(description="Judged prompts.")
    n_unjudged: int = 0
    win_rate: float | None = None
    win_rate_se: float | None = None
    lc_win_rate: float | None = None
    lc_win_rate_se: float | None = None
    lc_unavailable_reason: str | None = None
    slope_source: Literal["prior", "estimated", "not_needed"] | None = Field(
        None,
        description="prior: AlpacaEval's published slope (its GPT-4-Turbo annotator only); estimated: from "
        "this judge's judgements pooled over the run; not_needed: no length difference.",
    )
    length_slope: float | None = None
    length_slope_se: float | None = None
    lc_pooled_n: int | None = Field(None, description="Judgements the length slope was estimated from.")
    lc_pooled_evaluations: int | None = None
    discrete_win_rate: float | None = None
    n_wins: int | None = None
    n_wins_base: int | None = None
    n_draws: int | None = None
    avg_length: float | None = Field(None, description="Mean output length in characters.")
    avg_tokens: float | None = None


class IterationPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "index": 0,
                    "status": "succeeded",
                    "started_at": EXAMPLE_TIME,
                    "finished_at": EXAMPLE_TIME,
                    "stages": {"self_instruct": "succeeded", "train": "succeeded"},
                    "eval_metrics": {"alpaca_eval/win_rate": 12.5, "alpaca_eval/lc_win_rate": 14.1},
                    "pair_stats": {
                        "pairs": 30,
                        "agreement_rate": 0.6,
                        "mean_s_ref": 2.1,
                        "mean_chosen_length": 80.5,
                        "mean_rejected_length": 70.2,
                    },
                }
            ]
        }
    )
    index: int
    status: StageStatus
    started_at: datetime | None
    finished_at: datetime | None
    stages: dict[str, StageStatus]
    eval_metrics: dict[str, float | None] = Field(
        description="Flat evaluate-stage metrics of θ_{k+1} ('alpaca_eval/win_rate', …; LC recomputed "
        "over the whole run, null when unavailable). `evaluations` has them with their context."
    )
    pair_stats: PairStatsPublic | None
    evaluations: dict[str, EvaluationPublic] = Field(
        default_factory=dict, description="θ_{k+1}, the policy this iteration trained, per benchmark."
    )


class IterationList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [],
                    "base_evaluations": {},
                    "judge_label": "base model θ_0 (smollm2-135m-instruct), fixed",
                    "self_judged": False,
                }
            ]
        }
    )
    items: list[IterationPublic]
    base_evaluations: dict[str, EvaluationPublic] = Field(
        default_factory=dict,
        description="θ_0, the base model before any training, per benchmark: where every curve starts. "
        "Evaluated by iteration 0's evaluate stage with the same judge and prompts.",
    )
    judge_label: str | None = Field(None, description="The run's evaluation judge, for display.")
    self_judged: bool | None = Field(None, description="True when the policy judges itself (not comparable).")


class MetricPointCreate(BaseModel):
    """A point sent by a client. The pipeline stages' names are reserved for the workers, so that
    nothing sent over HTTP can stand in for (or pre-empt) a metric the pipeline computes."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"key": "loss", "iteration": 0, "stage": "my_probe", "step": 10, "value": 0.69}]
        },
    )
    key: Annotated[SafeStr, Field(min_length=1, max_length=200)]
    iteration: int = Field(0, ge=0, le=MAX_INT32)
    stage: Annotated[
        SafeStr,
        Field(max_length=32, description=f"Any name but the pipeline's ({', '.join(PIPELINE_STAGES)})."),
    ] = ""
    step: int = Field(ge=0, le=MAX_INT64)
    value: float | None = Field(description="NaN/inf are stored as null.")
    time: datetime | None = None

    @field_validator("stage")
    @classmethod
    def _not_a_pipeline_stage(cls, stage: str, info: ValidationInfo) -> str:
        if stage in PIPELINE_STAGES:
            key = info.data.get("key")
            raise ValueError(
                f"{f'key {key!r}: ' if key else ''}stage {stage!r} is reserved: the pipeline stages "
                f"({', '.join(PIPELINE_STAGES)}) are written only by workers; log under another stage name"
            )
        return stage


class MetricIngest(BaseModel):
    """A batch of points; (iteration, stage, key, step) already stored are skipped (idempotent)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"points": [{"key": "loss", "iteration": 0, "stage": "my_probe", "step": 1, "value": 0.69}]}
            ]
        },
    )
    points: list[MetricPointCreate] = Field(min_length=1, max_length=100_000)


class MetricIngestResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"received": 1000, "inserted": 1000}]})
    received: int
    inserted: int = Field(description="New points; received − inserted were already stored.")


class MetricHistoryPoint(BaseModel):
    iteration: int
    stage: str
    attempt: int = Field(description="The stage attempt that logged it (0: sent to the API).")
    step: int = Field(description="Step of the first point in the bucket.")
    value: float | None = Field(description="Mean over the bucket (the raw value when not downsampled).")
    min: float | None
    max: float | None
    count: int


class MetricSeries(BaseModel):
    key: str
    total: int = Field(
        description="Points selected (each (iteration, stage)'s latest attempt, or `attempt`'s); above "
        "`points` the series is bucket-averaged (buckets never straddle an iteration, so at most "
        "points + iterations - 1 entries)."
    )
    points: list[MetricHistoryPoint]


class MetricHistory(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "series": [
                        {
                            "key": "loss",
                            "total": 2,
                            "points": [
                                {
                                    "iteration": 0,
                                    "stage": "train",
                                    "attempt": 1,
                                    "step": 0,
                                    "value": 0.69,
                                    "min": 0.69,
                                    "max": 0.69,
                                    "count": 1,
                                },
                                {
                                    "iteration": 0,
                                    "stage": "train",
                                    "attempt": 1,
                                    "step": 1,
                                    "value": 0.65,
                                    "min": 0.65,
                                    "max": 0.65,
                                    "count": 1,
                                },
                            ],
                        }
                    ]
                }
            ]
        }
    )
    series: list[MetricSeries]


class MetricKeyPublic(BaseModel):
    key: str
    count: int


class MetricKeyList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [{"key": "loss", "count": 120}]}]})
    items: list[MetricKeyPublic]


class PairPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "iteration": 0,
                    "idx": 0,
                    "uid": "p-0",
                    "prompt": [{"role": "user", "content": "Name three primes."}],
                    "prompt_text": "Name three primes.",
                    "chosen": "2, 3 and 5.",
                    "rejected": "4, 6, 8.",
                    "score_chosen": 0.9,
                    "score_rejected": 0.1,
                    "chosen_length": 7,
                    "rejected_length": 6,
                    "chosen_chars": 11,
                    "rejected_chars": 8,
                    "ref_chosen_logps": -12.0,
                    "ref_rejected_logps": -15.5,
                    "s_ref": 3.5,
                    "length_diff": 1,
                    "extra": None,
                }
            ]
        }
    )
    id: int
    iteration: int
    idx: int
    uid: str | None
    prompt: list[dict[str, Any]]
    prompt_text: str
    chosen: str
    rejected: str
    score_chosen: float | None
    score_rejected: float | None
    chosen_length: int | None
    rejected_length: int | None
    chosen_chars: int | None
    rejected_chars: int | None
    ref_chosen_logps: float | None
    ref_rejected_logps: float | None
    s_ref: float | None
    length_diff: int | None = Field(description="chosen_length − rejected_length (tokens).")
    extra: dict[str, Any] | None


class PairPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [], "next_cursor": "0:49", "total": None}]}
    )
    items: list[PairPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    total: int | None = Field(description="Matching pairs (only with include_total=true).")


class EvalSamplePublic(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "iteration": 0,
                    "benchmark": "alpaca_eval",
                    "evaluated": "policy",
                    "idx": 0,
                    "uid": "0",
                    "instruction": "What are the names of some famous actors?",
                    "output": "Some famous actors are …",
                    "baseline_output": "Here are some famous actors: …",
                    "preference": 1.0,
                    "output_chars": 120,
                    "baseline_chars": 800,
                    "output_tokens": 30,
                    "extra": None,
                }
            ]
        },
    )
    id: int
    iteration: int
    benchmark: str
    evaluated: Literal["base", "policy"] = Field(
        "policy", description="'base' = θ_0's answer (stored with iteration 0), 'policy' = θ_{k+1}'s."
    )
    idx: int
    uid: str | None
    instruction: str
    output: str
    baseline_output: str | None
    preference: float | None = Field(description="AlpacaEval convention: 2 = model preferred, 1 = baseline.")
    output_chars: int | None
    baseline_chars: int | None
    output_tokens: int | None
    extra: dict[str, Any] | None


class EvalSamplePage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [], "next_cursor": None, "total": 0}]}
    )
    items: list[EvalSamplePublic]
    next_cursor: str | None
    total: int


class ObjectivePublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "aipo",
                    "hyperparameters": ["beta", "alpha", "lambda_"],
                    "defaults": {"beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
                    "citation": "Shen et al. 2024, Eq. 10",
                    "loss_formula": "−logσ(β(s_θ − (1+α)s_ref)) + λ·(−logπθ(y_w)/|y_w|)",
                    "reward_formula": "β(logπθ(y) − (1+α)·logπref(y))",
                    "gradient_weight_formula": "σ(β((1+α)s_ref − s_θ))",
                    "gradient_weight_range": [0.0, 1.0],
                    "scales_reference": True,
                }
            ]
        }
    )
    name: str
    hyperparameters: list[str]
    defaults: dict[str, float]
    citation: str
    loss_formula: str = Field(description="The per-pair loss (docs/objectives.md)")
    reward_formula: str = Field(
        description="The implicit reward r(y) behind rewards_chosen / rewards_rejected / margins / accuracy"
    )
    gradient_weight_formula: str = Field(
        description="w = −(1/c)·∂loss/∂(r(y_w) − r(y_l)); DPO's is σ(β(s_ref − s_θ)) (AIPO Eq. 8, α = 0)"
    )
    gradient_weight_range: list[float] | None = Field(
        description="[low, high] the weight lies in; null where it is unbounded (IPO)"
    )
    scales_reference: bool = Field(description="alpha scales the reference margin: (1+α)·s_ref")


class PrincipalPublic(BaseModel):
    """The caller, as the server sees its token (what the dashboard shows after sign-in)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "alice", "scope": "read", "operator": False}]}
    )
    name: str = Field(description='The token\'s name; "operator" for the bootstrap token.')
    scope: Literal["read", "write"] = Field(description="read: GET only; write: everything.")
    operator: bool = Field(description="True for the bootstrap token (AIPO_API_TOKEN / $AIPO_HOME/token).")


class PairUploadPublic(BaseModel):
    """A stored preference file: put `path` in a run config's `initial_pairs`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"path": "/home/u/.aipo/uploads/pairs-5f0c2a.jsonl", "pairs": 1000, "bytes": 2480133}
            ]
        }
    )
    path: str
    pairs: int = Field(description="Rows that passed validation (all of them; one bad row refuses the file).")
    bytes: int


# ----------------------------------------------------------------------------- launch preview

EXAMPLE_PREVIEW: dict[str, Any] = {
    "name": "aipo-smollm2",
    "iterations": 2,
    "sampled_iterations": 2,
    "new_instructions": 32,
    "candidates_per_prompt": 4,
    "candidates": 256,
    "generation_tokens": {"self_instruct": 16384, "candidates": 32768, "evaluation": 16384, "total": 65536},
    "training_pairs": 64,
    "training_tokens": 81920,
    "judge_passes": 896,
    "eval_prompts": 32,
    "model": {
        "spec": "smollm2-135m-instruct",
        "parameters": 134515008,
        "source": "built-in smollm2-135m-instruct architecture",
    },
    "stages": [
        {"name": name, "queue": "gpu"} for name in ("self_instruct", "generate", "rank", "train", "evaluate")
    ],
    "stages_total": 10,
    "queues": ["gpu"],
    "active_runs": 0,
    "notes": [],
}


class ModelSizePublic(BaseModel):
    spec: str = Field(description="The config's `model`.")
    parameters: int | None = Field(description="Parameter count; null when it cannot be known here.")
    source: str = Field(description="How it was counted, or why it is unavailable.")


class GenerationTokensPublic(BaseModel):
    """Upper bounds on generated tokens over the whole run (generation usually stops earlier)."""

    self_instruct: int
    candidates: int
    evaluation: int
    total: int


class StagePlanPublic(BaseModel):
    name: str
    queue: str


class RunPreviewPublic(BaseModel):
    """What a run would cost, before it is created (see aipo_core/estimate.py for the formulas)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_PREVIEW]})
    name: str
    iterations: int
    sampled_iterations: int = Field(
        description="Iterations that sample (iteration 0 of initial_pairs does not)."
    )
    new_instructions: int = Field(description="Self-instructed prompts per sampled iteration.")
    candidates_per_prompt: int
    candidates: int = Field(description="sampled_iterations × new_instructions × candidates_per_prompt.")
    generation_tokens: GenerationTokensPublic
    training_pairs: int | None = Field(description="Pair passes of training over the run, epochs included.")
    training_tokens: int | None = Field(description="Upper bound on tokens the policy is trained on.")
    judge_passes: int = Field(description="Forward passes of the ranking and evaluation judges.")
    eval_prompts: int = Field(description="Judged benchmark prompts per iteration.")
    model: ModelSizePublic
    stages: list[StagePlanPublic] = Field(description="One iteration's stages, in order, with their queue.")
    stages_total: int
    queues: list[str]
    active_runs: int = Field(description="Runs queued or running now, which this one would wait behind.")
    notes: list[str]


class SweepChildPreviewPublic(BaseModel):
    name: str
    point: dict[str, Any]
    candidates: int
    generation_tokens: int
    training_tokens: int | None
    judge_passes: int
    model_parameters: int | None


class SweepTotalsPublic(BaseModel):
    """Sums over every child run (training_tokens null if any child's is unknown)."""

    candidates: int
    generation_tokens: int
    training_tokens: int | None
    judge_passes: int
    stages_total: int


class SweepPreviewPublic(BaseModel):
    """What a sweep would cost, before anything is created."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "aipo-grid",
                    "runs": 6,
                    "max_concurrent": 2,
                    "totals": {
                        "candidates": 1536,
                        "generation_tokens": 393216,
                        "training_tokens": 491520,
                        "judge_passes": 5376,
                        "stages_total": 60,
                    },
                    "children": [],
                    "models": [EXAMPLE_PREVIEW["model"]],
                    "stages": EXAMPLE_PREVIEW["stages"],
                    "queues": ["gpu"],
                    "active_runs": 0,
                    "notes": [],
                }
            ]
        }
    )
    name: str
    runs: int
    max_concurrent: int
    totals: SweepTotalsPublic
    children: list[SweepChildPreviewPublic]
    models: list[ModelSizePublic] = Field(description="Each distinct model of the children, with its size.")
    stages: list[StagePlanPublic]
    queues: list[str]
    active_runs: int
    notes: list[str]


class GPUPublic(BaseModel):
    index: int
    name: str
    memory_gib: float


class WorkerStagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    run_id: int
    iteration: int
    name: str


class WorkerPublic(BaseModel):
    """A Celery worker as it last reported itself."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "gpu@node1",
                    "host": "node1",
                    "pid": 4242,
                    "queues": ["gpu", "gpu2", "gpu3", "gpu4"],
                    "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.1}],
                    "gpu_count": 4,
                    "stage": {"id": 4, "run_id": 1, "iteration": 0, "name": "train"},
                    "started_at": EXAMPLE_TIME,
                    "heartbeat_at": EXAMPLE_TIME,
                    "alive": True,
                }
            ]
        },
    )
    name: str
    host: str
    pid: int
    queues: list[str]
    gpus: list[GPUPublic]
    gpu_count: int
    stage: WorkerStagePublic | None = Field(description="the stage it is running, null when idle")
    started_at: datetime
    heartbeat_at: datetime
    alive: bool = Field(description="heartbeat younger than AIPO_STAGE_HEARTBEAT_TIMEOUT_S")


class WorkerList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": []}]})
    items: list[WorkerPublic]


# --- lineage and comparison (issue 10 product) ---

#: Most runs one lineage or comparison request may name (a comparison is every pair of them).
MAX_COMPARED_RUNS = 8
Verdict = Literal["model preferred", "baseline preferred", "tie", "not judged"]


class CandidatePublic(BaseModel):
    """One sampled answer to a prompt, as generated and as the ranker saw it."""

    index: int = Field(description="Position among the prompt's candidates (candidates.jsonl order).")
    text: str
    score: float | None = Field(
        description="The ranker's score (higher = better; only the order within a prompt means anything). "
        "Null: not scored (cut off before EOS, or the rank stage recorded no scores)."
    )
    length: int | None = Field(description="Generated tokens.")
    chars: int
    finished: bool = Field(description="Stopped at EOS (false: cut off at generation.max_new_tokens).")
    role: Literal["chosen", "rejected"] | None = Field(description="Its part in the prompt's pair, if any.")
    ref_logps: float | None = Field(
        description="Summed log-prob under the reference θ_k; only the pair's two answers are scored."
    )


class PromptCandidatesPublic(BaseModel):
    """Every candidate of one prompt of one iteration, and why its pair is what it is."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "run_id": 1,
                    "iteration": 0,
                    "prompt_id": "p-0",
                    "instruction": "Name a fruit.",
                    "ranker": "pairrm:llm-blender/PairRM",
                    "selection_rule": "chosen = the candidate the ranker scored highest, …",
                    "outcome": "pair",
                    "scores_unavailable_reason": None,
                    "pair_id": 12,
                    "s_ref": -4.5,
                    "candidates": [
                        {"index": 0, "text": "A lemon.", "score": 0.9, "length": 4, "chars": 8,
                         "finished": True, "role": "chosen", "ref_logps": -12.0},
                        {"index": 1, "text": "Cars", "score": -1.5, "length": 2, "chars": 4,
                         "finished": True, "role": "rejected", "ref_logps": -7.5},
                    ],
                }
            ]
        }
    )  # fmt: skip

    run_id: int
    iteration: int
    prompt_id: str
    instruction: str
    ranker: str = Field(description="Who scored the candidates (ranker kind:model).")
    selection_rule: str
    outcome: str | None = Field(
        description="'pair' (a pair was kept), else the reason none was (tie, identical_texts, "
        "dropped_unfinished, …); null when the rank stage recorded no outcome."
    )
    scores_unavailable_reason: str | None = None
    pair_id: int | None = Field(description="The stored pair of this prompt (GET /runs/{id}/pairs).")
    s_ref: float | None
    candidates: list[CandidatePublic]


class EvalOutputPublic(BaseModel):
    """One model's answer to the prompt with the judge's verdict against the baseline."""

    evaluated: Literal["base", "policy"]
    iteration: int | None = Field(description="The iteration that trained the policy; θ_0: null.")
    policy_index: int = Field(description="j of θ_j (0 = base model).")
    judge: str
    output: str
    output_chars: int | None
    output_tokens: int | None
    preference: float | None = Field(description="AlpacaEval convention: 2 = model preferred, 1 = baseline.")
    verdict: Verdict


class RunEvalLineagePublic(BaseModel):
    run_id: int
    run_name: str
    objective: str
    judge_label: str
    self_judged: bool
    sample_size: int | None = Field(description="evaluation.limit: prompts per benchmark (null = all).")
    eval_seed: int = Field(description="evaluation.seed: runs with the same seed share the prompts.")
    outputs: list[EvalOutputPublic] = Field(description="θ_0 first, then θ_1, θ_2, … of this run.")


class EvalSampleLineagePublic(BaseModel):
    """One evaluation prompt across the iterations of several runs, with the baseline answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "benchmark": "alpaca_eval",
                    "prompt_id": "63",
                    "instruction": "What are the names of some famous actors?",
                    "baseline_output": "Here are some famous actors: …",
                    "baseline_model": "gpt4_1106_preview",
                    "runs": [
                        {
                            "run_id": 1, "run_name": "aipo-smollm2", "objective": "aipo",
                            "judge_label": "base model θ_0 (smollm2-135m-instruct), fixed",
                            "self_judged": False, "sample_size": 32, "eval_seed": 0,
                            "outputs": [
                                {"evaluated": "base", "iteration": None, "policy_index": 0,
                                 "judge": "llm_judge:smollm2-135m-instruct", "output": "Tom Hanks.",
                                 "output_chars": 10, "output_tokens": 4, "preference": 1.0,
                                 "verdict": "baseline preferred"},
                            ],
                        }
                    ],
                }
            ]
        }
    )  # fmt: skip

    benchmark: str
    prompt_id: str
    instruction: str
    baseline_output: str | None
    baseline_model: str | None
    runs: list[RunEvalLineagePublic] = Field(description="In the order asked; a run without it is absent.")


class PairedDifferencePublic(BaseModel):
    """Run b minus run a on the prompts both judged: win-rate difference with its paired SE."""

    run_a: int
    run_b: int
    benchmark: str
    policy_index_a: int | None = Field(description="The θ_j of run a compared: its latest evaluated.")
    policy_index_b: int | None
    judge_a: str | None
    judge_b: str | None
    n_shared: int = Field(description="Prompts both evaluations judged.")
    difference: float | None = Field(description="Win rate b − a in percentage points.")
    difference_se: float | None = Field(description="Paired SE: sd of the per-prompt differences / √n.")
    within_noise: bool | None = Field(description="|difference| ≤ 1.96·SE (the 95% interval covers 0).")
    unavailable_reason: str | None = None


class PairedDifferenceList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"run_a": 1, "run_b": 2, "benchmark": "alpaca_eval", "policy_index_a": 2,
                         "policy_index_b": 2, "judge_a": "pairrm:llm-blender/PairRM",
                         "judge_b": "pairrm:llm-blender/PairRM", "n_shared": 32, "difference": 6.2,
                         "difference_se": 4.1, "within_noise": True, "unavailable_reason": None}
                    ]
                }
            ]
        }
    )  # fmt: skip
    items: list[PairedDifferencePublic]
