"""Importing an existing preference dataset as iteration 0's pairs (the paper's UF/UF baseline).

Accepted rows are TRL preference rows, one JSON object per line:
- conversational: ``prompt``/``chosen``/``rejected`` message lists;
- conversational with an implicit prompt (e.g. UltraFeedback-binarized exports): ``chosen`` and
  ``rejected`` hold the whole conversation, optionally beside a string ``prompt``; the shared
  leading messages become the prompt (TRL's `maybe_extract_prompt`);
- standard: ``prompt``, ``chosen`` and ``rejected`` plain strings.
Optional ``score_chosen``/``score_rejected`` and ``id`` (or ``prompt_id``) are kept.

Rows are normalised to the pairs.jsonl record (docs/architecture.md §6) without the reference-model fields
(``ref_chosen_logps``, ``ref_rejected_logps``, ``s_ref``), which the rank stage computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aipo_core.data.jsonl import DataFileError, MissingDataFile, row_error, scan_jsonl

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Messages = list[dict[str, str]]
ROLES = ("system", "user", "assistant")


def load_preference_pairs(
    path: str | Path, *, tokenizer: PreTrainedTokenizerBase | None = None
) -> list[dict[str, Any]]:
    """Read a TRL preference JSONL file as pairs.jsonl records.

    ``chosen_length``/``rejected_length`` (response tokens) need a tokenizer and are omitted
    without one; ``score_chosen``/``score_rejected`` are None when the file has no scores.
    Raises ValueError naming file:line and field for any malformed row.
    """
    pairs: list[dict[str, Any]] = []
    for pair in iter_preference_pairs(path):
        if tokenizer is not None:
            pair["chosen_length"] = _token_count(tokenizer, pair["chosen"])
            pair["rejected_length"] = _token_count(tokenizer, pair["rejected"])
        pairs.append(pair)
    return pairs


def iter_preference_pairs(path: str | Path) -> Iterator[dict[str, Any]]:
    """The file's rows as pairs.jsonl records, one at a time (validating a large upload keeps only
    the ids in memory). Same checks and errors as `load_preference_pairs`, raised on reaching the row."""
    path = Path(path).expanduser()
    empty = True
    for _, pair in scan_preference_rows(path):
        if isinstance(pair, DataFileError):
            raise pair
        empty = False
        yield pair
    if empty:
        raise DataFileError(path, "the preference dataset has no rows")


def scan_preference_rows(
    path: str | Path, *, max_bytes: int | None = None
) -> Iterator[tuple[int, dict[str, Any] | DataFileError]]:
    """Every non-blank row as ``(line, pair)`` or ``(line, DataFileError)``, reading on past bad
    rows (`aipo validate` reports them all); up to the line that reaches `max_bytes`, if given.

    A repeated id is an error on the later line; the first row with that id stays good.
    MissingDataFile if there is no such file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingDataFile(path, f"preference dataset {path} does not exist")
    first_line_of_id: dict[str, int] = {}
    rows = 0
    for line, row in scan_jsonl(path, max_bytes=max_bytes):
        rows += 1
        if isinstance(row, DataFileError):
            yield line, row
            continue
        where = f"{path}:{line}"
        try:
            pair = pair_from_row(row, where=where, default_id=f"pair-{rows - 1:06d}")
        except ValueError as exc:
            yield line, row_error(path, line, exc)
            continue
        if pair["id"] in first_line_of_id:
            yield (
                line,
                DataFileError(
                    path, f"id {pair['id']!r} already used on line {first_line_of_id[pair['id']]}", line
                ),
            )
            continue
        first_line_of_id[pair["id"]] = line
        yield line, pair


def pair_from_row(row: dict[str, Any], *, where: str, default_id: str) -> dict[str, Any]:
    """Normalise one TRL preference row (see module docstring) to a pairs.jsonl record."""
    for field in ("chosen", "rejected"):
        if field not in row:
            raise ValueError(f"{where}: missing field {field!r}")
    prompt, chosen, rejected = _split_conversation(row, where)
    _check_prompt(prompt, where)
    _check_completion(chosen, "chosen", where)
    _check_completion(rejected, "rejected", where)
    return {
        "id": _row_id(row, default_id, where),
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "score_chosen": _optional_score(row, "score_chosen", where),
        "score_rejected": _optional_score(row, "score_rejected", where),
        "chosen_chars": len(completion_text(chosen)),
        "rejected_chars": len(completion_text(rejected)),
    }


