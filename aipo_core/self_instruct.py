"""Self-instruct (Algorithm 1, step 1): the policy θ_t writes new instructions.

Each model call shows 8 instructions sampled from the prompt pool as a numbered list under
"Come up with a series of tasks:" and ends with the next number ("9."), so the model continues the
list with one new instruction; generation stops when it starts item 10 (or a blank line). This is
the completion prompt of the self-instruct reference implementation (yizhongw/self-instruct
`encode_prompt`, reused by the AIPO code), fed to the tokenizer directly — no chat template.

The output is then cleaned and filtered with the reference rules (docs/architecture.md §1), one small named
function per rule, checked against the benchmarks and earlier iterations' instructions
(`aipo_core.decontamination`), and de-duplicated with ROUGE-L against the pool and against the
instructions already accepted in this run. Every call ends in exactly one outcome (accepted, or
dropped for one named reason), so ``len(instructions) + sum(drop_counts.values()) == calls``.

Deliberate differences from the reference code, each because the original damages good data:
- the first letter is upper-cased instead of `str.capitalize()` (which lower-cases the rest,
  turning "NASA" into "nasa");
- the answer markers ("answer:", "output:", "solution:", "a:") match at a word start, so
  "Classify the data: ..." is not cut to "Classify the dat", and not after "&" or "/" ("Q&A:");
  "A:" only counts after a "Q:" (a question and its answer), so "Compare plan A: ..." survives;
- list numbering is recognised only at a line start and with the expected next number, so
  "in 2010." or "in 10. steps" inside an instruction does not end it (the reference's stop
  string "10." cut "2010." to "20");
- lengths are whitespace tokens (the reference used tiktoken's gpt-3.5 encoding, a dependency
  the rest of the project does not need); the bounds 4..512 are the reference's.
"""

from __future__ import annotations

import math
import random
import re
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from aipo_core.config import SelfInstructConfig
from aipo_core.decontamination import Decontaminator
from aipo_core.generation import generate_after_prefill, padding_buckets
from aipo_core.models import inference
from aipo_core.rouge import RougeDeduplicator

Sink = Callable[[dict[str, Any]], None]

PROMPT_HEADER = "Come up with a series of tasks:\n"
MIN_TOKENS = 4
MAX_TOKENS = 512
# Tasks a text-only model cannot do (images, files, maps, drawing) or that send the user elsewhere.
BLOCKED_WORDS = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
    "map", "maps", "draw", "plot", "go to",
)  # fmt: skip
TASK_HEADERS = ("Detailed instructions:", "Task definition:")
_NUM_SAMPLES = 8  # raw outputs kept in SelfInstructResult.samples

# A number opening a line as a list item does: "\n10. ", "\n 10 .\n", or "\n10." at the very end.
_LINE_NUMBER = re.compile(r"\n[ \t]*(?P<number>\d+)[ \t]?\.(?:[ \t]+|(?=\n)|$)")
_NUMBER_SKIP = 3  # an item may be numbered next, next + 1 or next + 2
_WHITESPACE = re.compile(r"\s+")
_BLOCKED = re.compile(
    r"\b(?:" + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in BLOCKED_WORDS) + r")\b", re.IGNORECASE
)
_MARKER_START = r"(?<![\w&/])"  # a word start, but not "Q&A:" or "Q/A:"
_ANSWER_MARKER = re.compile(_MARKER_START + r"(?:answer|output|solution):", re.IGNORECASE)
_QA_ANSWER = re.compile(_MARKER_START + r"Q:.*?" + _MARKER_START + r"(A):", re.IGNORECASE | re.DOTALL)

# Drop reasons, in the order the filters run; also the keys of `SelfInstructResult.drop_counts`.
# "surplus": outputs of the last batch left over once enough instructions were accepted.
DROP_REASONS = (
    "empty",
    "task_header",
    "too_short",
    "too_long",
    "blocked_word",
    "write_a_program",
    "bad_first_char",
    "benchmark_exact",
    "benchmark_similar",
    "earlier_iteration",
    "similar_to_pool",
    "similar_to_run",
    "surplus",
)


# ---- the prompt -------------------------------------------------------------------------------


def encode_prompt(examples: Sequence[str]) -> str:
    """The few-shot completion prompt: header, numbered examples (one line each), next number."""
    lines = [PROMPT_HEADER]
    for number, example in enumerate(examples, start=1):
        lines.append(f"{number}. {collapse_whitespace(example).rstrip(':')}\n")
    lines.append(f"{len(examples) + 1}.")
    return "".join(lines)


