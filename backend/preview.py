"""Launch previews: a config's cost estimate plus what only the server knows.

The figures come from `aipo_core.estimate`; this module adds the stage routing
(`backend.routing`), the model's size from files the server may read (built-in architectures,
local folders under the allowed roots, the Hugging Face cache, never the network), the size
of an `initial_pairs` file and how many runs are already waiting. Nothing is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aipo_core.access import AccessError, model_spec_kind
from aipo_core.architectures import BUILTIN_ARCHS
from aipo_core.config import RunConfig
from aipo_core.estimate import (
    ModelSize,
    RunEstimate,
    bundled_model_size,
    estimate_run,
    folder_model_size,
)
from backend.routing import STAGES, queue_for
from backend.schemas import (
    GenerationTokensPublic,
    ModelSizePublic,
    RunPreviewPublic,
    StagePlanPublic,
    SweepChildPreviewPublic,
    SweepPreviewPublic,
    SweepTotalsPublic,
)
from backend.settings import Settings

MAX_COUNTED_BYTES = 256 * 1024 * 1024  # larger initial_pairs files are not counted per preview


def model_size(spec: str, settings: Settings) -> ModelSize:
    """Parameter count of a config's `model`, or the reason it is unknown on this server."""
    if spec in BUILTIN_ARCHS:
        return bundled_model_size(spec)
    if model_spec_kind(spec) == "path":
        try:
            folder = settings.model_access().check_path(spec, "model")
        except AccessError:
            return ModelSize(None, "local path outside the allowed roots")
        return folder_model_size(folder) if folder.is_dir() else ModelSize(None, "not a model folder")
    folder = _hub_cache_folder(spec)
    if folder is None:
        return ModelSize(None, "hub model not in this server's Hugging Face cache")
    return folder_model_size(folder)


def _hub_cache_folder(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model (offline lookup), None if it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # HFValidationError: not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def imported_pair_count(path: str, settings: Settings) -> int | None:
    """Non-blank lines of an `initial_pairs` JSONL under the allowed roots; None if not countable."""
    try:
        file = settings.model_access().check_path(path, "initial_pairs")
    except AccessError:
        return None
    try:
        if not file.is_file() or file.stat().st_size > MAX_COUNTED_BYTES:
            return None
        with file.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return None


def stage_plan() -> list[StagePlanPublic]:
    return [StagePlanPublic(name=stage, queue=queue_for(stage)) for stage in STAGES]


def queues() -> list[str]:
    return sorted({queue_for(stage) for stage in STAGES})


class _Estimator:
    """Estimates configs, looking each model and pairs file up once (a sweep repeats them)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sizes: dict[str, ModelSize] = {}
        self.pair_counts: dict[str, int | None] = {}

    def __call__(self, config: RunConfig) -> RunEstimate:
        if config.model not in self.sizes:
            self.sizes[config.model] = model_size(config.model, self.settings)
        pairs = None
        if config.initial_pairs is not None:
            if config.initial_pairs not in self.pair_counts:
                self.pair_counts[config.initial_pairs] = imported_pair_count(
                    config.initial_pairs, self.settings
                )
            pairs = self.pair_counts[config.initial_pairs]
        return estimate_run(config, self.sizes[config.model], imported_pairs=pairs)


def _model_public(spec: str, size: ModelSize) -> ModelSizePublic:
    return ModelSizePublic(spec=spec, parameters=size.parameters, source=size.source)


def run_preview(config: RunConfig, settings: Settings, *, active_runs: int) -> RunPreviewPublic:
    """The launch summary of one validated, accepted config."""
    estimate = _Estimator(settings)(config)
    tokens = estimate.generation_tokens
    return RunPreviewPublic(
        name=config.name,
        iterations=estimate.iterations,
        sampled_iterations=estimate.sampled_iterations,
        new_instructions=estimate.new_instructions,
        candidates_per_prompt=estimate.candidates_per_prompt,
        candidates=estimate.candidates,
        generation_tokens=GenerationTokensPublic(
            self_instruct=tokens.self_instruct,
            candidates=tokens.candidates,
            evaluation=tokens.evaluation,
            total=tokens.total,
        ),
        training_pairs=estimate.training_pairs,
        training_tokens=estimate.training_tokens,
        judge_passes=estimate.judge_passes,
        eval_prompts=estimate.eval_prompts,
        model=_model_public(config.model, estimate.model),
        stages=stage_plan(),
        stages_total=config.iterations * len(STAGES),
        queues=queues(),
        active_runs=active_runs,
        notes=list(estimate.notes),
    )


def sweep_preview(
    name: str,
    children: Sequence[tuple[dict[str, Any], RunConfig]],
    *,
    max_concurrent: int,
    settings: Settings,
    active_runs: int,
) -> SweepPreviewPublic:
    """The launch summary of a sweep: one line per child run and the totals."""
    estimator = _Estimator(settings)
    rows = []
    notes: set[str] = set()
    for point, config in children:
        estimate = estimator(config)
        notes.update(estimate.notes)
        rows.append(
            SweepChildPreviewPublic(
                name=config.name,
                point=point,
                candidates=estimate.candidates,
                generation_tokens=estimate.generation_tokens.total,
                training_tokens=estimate.training_tokens,
                judge_passes=estimate.judge_passes,
                model_parameters=estimate.model.parameters,
            )
        )
    training = [row.training_tokens for row in rows]
    return SweepPreviewPublic(
        name=name,
        runs=len(rows),
        max_concurrent=max_concurrent,
        totals=SweepTotalsPublic(
            candidates=sum(row.candidates for row in rows),
            generation_tokens=sum(row.generation_tokens for row in rows),
            training_tokens=None if None in training else sum(t for t in training if t is not None),
            judge_passes=sum(row.judge_passes for row in rows),
            stages_total=sum(config.iterations for _, config in children) * len(STAGES),
        ),
        children=rows,
        models=[_model_public(spec, size) for spec, size in estimator.sizes.items()],
        stages=stage_plan(),
        queues=queues(),
        active_runs=active_runs,
        notes=sorted(notes),
    )
