"""The run configuration: one validated, frozen description of an experiment.

Every part of AIPO Lab (CLI, API, worker, pipeline) receives a `RunConfig`; nothing reads
environment variables here. Unknown keys are rejected so that a typo never silently becomes a
default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

BenchmarkName = Literal["alpaca_eval", "mt_bench", "arena_hard"]
DeviceName = Literal["auto", "cpu", "cuda"]
TrainingStrategy = Literal["auto", "ddp", "fsdp", "deepspeed_zero3"]
RankerKind = Literal["pairrm", "reward_model", "llm_judge"]


class StrictModel(BaseModel):
    """Base for config sections: extra keys are errors and values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SelfInstructConfig(StrictModel):
    num_instructions: int = Field(32, ge=1, le=100_000, description="New instructions per iteration.")
    num_seed_examples: int = Field(8, ge=1, le=32, description="Pool instructions shown per call.")
    temperature: float = Field(0.5, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_new_tokens: int = Field(64, ge=4, le=1024)
    rouge_threshold: float = Field(0.7, gt=0.0, le=1.0, description="Drop if ROUGE-L > this vs the pool.")
    batch_size: int = Field(8, ge=1, le=1024)
    max_attempts_factor: int = Field(
        4, ge=1, le=100, description="Give up after num_instructions × this many model calls."
    )


class GenerationConfig(StrictModel):
    backend: Literal["hf", "vllm"] = "hf"
    num_candidates: int = Field(4, ge=2, le=64)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(128, ge=1, le=8192)
    batch_size: int = Field(8, ge=1, le=1024, description="Prompts per generate() call.")
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


class RankerConfig(StrictModel):
    kind: RankerKind = "llm_judge"
    model: str = Field(
        "policy",
        description="'policy' (self-rewarding: the current policy judges), a hub id or a local path.",
    )
    batch_size: int = Field(8, ge=1, le=1024)


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
    batch_size: int = Field(8, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    learning_rate: float = Field(5.0e-7, gt=0.0, le=1.0)
    epochs: float = Field(1.0, gt=0.0, le=100.0)
    max_steps: int | None = Field(None, ge=1, description="Overrides epochs when set.")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    lr_scheduler_type: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_prompt_length: int = Field(512, ge=8, le=131_072)
    max_length: int = Field(1024, ge=16, le=131_072)
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto = bf16 where the device supports it, else fp32."
    )
    gradient_checkpointing: bool = False
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


class JudgeConfig(StrictModel):
    kind: Literal["pairrm", "reward_model", "llm_judge", "alpaca_eval"] = "llm_judge"
    model: str = "policy"
    annotator: str | None = Field(
        None, description="alpaca_eval annotator config name, e.g. weighted_alpaca_eval_gpt4_turbo."
    )
    batch_size: int = Field(8, ge=1, le=1024)

    @model_validator(mode="after")
    def _annotator_only_for_alpaca_eval(self) -> JudgeConfig:
        if self.annotator is not None and self.kind != "alpaca_eval":
            raise ValueError("annotator is only used with kind: alpaca_eval")
        return self


class EvaluationConfig(StrictModel):
    benchmarks: list[BenchmarkName] = Field(default_factory=lambda: ["alpaca_eval"])
    limit: int | None = Field(32, ge=1, description="Evaluate the first N prompts of each benchmark.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    max_new_tokens: int = Field(256, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy decoding.")


class RunConfig(StrictModel):
    name: str = Field(..., min_length=1, max_length=200)
    model: str = Field(
        ..., min_length=1, description="hub id | local path | smollm2-135m-instruct | tiny-random-llama"
    )
    iterations: int = Field(2, ge=1, le=1000)
    seed: int = Field(0, ge=0)
    prompt_pool: str = Field("self_instruct_seeds", description="Bundled pool name or a JSONL path.")
    initial_pairs: str | None = Field(
        None, description="TRL prompt/chosen/rejected JSONL used as iteration 0's pairs (skips sampling)."
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