def stop_strings(num_examples: int) -> list[str]:
    """Strings that end the model's turn: a blank line, or a line starting item ``num_examples + 2``
    (only at a line start: "in 2010." or "in 10. steps" inside an instruction does not stop it)."""
    after_next = num_examples + 2
    return ["\n\n", f"\n{after_next}.", f"\n{after_next} ."]


# ---- cleaning: text transformations ------------------------------------------------------------


def truncate_at_stop(text: str, stops: Iterable[str]) -> str:
    """Cut at the earliest stop string: `generate(stop_strings=...)` keeps the stop string itself
    and a batch-mate's longer run does not stop ours, so the decoded text may run past it."""
    cut = min((index for stop in stops if (index := text.find(stop)) != -1), default=len(text))
    return text[:cut]


def split_numbered_items(text: str, next_number: int) -> list[str]:
    """Split a continuation of a numbered list into its items. An item starts a line with the
    expected next number ("\\n10. ", then "\\n11. ", ...), or one of the two after it (small models
    skip numbers). Any other number is part of the text: "in 2010.", "in 10. steps", the "1."
    lines of a list the instruction itself contains, "10.5" on a line of its own."""
    items = []
    expected, start = next_number, 0
    for match in _LINE_NUMBER.finditer(text):
        number = int(match["number"])
        if expected <= number < expected + _NUMBER_SKIP:
            items.append(text[start : match.start()])
            expected, start = number + 1, match.end()
    items.append(text[start:])
    return items


def collapse_whitespace(text: str) -> str:
    """Runs of whitespace (newlines included) become one space; ends are stripped."""
    return _WHITESPACE.sub(" ", text).strip()


def cut_at_answer_marker(text: str) -> str:
    """Drop an answer the model appended ("... Answer: 42", "Q: ... A: 42"), unless the
    instruction shows an example, whose "Output:" lines belong to the task."""
    if "example:" in text.lower():
        return text
    starts = [m.start() for m in [_ANSWER_MARKER.search(text)] if m]
    starts += [m.start(1) for m in [_QA_ANSWER.search(text)] if m]
    return text[: min(starts)].strip() if starts else text


def capitalize_first(text: str) -> str:
    """Upper-case the first character only."""
    return text[:1].upper() + text[1:]


def clean_response(text: str, num_examples: int) -> str:
    """The one instruction of a model continuation of an `encode_prompt` prompt showing
    `num_examples` examples: its first numbered item, normalised."""
    truncated = truncate_at_stop(text, stop_strings(num_examples))
    first_item = split_numbered_items(truncated, next_number=num_examples + 2)[0]
    return capitalize_first(cut_at_answer_marker(collapse_whitespace(first_item)))


# ---- cleaning: filters (True = drop) -----------------------------------------------------------


def whitespace_token_count(text: str) -> int:
    """Length measure of the length filter: whitespace-separated tokens."""
    return len(text.split())


def is_empty(text: str) -> bool:
    return not text.strip()


def starts_with_task_header(text: str) -> bool:
    """Instructions copied from dataset cards ("Detailed instructions: ...")."""
    return text.lower().startswith(tuple(header.lower() for header in TASK_HEADERS))


def is_too_short(text: str) -> bool:
    return whitespace_token_count(text) < MIN_TOKENS


def is_too_long(text: str) -> bool:
    return whitespace_token_count(text) > MAX_TOKENS


def mentions_blocked_word(text: str) -> bool:
    """Whole words only: "filed", "mapping", "drawer" are fine, "file", "Maps", "go to" are not."""
    return _BLOCKED.search(text) is not None


def starts_with_write_a_program(text: str) -> bool:
    """The reference drops these: models bolt "Write a program" onto tasks, and it is unclear
    whether the answer should be the program or the result."""
    return text.lower().startswith("write a program")


def starts_with_bad_char(text: str) -> bool:
    """Starts with punctuation or a non-ASCII character (list debris, other scripts), or with an
    ASCII control character (decoding debris; the reference let these through)."""
    first = text[:1]
    return first in string.punctuation or not first.isascii() or not first.isprintable()


RULES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("empty", is_empty),
    ("task_header", starts_with_task_header),
    ("too_short", is_too_short),
    ("too_long", is_too_long),
    ("blocked_word", mentions_blocked_word),
    ("write_a_program", starts_with_write_a_program),
    ("bad_first_char", starts_with_bad_char),
)


