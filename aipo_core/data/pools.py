"""Prompt pools: the instructions self-instruct imitates and the pipeline falls back on.

A pool is a list of self-contained prompts (a task's input, when it has one, is part of the
prompt). It comes either from a bundled name or from a user JSONL file whose rows are
``{"instruction": ..., "input": ...}`` (Alpaca / self-instruct style, ``input`` optional) or TRL
prompt-only rows ``{"prompt": "..."}`` / ``{"prompt": [{"role": "user", "content": ...}]}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aipo_core.data.jsonl import (
    DataFileError,
    MissingDataFile,
    PathLike,
    bundled_file,
    iter_jsonl,
    row_error,
    scan_jsonl,
)

SELF_INSTRUCT_SEEDS = "self_instruct_seeds"

# Bundled pool name -> files, read in order. Bundled pools hold no benchmark prompt (files/SOURCES.md
# says what was left out and why; tests/aipo_core/test_decontamination.py checks it).
BUNDLED_POOLS: dict[str, tuple[str, ...]] = {
    SELF_INSTRUCT_SEEDS: ("prompts/self_instruct/seed_tasks.jsonl",),
}


def load_prompt_pool(name_or_path: str) -> list[str]:
    """The prompts of a bundled pool (see `BUNDLED_POOLS`) or of a JSONL file.

    Exact duplicates are removed (first occurrence kept): a repeated prompt would be sampled as a
    self-instruct example twice as often and could be handed out twice when topping up.
    """
    if name_or_path in BUNDLED_POOLS:
        prompts = [
            prompt
            for relative in BUNDLED_POOLS[name_or_path]
            for prompt in _read_self_instruct_tasks(bundled_file(relative))
        ]
    else:
        path = Path(name_or_path).expanduser()
        prompts = []
        for _, prompt in scan_pool_rows(path):
            if isinstance(prompt, DataFileError):
                raise prompt
            prompts.append(prompt)
        if not prompts:
            raise DataFileError(path, "the prompt pool has no prompts")
    return list(dict.fromkeys(prompts))


def scan_pool_rows(
    path: str | Path, *, max_bytes: int | None = None
) -> Iterator[tuple[int, str | DataFileError]]:
    """Every non-blank row of a user pool file as ``(line, prompt)`` or ``(line, DataFileError)``,
    reading on past bad rows; up to the line that reaches `max_bytes`, if given.
    MissingDataFile if `path` is neither a bundled pool's name nor a file."""
    path = Path(path).expanduser()
    if not path.is_file():
        bundled = ", ".join(sorted(BUNDLED_POOLS))
        raise MissingDataFile(
            path, f"prompt_pool {str(path)!r} is not a bundled pool ({bundled}) nor a JSONL file"
        )
    for line, row in scan_jsonl(path, max_bytes=max_bytes):
        if isinstance(row, DataFileError):
            yield line, row
            continue
        try:
            yield line, prompt_from_row(row, where=f"{path}:{line}")
        except ValueError as exc:
            yield line, row_error(path, line, exc)


def join_instruction_and_input(instruction: str, input_text: str | None) -> str:
    """One self-contained prompt: the instruction, then the input after a blank line if non-empty."""
    instruction = instruction.strip()
    if input_text and input_text.strip():
        return f"{instruction}\n\n{input_text.strip()}"
    return instruction


def prompt_from_row(row: dict[str, Any], *, where: str) -> str:
    """The prompt of one user pool row; ValueError naming `where` (file:line) and the field."""
    if "instruction" in row:
        instruction = _require_text(row, "instruction", where)
        input_text = row.get("input")
        if input_text is not None and not isinstance(input_text, str):
            raise ValueError(f"{where}: field 'input' must be a string, got {type(input_text).__name__}")
        return join_instruction_and_input(instruction, input_text)
    if "prompt" in row:
        prompt = row["prompt"]
        if isinstance(prompt, list):
            return _single_user_turn(prompt, where)
        return _require_text(row, "prompt", where).strip()
    raise ValueError(f"{where}: expected a field 'instruction' (optionally 'input') or 'prompt'")


def _require_text(row: dict[str, Any], field: str, where: str) -> str:
    value = row[field]
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{where}: field {field!r} is empty")
    return value


def _single_user_turn(messages: list[Any], where: str) -> str:
    """A conversational prompt is usable as a pool instruction only if it is one user message
    (optionally after a system message): self-instruct lists single instructions."""
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError(f"{where}: field 'prompt'[{index}] must be a message with string 'content'")
    user_turns = [m for m in messages if m.get("role") == "user"]
    other_roles = {m.get("role") for m in messages} - {"user", "system"}
    if len(user_turns) != 1 or other_roles:
        raise ValueError(
            f"{where}: field 'prompt' must hold exactly one user message (and optionally a system message), "
            f"got roles {[m.get('role') for m in messages]}"
        )
    content = user_turns[0]["content"].strip()
    if not content:
        raise ValueError(f"{where}: field 'prompt' has an empty user message")
    return content


def _read_self_instruct_tasks(path: PathLike) -> list[str]:
    """Self-instruct task files: ``{"instruction": ..., "instances": [{"input": ..., "output": ...}]}``.

    The first instance's input completes the instruction (every bundled task has exactly one).
    """
    prompts = []
    for line, row in iter_jsonl(path):
        where = f"{path}:{line}"
        instances = row.get("instances") or [{}]
        prompts.append(prompt_from_row({"instruction": row.get("instruction"), **instances[0]}, where=where))
    return prompts
