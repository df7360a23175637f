"""Server-side policy on top of `RunConfig` validation: what this server agrees to run.

A config can be valid and still not acceptable here: local paths outside the allowed roots
(the API must not become a way to read arbitrary files on the worker), `trust_remote_code`
(executes code shipped with a model) unless the operator enabled it, and text the database
cannot store (NUL characters, unpaired surrogates). Errors use FastAPI's 422 shape so clients
get field paths either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError

from aipo_core.config import RunConfig
from backend.settings import Settings

Loc = tuple[str | int, ...]

# (field path in the config, bundled names that are never paths)
PATH_FIELDS: tuple[tuple[Loc, frozenset[str]], ...] = (
    (("model",), frozenset({"smollm2-135m-instruct", "tiny-random-llama"})),
    (("prompt_pool",), frozenset()),
    (("initial_pairs",), frozenset()),
    (("ranker", "model"), frozenset({"policy"})),
    (("evaluation", "judge", "model"), frozenset({"base", "policy"})),
)
PATH_SUFFIXES = (".jsonl", ".json", ".yaml", ".yml", ".parquet", ".gguf", ".safetensors", ".bin", ".pt")


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


def looks_like_local_path(value: str, bundled: frozenset[str] = frozenset()) -> bool:
    """True when a loader would read `value` from the local disk rather than a hub id or bundle."""
    if value in bundled:
        return False
    if value.startswith(("/", "~", "./", "../", ".\\")) or value in (".", ".."):
        return True
    if value.lower().endswith(PATH_SUFFIXES):
        return True
    try:
        return Path(value).exists()
    except (OSError, ValueError):
        return True


def is_under_allowed_root(value: str, roots: Sequence[Path]) -> bool:
    """Whether the fully resolved path (symlinks followed) lies inside one of `roots`."""
    try:
        resolved = Path(value).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return any(resolved.is_relative_to(root) for root in roots)


def _get(config: RunConfig, loc: Loc) -> Any:
    node: Any = config
    for part in loc:
        node = getattr(node, str(part))
    return node


def policy_errors(config: RunConfig, settings: Settings, prefix: Loc = ("body",)) -> list[dict[str, Any]]:
    """422 error dicts for everything in `config` this server refuses."""
    errors: list[dict[str, Any]] = unstorable_text_errors(config.model_dump(mode="json"), prefix)
    if config.trust_remote_code and not settings.allow_trust_remote_code:
        errors.append(
            {
                "type": "trust_remote_code_refused",
                "loc": (*prefix, "trust_remote_code"),
                "msg": "trust_remote_code is disabled on this server (set AIPO_ALLOW_TRUST_REMOTE_CODE=1)",
                "input": True,
            }
        )
    roots = settings.resolved_allowed_roots
    for loc, bundled in PATH_FIELDS:
        value = _get(config, loc)
        if isinstance(value, str) and looks_like_local_path(value, bundled):
            if not is_under_allowed_root(value, roots):
                errors.append(
                    {
                        "type": "path_not_allowed",
                        "loc": (*prefix, *loc),
                        "msg": "local path outside the allowed roots: " + ", ".join(str(r) for r in roots),
                        "input": value,
                    }
                )
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