def rule_violation(instruction: str) -> str | None:
    """The name of the first rule that drops `instruction`, or None if it passes them all."""
    return next((name for name, drops in RULES if drops(instruction)), None)


# ---- the stage ---------------------------------------------------------------------------------


@dataclass
class SelfInstructResult:
    """instructions: instructions.jsonl records ({"id", "instruction", "source": "self_instruct"});
    drop_counts: reason -> number of calls whose output was dropped for it (all DROP_REASONS);
    calls: model calls (one per prompt); tokens_per_s: generated tokens per second of generate();
    samples: the first few judged outputs as {"output" (raw), "instruction" (cleaned), "dropped"
    (reason, "" if accepted)}, for the run's log."""

    instructions: list[dict[str, str]]
    drop_counts: dict[str, int]
    calls: int
    tokens_per_s: float
    samples: list[dict[str, str]] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return len(self.instructions) / self.calls if self.calls else 0.0


def generate_instructions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pool: Sequence[str],
    config: SelfInstructConfig,
    *,
    seed: int,
    sink: Sink | None = None,
    decontaminator: Decontaminator | None = None,
) -> SelfInstructResult:
    """Ask `model` for up to ``config.num_instructions`` new instructions.

    Stops once that many are accepted or after ``num_instructions × max_attempts_factor`` calls;
    may return fewer (see `top_up_from_pool`). Same seed, model and pool → same result (the seed
    is also set globally for torch, which `generate()` samples from). With a `decontaminator`,
    outputs matching a benchmark prompt or an earlier iteration's instruction are dropped
    (reasons "benchmark_exact", "benchmark_similar", "earlier_iteration").
    """
    if not pool:
        raise ValueError("pool: the prompt pool is empty")
    pool = list(pool)
    set_seed(seed)
    rng = random.Random(seed)
    num_examples = min(config.num_seed_examples, len(pool))
    stops = stop_strings(num_examples)
    pool_dedup = RougeDeduplicator(pool_references(pool), config.rouge_threshold)
    run_dedup = RougeDeduplicator((), config.rouge_threshold)
    budget = config.num_instructions * config.max_attempts_factor
    drop_counts = dict.fromkeys(DROP_REASONS, 0)
    accepted: list[dict[str, str]] = []
    samples: list[dict[str, str]] = []
    calls = generated_tokens = 0
    generate_seconds = 0.0

    while len(accepted) < config.num_instructions and calls < budget:
        batch_size = next_batch_size(config, len(accepted), calls, budget)
        prompts = [encode_prompt(rng.sample(pool, num_examples)) for _ in range(batch_size)]
        started = time.perf_counter()
        outputs, n_tokens = generate_completions(model, tokenizer, prompts, config, stops)
        generate_seconds += time.perf_counter() - started
        generated_tokens += n_tokens
        calls += len(prompts)
        for raw in outputs:
            if len(accepted) == config.num_instructions:
                drop_counts["surplus"] += 1
                continue
            instruction = clean_response(raw, num_examples)
            reason = (
                rule_violation(instruction)
                or (decontaminator.reason(instruction) if decontaminator else None)
                or _similarity_violation(instruction, pool_dedup, run_dedup)
            )
            if len(samples) < _NUM_SAMPLES:
                samples.append({"output": raw, "instruction": instruction, "dropped": reason or ""})
            if reason:
                drop_counts[reason] += 1
                continue
            run_dedup.add(instruction)
            accepted.append(
                {"id": f"si-{len(accepted):05d}", "instruction": instruction, "source": "self_instruct"}
            )
        _emit_progress(sink, len(accepted), config.num_instructions, calls, budget)

    result = SelfInstructResult(
        instructions=accepted,
        drop_counts=drop_counts,
        calls=calls,
        tokens_per_s=generated_tokens / generate_seconds if generate_seconds else 0.0,
        samples=samples,
    )
    _emit_metrics(sink, result)
    return result


def next_batch_size(config: SelfInstructConfig, accepted: int, calls: int, budget: int) -> int:
    """Model calls for the next batch: `config.batch_size` at first, then only as many as the
    instructions still wanted need at the acceptance rate seen so far (each call costs a long
    prompt's prefill, and a full batch for the last one or two instructions left most of its
    outputs as surplus: 7 of 16 calls in the demo's iteration 1); never past the call budget."""
    wanted = config.batch_size
    if accepted and calls:
        wanted = math.ceil((config.num_instructions - accepted) * calls / accepted)
    return max(1, min(config.batch_size, wanted, budget - calls))


