"""Judge candidates and turn judgements into preference pairs (Algorithm 1, step 3).

A `Ranker` scores every candidate of a prompt (higher = better) and compares two outputs
(`pairwise_preference`, also used by evaluation to judge model output vs baseline output).
Backends:

* `pairrm` — PairRM through llm-blender (`PairRMRanker`), the paper's judge;
* `reward_model` — any sequence-classification reward model (`RewardModelRanker`);
* `llm_judge` — a causal LM asked "A or B?" in both orders (`LLMJudgeRanker`); with
  `model: policy` the policy judges its own samples (self-rewarding);
* `length_biased` — one of the above plus a known bonus per unit of response length
  (`LengthBiasedRanker`), the length-biased ranker of the paper's length study (docs/length_study.md).

`select_pairs` keeps best vs worst per prompt and applies the pair filters of docs/architecture.md §1.
"""

from __future__ import annotations

import math
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from aipo_core.access import PAIRRM_HUB_ID, POLICY_ALIAS, ModelAccess
from aipo_core.devices import Placement
from aipo_core.models import DEFAULT_ACCESS, inference
from aipo_core.shared_prefix import last_token_logits

if TYPE_CHECKING:
    from aipo_core.config import LengthBiasConfig

Sink = Callable[[dict], None]
RANKER_KINDS = ("pairrm", "reward_model", "llm_judge", "length_biased")
POLICY = POLICY_ALIAS


