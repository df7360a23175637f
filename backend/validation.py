"""Server-side policy on top of `RunConfig` validation: what this server agrees to run.

A config can be valid and still not acceptable here:
- anything the operator's loading policy refuses (`aipo_core.access`, built by
  `Settings.model_access`): local paths outside the data roots or onto the server's internals
  (the API must not become a way to read files on the worker), hub models off the allow-list,
  `trust_remote_code` unless the operator enabled it, annotators that are paths;
- more work than the operator allows per run (AIPO_MAX_ITERATIONS, AIPO_MAX_RUN_BUDGET);
- text the database cannot store (NUL characters, unpaired surrogates);
- files and model folders that would fail when a stage reads them: the data files a config names
  are parsed with the pipeline's readers (their first AIPO_CHECK_INPUT_MAX_BYTES), model folders
  inspected (`aipo_core.inputs`, the same check as `aipo validate`); the worker reads them again.
Errors use FastAPI's 422 shape so clients get field paths either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError

from aipo_core.access import config_problems
from aipo_core.config import RunConfig
from aipo_core.inputs import check_inputs
from backend.settings import Settings

Loc = tuple[str | int, ...]
# The factors of a run's budget (AIPO_MAX_RUN_BUDGET), as config field paths.
BUDGET_FIELDS: tuple[Loc, ...] = (
    ("iterations",),
    ("generation", "num_candidates"),
    ("self_instruct", "num_instructions"),
)


def storable_text(value: str) -> str:
    """Reject text PostgreSQL cannot store; usable as a pydantic AfterValidator."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no unpaired surrogates)") from None
    return value


def _strings(data: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(data, str):
        yield loc, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(str(key), (*loc, str(key)))
            yield from _strings(value, (*loc, str(key)))
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            yield from _strings(value, (*loc, i))


def unstorable_text_errors(data: Any, prefix: Loc) -> list[dict[str, Any]]:
    """422 error dicts for every string in `data` that `storable_text` rejects."""
    errors = []
    for loc, text in _strings(data, prefix):
        try:
            storable_text(text)
        except ValueError as exc:
            errors.append({"type": "value_error", "loc": loc, "msg": f"Value error, {exc}", "input": None})
    return errors


def access_errors(config: RunConfig, settings: Settings, prefix: Loc = ("body",)) -> list[dict[str, Any]]:
    """422 error dicts for every model, path and annotator field the loading policy refuses.

    The same `aipo_core.access.config_problems` runs again in the worker before it loads.
    """
    return [
        {"type": p.kind, "loc": (*prefix, *p.loc), "msg": p.message, "input": p.value}
        for p in config_problems(config, settings.model_access())
    ]


def budget_errors(config: RunConfig, settings: Settings, prefix: Loc = ("body",)) -> list[dict[str, Any]]:
    """422 error dicts when the run asks for more work than the operator allows per run."""
    errors: list[dict[str, Any]] = []
    if config.iterations > settings.max_iterations:
        errors.append(
            {
                "type": "too_many_iterations",
                "loc": (*prefix, "iterations"),
                "msg": f"this server runs at most {settings.max_iterations} iterations per run "
                "(operator: AIPO_MAX_ITERATIONS)",
                "input": config.iterations,
            }
        )
    work = dict(zip(BUDGET_FIELDS, run_work(config), strict=True))
    total = math.prod(work.values())
    if total > settings.max_run_budget:
        product = " × ".join(f"{'.'.join(loc)} ({value:,})" for loc, value in work.items())
        message = (
            f"run budget exceeded: {product} = {total:,} candidate generations, more than this "
            f"server's {settings.max_run_budget:,} (operator: AIPO_MAX_RUN_BUDGET)"
        )
        errors += [
            {"type": "run_budget_exceeded", "loc": (*prefix, *loc), "msg": message, "input": value}
            for loc, value in work.items()
        ]
    return errors


def run_work(config: RunConfig) -> tuple[int, int, int]:
    """The factors of a run's budget, in `BUDGET_FIELDS` order."""
    return (config.iterations, config.generation.num_candidates, config.self_instruct.num_instructions)


def input_errors(
    config: RunConfig, settings: Settings, prefix: Loc = ("body",), *, skip: Sequence[Loc] = ()
) -> list[dict[str, Any]]:
    """422 error dicts for the files and models `config` names that cannot be read as the run will
    read them (bad rows with their line numbers, missing files, folders that are no checkpoint).

    Reads at most `settings.check_input_max_bytes` of each file; `skip` (config locs) leaves out
    fields already refused by the loading policy, so each gets one error.
    """
    if not settings.check_input_files:
        return []
    report = check_inputs(
        config, settings.model_access(), max_bytes=settings.check_input_max_bytes, skip=skip
    )
    return [
        {"type": p.kind, "loc": (*prefix, *p.loc), "msg": p.message, "input": p.value}
        for p in report.problems()
    ]


def input_key(config: RunConfig) -> tuple[Any, ...]:
    """The config values `input_errors` depends on: configs with the same key need one check
    (a sweep's children usually differ in hyperparameters only)."""
    ranker, evaluation = config.ranker, config.evaluation
    return (
        config.model, config.trust_remote_code, ranker.judge_kind, ranker.model, evaluation.judge.kind,
        evaluation.judge.model, config.prompt_pool, config.initial_pairs, tuple(evaluation.benchmarks),
        evaluation.limit,
    )  # fmt: skip


def policy_errors(
    config: RunConfig, settings: Settings, prefix: Loc = ("body",), *, inputs: bool = True
) -> list[dict[str, Any]]:
    """422 error dicts for everything in `config` this server refuses (with `inputs`, also what
    `input_errors` finds in the files and models it names)."""
    errors: list[dict[str, Any]] = unstorable_text_errors(config.model_dump(mode="json"), prefix)
    refused = access_errors(config, settings, prefix)
    errors += refused + budget_errors(config, settings, prefix)
    if inputs:
        errors += input_errors(config, settings, prefix, skip=[e["loc"][len(prefix) :] for e in refused])
    return errors


def check_config(config: RunConfig, settings: Settings, prefix: Loc = ("body",)) -> None:
    """Raise a 422 `RequestValidationError` if this server refuses `config`."""
    errors = policy_errors(config, settings, prefix)
    if errors:
        raise RequestValidationError(errors)


def prefixed_errors(errors: Sequence[Any], prefix: Loc) -> list[dict[str, Any]]:
    """Pydantic error dicts re-rooted under `prefix`, with `ctx` made JSON-safe."""
    result = []
    for error in errors:
        item = {k: v for k, v in dict(error).items() if k not in ("url", "ctx", "input")}
        item["loc"] = (*prefix, *error.get("loc", ()))
        if "ctx" in error:
            item["ctx"] = {k: str(v) for k, v in error["ctx"].items()}
        result.append(item)
    return result