def pool_references(pool: Sequence[str]) -> list[str]:
    """What a new instruction must not resemble: each pool prompt and, when the prompt carries an
    input after a blank line, its instruction part alone — against a long input the full prompt's
    F1 is diluted, and the reference implementation compared instructions with instructions."""
    references = list(pool)
    references += [head for prompt in pool if (head := prompt.split("\n\n", 1)[0]) != prompt]
    return references


def _similarity_violation(instruction: str, pool: RougeDeduplicator, run: RougeDeduplicator) -> str | None:
    if pool.is_duplicate(instruction):
        return "similar_to_pool"
    if run.is_duplicate(instruction):
        return "similar_to_run"
    return None


def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: SelfInstructConfig,
    stops: list[str],
) -> tuple[list[str], int]:
    """Continue each plain-text prompt; return the decoded continuations (in prompt order) and
    the number of generated tokens (padding after a sequence finished excluded).

    Prompts are tokenized once and generated in left-padded batches of similar length
    (`aipo_core.generation.padding_buckets`): the pool examples they show vary from a line to a
    page, and one long prompt would otherwise pad every other row of the batch to its length."""
    encoded = tokenizer(prompts)["input_ids"]
    sampling = (
        {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p}
        if config.temperature > 0
        else {"do_sample": False}
    )
    decoding = {
        **sampling,
        "max_new_tokens": config.max_new_tokens,
        "stop_strings": stops,
        "tokenizer": tokenizer,
        "pad_token_id": tokenizer.pad_token_id,
    }
    texts: list[str] = [""] * len(prompts)
    n_tokens = 0
    with inference(model):
        for bucket in padding_buckets([len(ids) for ids in encoded]):
            batch = tokenizer.pad(
                {"input_ids": [encoded[i] for i in bucket]}, padding_side="left", return_tensors="pt"
            ).to(model.device)
            # [b, prompt_len + new_len]; eager attention while decoding on a CPU
            sequences = generate_after_prefill(model, batch["input_ids"], batch["attention_mask"], **decoding)
            continuation = sequences[:, batch["input_ids"].shape[1] :]  # [b, new_len]
            n_tokens += int((continuation != tokenizer.pad_token_id).sum())
            decoded = tokenizer.batch_decode(continuation, skip_special_tokens=True)
            for i, text in zip(bucket, decoded, strict=True):
                texts[i] = text
    return texts, n_tokens


def top_up_from_pool(
    instructions: Sequence[dict[str, str]],
    pool: Sequence[str],
    n: int,
    seed: int,
    *,
    decontaminator: Decontaminator | None = None,
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """`instructions` plus pool prompts not already among them (sampled with `seed`) until there
    are `n`, marked ``"source": "pool"`` with id ``pool-{index in pool}``. Fewer than `n` only if
    the pool runs out; a list already of length ≥ n is returned unchanged (as a new list).

    With a `decontaminator`, pool prompts it rejects (a benchmark prompt, or an instruction an
    earlier iteration already trained on) are skipped; the second value counts them per reason.
    """
    result = list(instructions)
    skipped: dict[str, int] = {}
    used = {record["instruction"] for record in result}
    unused = [index for index, prompt in enumerate(pool) if prompt not in used]
    random.Random(seed).shuffle(unused)
    for index in unused:
        if len(result) >= n:
            break
        if decontaminator is not None and (reason := decontaminator.reason(pool[index])):
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        result.append({"id": f"pool-{index:05d}", "instruction": pool[index], "source": "pool"})
    return result, skipped


def _emit_progress(sink: Sink | None, accepted: int, wanted: int, calls: int, budget: int) -> None:
    if sink is None:
        return
    # Progress is whichever end condition is closer: enough instructions or the call budget.
    fraction = min(1.0, max(accepted / wanted, calls / budget))
    sink(
        {
            "kind": "progress",
            "fraction": fraction,
            "message": f"self-instruct: {accepted}/{wanted} accepted, {calls} calls",
        }
    )


def _emit_metrics(sink: Sink | None, result: SelfInstructResult) -> None:
    if sink is None:
        return
    values: dict[str, float] = {
        "self_instruct/accepted": float(len(result.instructions)),
        "self_instruct/calls": float(result.calls),
        "self_instruct/acceptance_rate": result.acceptance_rate,
        "self_instruct/tokens_per_s": result.tokens_per_s,
    }
    values.update(
        {f"self_instruct/dropped/{reason}": float(count) for reason, count in result.drop_counts.items()}
    )
    sink({"kind": "metric", "step": 0, "values": values})