class Ranker(ABC):
    """Scores candidates of a prompt; all methods are batched over prompts."""

    batch_size: int = 8

    @abstractmethod
    def score_batch(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        """scores[i][j] for candidate j of prompt i; only the order within a prompt is meaningful."""

    @abstractmethod
    def pairwise_preferences(
        self, prompts: Sequence[str], outputs_a: Sequence[str], outputs_b: Sequence[str]
    ) -> list[float]:
        """P(output_a is better than output_b) per prompt, in [0, 1]; 0.5 = no preference."""

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        return self.score_batch([prompt], [candidates])[0]

    def pairwise_preference(self, prompt: str, output_a: str, output_b: str) -> float:
        return self.pairwise_preferences([prompt], [output_a], [output_b])[0]


def _check_lengths(**named: Sequence[Any]) -> None:
    sizes = {name: len(seq) for name, seq in named.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"length mismatch: {sizes}")


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- PairRM


class PairRMRanker(Ranker):
    """PairRM (llm-blender). Candidate score: PairRM's "max_logits" aggregate of the full comparison
    matrix, mean_j (logit[i, j] − logit[j, i]) — how strongly i beats the others, both orders."""

    def __init__(
        self,
        path_or_id: str = PAIRRM_HUB_ID,
        *,
        access: ModelAccess = DEFAULT_ACCESS,
        field: str = "ranker.model",
        batch_size: int = 8,
        device: str | None = None,
    ):
        from aipo_core.pairrm_compat import load_pairrm

        self.batch_size = batch_size
        self.device = device or _default_device()
        self.blender = load_pairrm(path_or_id, access=access, field=field, device=self.device)

    def score_batch(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_lengths(prompts=prompts, candidates=candidates)
        scores: list[list[float]] = [[] for _ in prompts]
        # Blender.rank needs the same candidate count in a call: group prompts by count.
        by_count: dict[int, list[int]] = {}
        for i, cands in enumerate(candidates):
            by_count.setdefault(len(cands), []).append(i)
        for count, indices in by_count.items():
            if count < 2:
                for i in indices:
                    scores[i] = [0.0] * count
                continue
            matrix = self.blender.rank(
                [prompts[i] for i in indices],
                [list(candidates[i]) for i in indices],
                return_scores=True,
                batch_size=self.batch_size,
                disable_tqdm=True,
            )  # [len(indices), count]
            for row, i in zip(matrix.tolist(), indices, strict=True):
                scores[i] = [float(s) for s in row]
        return scores

    def pairwise_preferences(
        self, prompts: Sequence[str], outputs_a: Sequence[str], outputs_b: Sequence[str]
    ) -> list[float]:
        _check_lengths(prompts=prompts, outputs_a=outputs_a, outputs_b=outputs_b)
        if not prompts:
            return []
        # mode [A,B]+[B,A] returns logit(A,B) − logit(B,A): twice the order-averaged logit.
        logits = self.blender.compare(
            list(prompts),
            list(outputs_a),
            list(outputs_b),
            batch_size=self.batch_size,
            return_logits=True,
            mode="[A,B]+[B,A]",
            disable_tqdm=True,
        )
        return [_sigmoid(float(x) / 2) for x in logits]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# --------------------------------------------------------------------------- reward model


class RewardModelRanker(Ranker):
    """Score = the single logit of a sequence-classification reward model on (prompt, response).

    With a chat template the pair is formatted as a user/assistant conversation (how chat RMs are
    trained); without one it is a text pair, as for DeBERTa-style RMs.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 8,
        max_length: int = 2048,
    ):
        if model.config.num_labels != 1:
            raise ValueError(
                "ranker.model: a reward model has one output logit, "
                f"this one has num_labels={model.config.num_labels}"
            )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            # Causal-LM classifiers find each row's last real token through pad_token_id.
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length

    @classmethod
    def from_pretrained(
        cls,
        spec: str,
        *,
        access: ModelAccess = DEFAULT_ACCESS,
        field: str = "ranker.model",
        batch_size: int = 8,
        trust_remote_code: bool = False,
        device: str | None = None,
        cache_dir: str | Path | None = None,
        placement: Placement | None = None,
    ) -> RewardModelRanker:
        """Load the reward model; with a `placement`, straight onto its device in its dtype."""
        from aipo_core.models import load_sequence_classifier

        model, tokenizer = load_sequence_classifier(
            spec,
            access=access,
            field=field,
            trust_remote_code=trust_remote_code,
            cache_dir=cache_dir,
            placement=placement,
        )
        if placement is None:
            model = model.to(device or _default_device())
        return cls(model, tokenizer, batch_size=batch_size)

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """One reward per (prompt, response) pair."""
        _check_lengths(prompts=prompts, responses=responses)
        out: list[float] = []
        with inference(self.model):
            for start in range(0, len(prompts), self.batch_size):
                batch = self._encode(
                    prompts[start : start + self.batch_size], responses[start : start + self.batch_size]
                )
                logits = self.model(**batch.to(self.model.device)).logits  # [b, 1]
                out.extend(logits[:, 0].float().tolist())
        return out

    def _encode(self, prompts: Sequence[str], responses: Sequence[str]) -> Any:
        common = {"padding": True, "truncation": True, "max_length": self.max_length, "return_tensors": "pt"}
        if self.tokenizer.chat_template is None:
            return self.tokenizer(list(prompts), list(responses), **common)
        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
            )
            for p, r in zip(prompts, responses, strict=True)
        ]
        return self.tokenizer(texts, add_special_tokens=False, **common)

    def score_batch(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_lengths(prompts=prompts, candidates=candidates)
        flat_prompts = [p for p, cands in zip(prompts, candidates, strict=True) for _ in cands]
        flat = self.rewards(flat_prompts, [c for cands in candidates for c in cands])
        out, pos = [], 0
        for cands in candidates:
            out.append(flat[pos : pos + len(cands)])
            pos += len(cands)
        return out

    def pairwise_preferences(
        self, prompts: Sequence[str], outputs_a: Sequence[str], outputs_b: Sequence[str]
    ) -> list[float]:
        _check_lengths(prompts=prompts, outputs_a=outputs_a, outputs_b=outputs_b)
        rewards = self.rewards([*prompts, *prompts], [*outputs_a, *outputs_b])
        n = len(prompts)
        # Bradley–Terry: P(a > b) = σ(r_a − r_b).
        return [_sigmoid(ra - rb) for ra, rb in zip(rewards[:n], rewards[n:], strict=True)]


# --------------------------------------------------------------------------- LLM as a judge

JUDGE_TEMPLATE = (
    "You are comparing two responses to the same instruction. Decide which response follows the "
    "instruction better: more helpful, correct, relevant and clear. Ignore the order in which they "
    "are shown and do not prefer a response just because it is longer.\n\n"
    "### Instruction:\n{instruction}\n\n"
    "### Response A:\n{response_a}\n\n"
    "### Response B:\n{response_b}\n\n"
    "Which response is better? Answer with a single letter: A or B."
)


class LLMJudgeRanker(Ranker):
    """Pairwise judge from a causal LM's next-token probabilities of "A" vs "B".

    Each pair is judged in both orders and averaged, P(a > b) = ½·(P_A(a, b) + 1 − P_A(b, a)),
    which cancels position bias and makes P(a > b) + P(b > a) = 1 exactly. A candidate's score is
    its mean preference over every other candidate of the prompt (round robin).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 8,
        template: str = JUDGE_TEMPLATE,
    ):
        if tokenizer.pad_token_id is None:
            raise ValueError("the judge tokenizer has no pad token; batched judging needs one")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.template = batch_size, template
        self._label_ids = (_label_token_ids(tokenizer, "A"), _label_token_ids(tokenizer, "B"))
        if set(self._label_ids[0]) & set(self._label_ids[1]):
            raise ValueError("the judge tokenizer maps 'A' and 'B' to a shared token")

    def prob_first_better(
        self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]
    ) -> list[float]:
        """P(label A) when `firsts` is shown as Response A and `seconds` as Response B (one order).

        Each text is tokenized once, and rows that start alike share one forward of their common
        prefix (aipo_core.shared_prefix): the rows with the same prompt and Response A (a round
        robin shows each candidate first against every other), else the rows with the same prompt
        (a pair judged in both orders)."""
        texts = [
            self.tokenizer.apply_chat_template(
                [
                    {
                        "role": "user",
                        "content": self.template.format(instruction=p, response_a=a, response_b=b),
                    }
                ],
                add_generation_prompt=True,
                tokenize=False,
            )
            for p, a, b in zip(prompts, firsts, seconds, strict=True)
        ]
        sequences = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        out = [0.0] * len(texts)
        with inference(self.model):
            for rows, logits in last_token_logits(
                self.model,
                sequences,
                _shared_start_groups(prompts, firsts),
                pad_id=self.tokenizer.pad_token_id,
                max_rows=self.batch_size,
            ):
                for row, prob in zip(rows, self._prob_a(logits), strict=True):
                    out[row] = prob
        return out

    def _prob_a(self, logits: torch.Tensor) -> list[float]:
        """logits: [b, V] of the first token of the judge's answer -> P(A | answer is A or B)."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # [b, V]
        label_a = torch.logsumexp(logprobs[:, self._label_ids[0]], dim=-1)  # [b]
        label_b = torch.logsumexp(logprobs[:, self._label_ids[1]], dim=-1)  # [b]
        return torch.sigmoid(label_a - label_b).tolist()

    def pairwise_preferences(
        self, prompts: Sequence[str], outputs_a: Sequence[str], outputs_b: Sequence[str]
    ) -> list[float]:
        _check_lengths(prompts=prompts, outputs_a=outputs_a, outputs_b=outputs_b)
        n = len(prompts)
        both = self.prob_first_better(
            [*prompts, *prompts], [*outputs_a, *outputs_b], [*outputs_b, *outputs_a]
        )
        return [(ab + 1.0 - ba) / 2 for ab, ba in zip(both[:n], both[n:], strict=True)]

    def score_batch(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_lengths(prompts=prompts, candidates=candidates)
        jobs = [
            (i, j, k) for i, cands in enumerate(candidates) for j, k in combinations(range(len(cands)), 2)
        ]
        prefs = self.pairwise_preferences(
            [prompts[i] for i, _, _ in jobs],
            [candidates[i][j] for i, j, _ in jobs],
            [candidates[i][k] for i, _, k in jobs],
        )
        totals = [[0.0] * len(cands) for cands in candidates]
        for (i, j, k), p in zip(jobs, prefs, strict=True):
            totals[i][j] += p
            totals[i][k] += 1.0 - p
        return [[t / max(len(row) - 1, 1) for t in row] for row in totals]


def _label_token_ids(tokenizer: PreTrainedTokenizerBase, label: str) -> list[int]:
    """Token ids that spell the label as the answer's first token: "A" and " A" where each is a
    single token (tokenizers differ on whether the answer starts with a space)."""
    encodings = [tokenizer.encode(form, add_special_tokens=False) for form in (label, f" {label}")]
    single = {ids[0] for ids in encodings if len(ids) == 1}
    return sorted(single) or [encodings[0][0]]


def _shared_start_groups(prompts: Sequence[str], firsts: Sequence[str]) -> list[list[int]]:
    """Row groups whose judge texts start alike: same prompt and Response A where such rows
    repeat (a round robin), else same prompt (see `LLMJudgeRanker.prob_first_better`)."""
    by_first: dict[tuple[str, str], list[int]] = {}
    for row, key in enumerate(zip(prompts, firsts, strict=True)):
        by_first.setdefault(key, []).append(row)
    groups: dict[tuple[str, ...], list[int]] = {}
    for (prompt, first), rows in by_first.items():
        groups.setdefault((prompt, first) if len(rows) > 1 else (prompt,), []).extend(rows)
    return list(groups.values())


# --------------------------------------------------------------------------- length-biased


class LengthBiasedRanker(Ranker):
    """A real judge plus a known length bonus: score = judge score + bonus × length(candidate).

    The ranker of the paper's length study: its preference for longer responses is known exactly,
    so how far each objective lets that bias lengthen the policy can be measured. Length is counted
    in `tokenizer`'s tokens (no special tokens) or, without one, in units of 100 characters.
    """

    def __init__(self, judge: Ranker, bonus: float, *, tokenizer: PreTrainedTokenizerBase | None = None):
        if not (math.isfinite(bonus) and bonus >= 0):
            raise ValueError(f"ranker.length_bias.bonus: must be finite and >= 0, got {bonus}")
        self.judge, self.bonus, self.tokenizer = judge, bonus, tokenizer
        self.batch_size = judge.batch_size

    def length(self, text: str) -> float:
        """Response length in the bonus' unit: tokens, or hundreds of characters."""
        if self.tokenizer is None:
            return len(text) / 100
        return float(len(self.tokenizer.encode(text, add_special_tokens=False)))

    def score_batch(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        real = self.judge.score_batch(prompts, candidates)
        return [
            [score + self.bonus * self.length(text) for score, text in zip(row, cands, strict=True)]
            for row, cands in zip(real, candidates, strict=True)
        ]

    def pairwise_preferences(
        self, prompts: Sequence[str], outputs_a: Sequence[str], outputs_b: Sequence[str]
    ) -> list[float]:
        """The judge's P(a > b) with the bonus gap added on the logit scale (Bradley–Terry)."""
        real = self.judge.pairwise_preferences(prompts, outputs_a, outputs_b)
        return [
            _sigmoid(_logit(p) + self.bonus * (self.length(a) - self.length(b)))
            for p, a, b in zip(real, outputs_a, outputs_b, strict=True)
        ]


def _logit(p: float) -> float:
    clipped = min(max(p, 1e-12), 1 - 1e-12)  # a judge certain either way stays finite
    return math.log(clipped / (1 - clipped))


# --------------------------------------------------------------------------- factory


def make_ranker(
    kind: str,
    model_spec: str,
    *,
    access: ModelAccess = DEFAULT_ACCESS,
    field: str = "ranker.model",
    policy: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
    batch_size: int = 8,
    trust_remote_code: bool = False,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    placement: Placement | None = None,
    length_bias: LengthBiasConfig | None = None,
) -> Ranker:
    """Build the ranker a `RankerConfig`/`JudgeConfig` describes; every model loads under `access`.

    `model_spec == "policy"` means the current policy (`policy=(model, tokenizer)`) for
    `llm_judge`, and the published PairRM checkpoint for `pairrm`. `field` names the config field
    in errors (`evaluation.judge.model` for a judge). A separate judge or reward model loads with
    `placement` (`aipo_core.devices`) when given: on its device, in its dtype. `length_biased`
    builds `length_bias.judge` on `model_spec` and wraps it (`LengthBiasedRanker`); a bonus per
    token counts the policy tokenizer's tokens.
    """
    if kind == "length_biased":
        if length_bias is None:
            raise ValueError(
                "ranker.length_bias: kind 'length_biased' needs length_bias: {judge, bonus, unit}"
            )
        if length_bias.unit == "token" and policy is None:
            raise ValueError("ranker.length_bias.unit: 'token' needs the policy tokenizer passed as policy=")
        judge = make_ranker(
            length_bias.judge,
            model_spec,
            access=access,
            field=field,
            policy=policy,
            batch_size=batch_size,
            trust_remote_code=trust_remote_code,
            device=device,
            cache_dir=cache_dir,
            placement=placement,
        )
        tokenizer = policy[1] if length_bias.unit == "token" and policy is not None else None
        return LengthBiasedRanker(judge, length_bias.bonus, tokenizer=tokenizer)
    if placement is not None:
        device = str(placement.torch_device())
    if kind == "pairrm":
        spec = PAIRRM_HUB_ID if model_spec == POLICY else model_spec
        return PairRMRanker(spec, access=access, field=field, batch_size=batch_size, device=device)
    if kind == "reward_model":
        if model_spec == POLICY:
            raise ValueError(f"{field}: kind 'reward_model' needs a reward model id or path, not 'policy'")
        return RewardModelRanker.from_pretrained(
            model_spec,
            access=access,
            field=field,
            batch_size=batch_size,
            trust_remote_code=trust_remote_code,
            device=device,
            cache_dir=cache_dir,
            placement=placement,
        )
    if kind == "llm_judge":
        if model_spec == POLICY:
            if policy is None:
                raise ValueError(f"{field}: 'policy' needs the policy (model, tokenizer) passed as policy=")
            model, tokenizer = policy
        else:
            from aipo_core.models import load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(
                model_spec,
                access=access,
                field=field,
                trust_remote_code=trust_remote_code,
                cache_dir=cache_dir,
                placement=placement,
            )
            if placement is None:
                model = model.to(device or _default_device())
        return LLMJudgeRanker(model, tokenizer, batch_size=batch_size)
    raise ValueError(f"ranker.kind: unknown kind {kind!r} (expected one of {', '.join(RANKER_KINDS)})")


# --------------------------------------------------------------------------- ranking + pairs


def record_instruction(record: dict) -> str:
    """The text a judge sees as the prompt: the instruction (else the last user turn)."""
    if isinstance(record.get("instruction"), str):
        return record["instruction"]
    users = [m["content"] for m in record.get("prompt", []) if m.get("role") == "user"]
    if not users:
        raise ValueError(f"candidate record {record.get('id')!r}: no instruction and no user turn in prompt")
    return users[-1]


def rank_candidates(
    candidate_records: Sequence[dict], ranker: Ranker, *, sink: Sink | None = None
) -> list[list[float]]:
    """Scores for every candidate of every record ([n_records][n_candidates]), in chunks of
    `ranker.batch_size` records so progress can be reported."""
    scores: list[list[float]] = []
    chunk = max(ranker.batch_size, 1)
    total = len(candidate_records)
    for start in range(0, total, chunk):
        records = candidate_records[start : start + chunk]
        scores.extend(
            ranker.score_batch([record_instruction(r) for r in records], [r["candidates"] for r in records])
        )
        if sink is not None:
            done = start + len(records)
            sink({"kind": "progress", "fraction": done / total, "message": f"ranked {done}/{total}"})
    if sink is not None and scores:
        spreads = [max(row) - min(row) for row in scores if row]
        sink({"kind": "metric", "step": 0, "values": {"rank/score_spread_mean": sum(spreads) / len(spreads)}})
    return scores


DROP_REASONS = (
    "too_few_candidates",
    "tie",
    "identical_texts",
    "empty_chosen",
    "prompt_too_long",
    "response_too_long",
    "url_in_chosen",
)
_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+", re.IGNORECASE)


def contains_url(text: str) -> bool:
    return _URL.search(text) is not None


def exclude_unfinished(candidate_records: Sequence[dict]) -> tuple[list[dict], dict[str, int]]:
    """Candidate records without the candidates cut off at max_new_tokens (``finished`` False).

    A truncated response gets the chat template's end-of-turn appended in training, which would
    teach the policy that stopping mid-sentence is a complete answer. Returns copies holding only
    finished candidates (their `candidates`, `lengths`, `finished` filtered alike), minus the
    records left with fewer than two, and the counts ``unfinished`` (candidates removed) and
    ``dropped_unfinished`` (prompts removed for it). Records without ``finished`` (written before
    the field existed) count as finished. Each copy also says which of the record's candidates it
    kept (``candidate_indices``, of ``candidate_count``), so scores map back (`candidate_outcomes`).
    """
    kept: list[dict] = []
    counts = {"unfinished": 0, "dropped_unfinished": 0}
    for record in candidate_records:
        finished = record.get("finished") or [True] * len(record["candidates"])
        if len(finished) != len(record["candidates"]):
            raise ValueError(
                f"candidate record {record.get('id')!r}: {len(finished)} finished flags for "
                f"{len(record['candidates'])} candidates"
            )
        keep = [i for i, done in enumerate(finished) if done]
        counts["unfinished"] += len(finished) - len(keep)
        if len(keep) < 2 <= len(finished):
            counts["dropped_unfinished"] += 1
            continue
        filtered = dict(record)
        for field in ("candidates", "lengths", "finished"):
            if field in record:
                filtered[field] = [record[field][i] for i in keep]
        filtered["candidate_indices"] = keep
        filtered["candidate_count"] = len(finished)
        kept.append(filtered)
    return kept, counts


def training_lengths(pair: dict, tokenizer: PreTrainedTokenizerBase) -> tuple[int, int, int]:
    """(prompt, chosen, rejected) token counts of a conversational pair exactly as training
    tokenizes it (`aipo_core.training.tokenize_pair`): the prompt through the chat template with
    the assistant turn opened, each response with the template's end-of-turn tokens."""
    from aipo_core.training import tokenize_pair

    ids = tokenize_pair(pair, tokenizer, max_prompt_length=sys.maxsize)  # untruncated
    return len(ids["prompt_ids"]), len(ids["chosen_ids"]), len(ids["rejected_ids"])


def length_violation(
    lengths: tuple[int, int, int], max_prompt_tokens: int, max_length: int | None
) -> str | None:
    """Whether training would cut the pair, from its `training_lengths`: "prompt_too_long" (over
    `max_prompt_tokens`), "response_too_long" (prompt + longer response over `max_length`, the
    collator's budget: the cut response would lose its end-of-turn and be trained on as if it
    stopped there), else None. `max_length` None = no budget."""
    prompt, chosen, rejected = lengths
    if prompt > max_prompt_tokens:
        return "prompt_too_long"
    if max_length is not None and prompt + max(chosen, rejected) > max_length:
        return "response_too_long"
    return None


def filter_by_training_length(
    pairs: Sequence[dict], tokenizer: PreTrainedTokenizerBase, *, max_prompt_tokens: int, max_length: int
) -> tuple[list[dict], dict[str, int]]:
    """Pairs training can take whole (see `length_violation`), and the drops per reason; for
    imported preference sets, whose responses can be far longer than the training budget."""
    kept: list[dict] = []
    drops = {"prompt_too_long": 0, "response_too_long": 0}
    for pair in pairs:
        reason = length_violation(training_lengths(pair, tokenizer), max_prompt_tokens, max_length)
        if reason is None:
            kept.append(pair)
        else:
            drops[reason] += 1
    return kept, drops


def _selection_violation(
    record: dict, row: Sequence[float], best: int, worst: int, tie_tolerance: float
) -> str | None:
    """The first of the filters that need no tokenizer the best/worst pair fails, else None."""
    candidates = record["candidates"]
    checks = (
        ("tie", row[best] - row[worst] <= tie_tolerance),
        ("identical_texts", candidates[best].strip() == candidates[worst].strip()),
        ("empty_chosen", not candidates[best].strip()),
    )
    return next((reason for reason, failed in checks if failed), None)


def _validate_scores(candidate_records: Sequence[dict], scores: Sequence[Sequence[float]]) -> None:
    if len(scores) != len(candidate_records):
        raise ValueError(f"scores: {len(scores)} rows for {len(candidate_records)} candidate records")
    for i, (record, row) in enumerate(zip(candidate_records, scores, strict=True)):
        if len(row) != len(record.get("candidates", [])):
            raise ValueError(
                f"scores[{i}]: {len(row)} scores for {len(record.get('candidates', []))} candidates"
            )
        if any(not math.isfinite(s) for s in row):
            raise ValueError(f"scores[{i}]: non-finite score in {list(row)}")


#: How `select_pairs` picks a prompt's pair, for readers of its outcome (the lineage API).
SELECTION_RULE = (
    "chosen = the candidate the ranker scored highest, rejected = the lowest, among the finished "
    "candidates (all of them with generation.keep_unfinished); the prompt gives no pair when the two "
    "tie, have identical texts, the chosen one is empty or contains a URL, or training would cut them"
)
PAIR_KEPT = "pair"


def select_pairs(
    candidate_records: Sequence[dict],
    scores: Sequence[Sequence[float]],
    *,
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_tokens: int = 512,
    max_length: int | None = None,
    tie_tolerance: float = 1e-6,
) -> tuple[list[dict], dict[str, int]]:
    """chosen = highest-scored candidate, rejected = lowest; pairs failing a filter are dropped.

    Returns pairs.jsonl records (without the ref_* fields, which the rank stage adds from the
    reference model) and how many prompts each reason in `DROP_REASONS` dropped. Lengths are in
    tokens of `tokenizer` (the policy's) as training tokenizes the pair (`training_lengths`);
    `max_prompt_tokens`/`max_length` are training's max_prompt_length/max_length (None = no
    budget). Unfinished candidates are removed beforehand (`exclude_unfinished`).
    """
    pairs, drops, _ = select_pairs_with_outcomes(
        candidate_records,
        scores,
        tokenizer=tokenizer,
        max_prompt_tokens=max_prompt_tokens,
        max_length=max_length,
        tie_tolerance=tie_tolerance,
    )
    return pairs, drops


def select_pairs_with_outcomes(
    candidate_records: Sequence[dict],
    scores: Sequence[Sequence[float]],
    *,
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_tokens: int = 512,
    max_length: int | None = None,
    tie_tolerance: float = 1e-6,
) -> tuple[list[dict], dict[str, int], list[dict]]:
    """`select_pairs`, plus one outcome record per candidate record (`candidate_outcome`): the
    candidate_scores.jsonl the rank stage writes, so every candidate's score and the reason its
    prompt did or did not give a pair can be read back later."""
    _validate_scores(candidate_records, scores)
    drops = dict.fromkeys(DROP_REASONS, 0)
    pairs, outcomes = [], []
    for record, row in zip(candidate_records, scores, strict=True):
        candidates = record["candidates"]
        if len(candidates) < 2:
            drops["too_few_candidates"] += 1
            outcomes.append(candidate_outcome(record, row, None, None, "too_few_candidates"))
            continue
        best = max(range(len(row)), key=row.__getitem__)
        worst = min(range(len(row)), key=row.__getitem__)
        pair = {
            "id": record["id"],
            "prompt": record["prompt"],
            "chosen": [{"role": "assistant", "content": candidates[best]}],
            "rejected": [{"role": "assistant", "content": candidates[worst]}],
            "score_chosen": float(row[best]),
            "score_rejected": float(row[worst]),
        }
        reason = _selection_violation(record, row, best, worst, tie_tolerance)
        lengths = training_lengths(pair, tokenizer) if reason is None else (0, 0, 0)
        reason = reason or length_violation(lengths, max_prompt_tokens, max_length)
        reason = reason or ("url_in_chosen" if contains_url(candidates[best]) else None)
        outcomes.append(candidate_outcome(record, row, best, worst, reason or PAIR_KEPT))
        if reason is not None:
            drops[reason] += 1
            continue
        pairs.append(
            pair
            | {
                "chosen_length": lengths[1],
                "rejected_length": lengths[2],
                "chosen_chars": len(candidates[best]),
                "rejected_chars": len(candidates[worst]),
            }
        )
    return pairs, drops, outcomes


def candidate_outcome(
    record: dict, row: Sequence[float], best: int | None, worst: int | None, outcome: str
) -> dict:
    """One candidate_scores.jsonl record, indexed like the prompt's candidates.jsonl candidates.

    `record` may be a copy `exclude_unfinished` filtered (its `candidate_indices` map back);
    candidates it removed get score None. `chosen`/`rejected` are the best/worst candidates even
    when a filter then dropped the pair (`outcome` is the drop reason, else PAIR_KEPT).
    """
    indices = record.get("candidate_indices", list(range(len(row))))
    full: list[float | None] = [None] * record.get("candidate_count", len(row))
    for index, score in zip(indices, row, strict=True):
        full[index] = float(score)
    return {
        "id": record["id"],
        "scores": full,
        "chosen": None if best is None else indices[best],
        "rejected": None if worst is None else indices[worst],
        "outcome": outcome,
    }