def completion_text(messages: Messages) -> str:
    """The response text of a completion message list (normally a single assistant message)."""
    return "".join(message["content"] for message in messages)


def _split_conversation(row: dict[str, Any], where: str) -> tuple[Messages, Messages, Messages]:
    chosen_is_chat = isinstance(row["chosen"], list)
    if chosen_is_chat != isinstance(row["rejected"], list):
        raise ValueError(f"{where}: 'chosen' and 'rejected' must both be message lists or both be strings")
    if not chosen_is_chat:
        if "prompt" not in row:
            raise ValueError(f"{where}: missing field 'prompt' (required when chosen/rejected are strings)")
        chosen = [{"role": "assistant", "content": _text(row["chosen"], "chosen", where)}]
        rejected = [{"role": "assistant", "content": _text(row["rejected"], "rejected", where)}]
        return _prompt_messages(row["prompt"], where), chosen, rejected
    for field in ("chosen", "rejected"):
        _check_messages(row[field], field, where)
    if isinstance(row.get("prompt"), list):
        return _check_messages(row["prompt"], "prompt", where), row["chosen"], row["rejected"]
    # Imported here: TRL pulls in torch/transformers (seconds), and listing benchmarks or pools
    # through `aipo_core.data` must stay cheap for the API process.
    from trl.data_utils import maybe_extract_prompt

    extracted = maybe_extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
    prompt = extracted["prompt"]
    if not prompt:
        # Completions share no leading turn: the prompt must be given separately as a string.
        if "prompt" not in row:
            raise ValueError(
                f"{where}: missing field 'prompt' (chosen and rejected share no leading messages)"
            )
        prompt = _prompt_messages(row["prompt"], where)
    return prompt, extracted["chosen"], extracted["rejected"]


def _prompt_messages(prompt: Any, where: str) -> Messages:
    if isinstance(prompt, list):
        return _check_messages(prompt, "prompt", where)
    return [{"role": "user", "content": _text(prompt, "prompt", where)}]


def _text(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"{where}: field {field!r} must be a string or a message list, got {type(value).__name__}"
        )
    if not value.strip():
        raise ValueError(f"{where}: field {field!r} is empty")
    return value


def _check_messages(messages: list[Any], field: str, where: str) -> Messages:
    if not messages:
        raise ValueError(f"{where}: field {field!r} is an empty message list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            raise ValueError(f"{where}: field {field!r}[{index}] must be an object with 'role' and 'content'")
        if message.get("role") not in ROLES:
            raise ValueError(f"{where}: field {field!r}[{index}].role must be one of {ROLES}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"{where}: field {field!r}[{index}].content must be a string")
    return messages


def _check_prompt(prompt: Messages, where: str) -> None:
    if not prompt or prompt[-1]["role"] != "user":
        raise ValueError(f"{where}: field 'prompt' must end with a user message")
    if not prompt[-1]["content"].strip():
        raise ValueError(f"{where}: field 'prompt' ends with an empty user message")


def _check_completion(messages: Messages, field: str, where: str) -> None:
    if not messages or any(message["role"] != "assistant" for message in messages):
        raise ValueError(f"{where}: field {field!r} must be one or more assistant messages after the prompt")


def _row_id(row: dict[str, Any], default_id: str, where: str) -> str:
    for field in ("id", "prompt_id"):
        if row.get(field) is not None:
            if not isinstance(row[field], str | int) or isinstance(row[field], bool):
                raise ValueError(f"{where}: field {field!r} must be a string or an integer")
            return str(row[field])
    return default_id


def _optional_score(row: dict[str, Any], field: str, where: str) -> float | None:
    value = row.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: field {field!r} must be a number, got {type(value).__name__}")
    return float(value)


def _token_count(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> int:
    return len(tokenizer(completion_text(messages), add_special_tokens=False)["input_ids"])
