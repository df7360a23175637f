"""The run configuration: one validated, frozen description of an experiment.

Every part of AIPO Lab (CLI, API, worker, pipeline) receives a `RunConfig`; nothing reads
environment variables here. Unknown keys are rejected so that a typo never silently becomes a
default. A config is untrusted input, so every number is bounded (no field can ask for unbounded
work; the operator's per-run budget on top is checked by the server, backend/validation.py),
floats must be finite, strings have a maximum length and lists may not repeat an entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, model_validator

BenchmarkName = Literal["alpaca_eval", "mt_bench", "arena_hard"]
DeviceName = Literal["auto", "cpu", "cuda"]
TrainingStrategy = Literal["auto", "ddp", "fsdp", "deepspeed_zero3"]
JudgeKind = Literal["pairrm", "reward_model", "llm_judge"]
RankerKind = Literal["pairrm", "reward_model", "llm_judge", "length_biased"]
# Seeds feed numpy (< 2**32) and torch; seed + iteration must stay below 2**32 too.
MAX_SEED = 2**31 - 1
MAX_ITERATIONS = 100
MAX_SELF_INSTRUCT_CALLS = 100_000
# Hub ids are at most 96 characters; paths get more room but stay bounded.
MAX_SPEC_LENGTH = 1024


def _unique(values: list[Any]) -> list[Any]:
    """Reject repeated entries (a repeated benchmark would be evaluated, and stored, twice)."""
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"entries must be unique; repeated: {', '.join(repeated)}")
    return values


def _keep_policies(value: Any) -> str | int:
    if value in ("last", "all"):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ITERATIONS:
        return value
    raise ValueError(f"must be 'last', 'all' or a number of policies from 1 to {MAX_ITERATIONS}")


KeepPolicies = Annotated[
    str | int,
    PlainValidator(
        _keep_policies,
        json_schema_input_type=Literal["last", "all"] | Annotated[int, Field(ge=1, le=MAX_ITERATIONS)],
    ),
]


class StrictModel(BaseModel):
    """Base for config sections: extra keys are errors, values are immutable, floats finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SelfInstructConfig(StrictModel):
    num_instructions: int = Field(32, ge=1, le=20_000, description="New instructions per iteration.")
    num_seed_examples: int = Field(8, ge=1, le=32, description="Pool instructions shown per call.")
    temperature: float = Field(0.5, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_new_tokens: int = Field(64, ge=4, le=1024)
    rouge_threshold: float = Field(0.7, gt=0.0, le=1.0, description="Drop if ROUGE-L > this vs the pool.")
    batch_size: int = Field(8, ge=1, le=256)
    max_attempts_factor: int = Field(
        4, ge=1, le=50, description="Give up after num_instructions × this many model calls."
    )

    @model_validator(mode="after")
    def _bounded_calls(self) -> SelfInstructConfig:
        calls = self.num_instructions * self.max_attempts_factor
        if calls > MAX_SELF_INSTRUCT_CALLS:
            raise ValueError(
                f"num_instructions × max_attempts_factor = {calls:,} model calls per iteration; "
                f"at most {MAX_SELF_INSTRUCT_CALLS:,}"
            )
        return self


class GenerationConfig(StrictModel):
    backend: Literal["hf", "vllm"] = "hf"
    num_candidates: int = Field(4, ge=2, le=32)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(128, ge=1, le=8192)
    batch_size: int = Field(8, ge=1, le=256, description="Prompts per generate() call.")
    keep_unfinished: bool = Field(
        False,
        description="Also pair candidates cut off at max_new_tokens (by default only those that "
        "stopped at EOS are ranked and trained on).",
    )
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="vllm: GPUs one model is split over.")
    data_parallel_size: int = Field(
        1, ge=1, le=64, description="vllm: model copies, each sampling its share of the prompts."
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0.0, lt=1.0, description="vllm: share of each GPU's memory vLLM may take."
    )

    @property
    def gpus(self) -> int:
        """GPUs the vllm backend occupies (the hf backend uses the stage's one device)."""
        return self.tensor_parallel_size * self.data_parallel_size if self.backend == "vllm" else 1


class LengthBiasConfig(StrictModel):
    """A ranker that is length-biased by construction, for the paper's length study
    (docs/length_study.md): score = the real judge's score + `bonus` per `unit` of response length."""

    judge: JudgeKind = Field("llm_judge", description="The real judge whose score the bonus is added to.")
    bonus: float = Field(
        ..., ge=0.0, le=1.0, description="Added to the judge's score per unit of response length."
    )
    unit: Literal["token", "100_chars"] = Field(
        "100_chars", description="token = the policy tokenizer's tokens; 100_chars = per 100 characters."
    )


class RankerConfig(StrictModel):
    kind: RankerKind = "llm_judge"
    model: str = Field(
        "policy",
        min_length=1,
        max_length=MAX_SPEC_LENGTH,
        description="'policy' (self-rewarding: the current policy judges), a hub id or a local path; "
        "for kind length_biased, the model of its real judge.",
    )
    batch_size: int = Field(8, ge=1, le=256)
    length_bias: LengthBiasConfig | None = Field(
        None, description="kind length_biased only: the real judge and the known length bonus."
    )

    @model_validator(mode="after")
    def _length_bias_iff_length_biased(self) -> RankerConfig:
        if self.kind == "length_biased" and self.length_bias is None:
            raise ValueError("length_bias: kind 'length_biased' needs length_bias: {judge, bonus, unit}")
        if self.kind != "length_biased" and self.length_bias is not None:
            raise ValueError("length_bias is only used with kind: length_biased")
        return self

    @property
    def judge_kind(self) -> str:
        """The kind of the model that actually judges (the real judge under a length bias)."""
        return self.length_bias.judge if self.length_bias is not None else self.kind


class ObjectiveConfig(StrictModel):
    """Objective name plus the hyperparameters it uses.

    Hyperparameters left unset take the objective's defaults; setting one the objective does
    not use is an error (validated against `aipo_core.objectives.OBJECTIVES`).
    """

    name: str = "aipo"
    beta: float | None = None
    alpha: float | None = None
    lambda_: float | None = None
    gamma: float | None = None

    @model_validator(mode="after")
    def _check_against_registry(self) -> ObjectiveConfig:
        from aipo_core.objectives import validate_hyperparameters

        validate_hyperparameters(self.name, self.explicit_hyperparameters())
        return self

    def explicit_hyperparameters(self) -> dict[str, float]:
        """Only the hyperparameters the user wrote down."""
        names = ("beta", "alpha", "lambda_", "gamma")
        return {
            n: getattr(self, n) for n in names if n in self.model_fields_set and getattr(self, n) is not None
        }

    def resolved(self) -> dict[str, float]:
        """Every hyperparameter of the objective: user values over the objective's defaults."""
        from aipo_core.objectives import OBJECTIVES

        spec = OBJECTIVES[self.name]
        return {**spec.defaults, **self.explicit_hyperparameters()}


class TrainingConfig(StrictModel):
    batch_size: int = Field(8, ge=1, le=1024)
    gradient_accumulation_steps: int = Field(1, ge=1, le=256)
    learning_rate: float = Field(5.0e-7, gt=0.0, le=1.0)
    epochs: float = Field(1.0, gt=0.0, le=20.0)
    max_steps: int | None = Field(None, ge=1, le=100_000, description="Overrides epochs when set.")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    lr_scheduler_type: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_prompt_length: int = Field(512, ge=8, le=32_768)
    max_length: int = Field(1024, ge=16, le=32_768)
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto = bf16 where the device computes it natively (a CUDA GPU with bf16, a CPU "
        "with AVX512-BF16 or AMX), else fp32. Inference loads bf16 weights; training keeps fp32 "
        "weights under bf16 autocast.",
    )
    gradient_checkpointing: bool = False
    keep_policies: KeepPolicies = Field(
        "last",
        description="Policy folders kept: 'last' (the newest), N (the N newest) or 'all'; "
        "see keep_best_policy. Deleted once no later stage needs them (aipo_core/retention.py).",
    )
    keep_best_policy: bool = Field(
        True, description="Also keep the best policy by LC win rate (raw win rate where LC is unavailable)."
    )
    num_processes: int = Field(
        1, ge=1, le=64, description="Training processes (one per GPU; `accelerate launch` when > 1)."
    )
    strategy: TrainingStrategy = Field(
        "auto",
        description="auto = ddp when num_processes > 1; fsdp / deepspeed_zero3 shard weights, "
        "gradients and optimizer state across the processes.",
    )

    @model_validator(mode="after")
    def _prompt_fits(self) -> TrainingConfig:
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        return self

    @model_validator(mode="after")
    def _batch_splits_over_processes(self) -> TrainingConfig:
        if self.batch_size % self.num_processes:
            raise ValueError(
                f"batch_size ({self.batch_size}) is the global batch and must be a multiple of "
                f"num_processes ({self.num_processes})"
            )
        return self

    @property
    def resolved_strategy(self) -> str:
        """`single` for one process; ddp for several unless a sharding strategy was asked for."""
        if self.num_processes == 1 and self.strategy in ("auto", "ddp"):
            return "single"
        return "ddp" if self.strategy == "auto" else self.strategy


#: `evaluation.judge.model` values that name a model of the run rather than a hub id or path.
BASE_JUDGE = "base"
POLICY_JUDGE = "policy"


class JudgeConfig(StrictModel):
    """The evaluation judge (docs/evaluation.md).

    `model: base` (default) judges with the frozen initial model (`RunConfig.model`), so every
    iteration, θ_0 included, is judged by the same judge. `model: policy` lets the evaluated
    policy judge itself: the judge then changes every iteration and the results say so.
    """

    kind: Literal["pairrm", "reward_model", "llm_judge", "alpaca_eval"] = "llm_judge"
    model: str = Field(
        BASE_JUDGE,
        min_length=1,
        max_length=MAX_SPEC_LENGTH,
        description="'base' (the frozen initial model: a fixed judge), 'policy' (self-judged: changes "
        "every iteration), a hub id or a local path. pairrm: base/policy mean the published PairRM.",
    )
    annotator: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_SPEC_LENGTH,
        description="alpaca_eval annotator config name, e.g. weighted_alpaca_eval_gpt4_turbo "
        "(a path only inside the server's data roots).",
    )
    batch_size: int = Field(8, ge=1, le=256)

    @model_validator(mode="after")
    def _annotator_only_for_alpaca_eval(self) -> JudgeConfig:
        if self.annotator is not None and self.kind != "alpaca_eval":
            raise ValueError("annotator is only used with kind: alpaca_eval")
        if self.kind == "reward_model" and self.model in (BASE_JUDGE, POLICY_JUDGE):
            raise ValueError(f"model: kind 'reward_model' needs a reward model id or path, not {self.model}")
        return self


class EvaluationConfig(StrictModel):
    benchmarks: Annotated[list[BenchmarkName], AfterValidator(_unique)] = Field(
        default_factory=lambda: ["alpaca_eval"], max_length=3
    )
    limit: int | None = Field(
        32,
        ge=1,
        le=1000,
        description="Evaluate a seeded sample of N prompts per benchmark, stratified by the benchmark's "
        "source/category and the same for every iteration; null = every prompt.",
    )
    seed: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="Seed of the evaluation sample (and of sampled decoding), independent of the run's "
        "seed: runs with the same evaluation.seed are compared on the same prompts.",
    )
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    max_new_tokens: int = Field(256, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy decoding.")


class RunConfig(StrictModel):
    name: str = Field(..., min_length=1, max_length=200)
    model: str = Field(
        ...,
        min_length=1,
        max_length=MAX_SPEC_LENGTH,
        description="hub id | local path | smollm2-135m-instruct | tiny-random-llama",
    )
    iterations: int = Field(2, ge=1, le=MAX_ITERATIONS)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    prompt_pool: str = Field(
        "self_instruct_seeds",
        min_length=1,
        max_length=MAX_SPEC_LENGTH,
        description="Bundled pool name or a JSONL path.",
    )
    initial_pairs: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_SPEC_LENGTH,
        description="TRL prompt/chosen/rejected JSONL used as iteration 0's pairs (skips sampling).",
    )
    trust_remote_code: bool = False
    device: DeviceName = Field(
        "auto", description="Where every model-using stage runs: auto = cuda when the worker has a GPU."
    )
    self_instruct: SelfInstructConfig = Field(default_factory=SelfInstructConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)


def load_run_config(path: str | Path) -> RunConfig:
    """Read a YAML (or JSON, a YAML subset) run config and validate it."""
    with open(path, encoding="utf-8") as fh:
        data: Any = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a run config must be a mapping, got {type(data).__name__}")
    return RunConfig.model_validate(data)


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of `config` with dotted-path overrides applied, re-validated.

    >>> with_overrides(cfg, {"objective.alpha": 0.03})  # doctest: +SKIP
    """
    data = config.model_dump(exclude_unset=False)
    data["objective"] = {"name": config.objective.name, **config.objective.explicit_hyperparameters()}
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise ValueError(f"override {dotted!r}: {key!r} is not a config section")
            node = node[key]
        node[leaf] = value
    return RunConfig.model_validate(data)
