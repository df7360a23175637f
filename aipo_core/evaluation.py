"""Evaluate a policy against a benchmark's baseline outputs (Algorithm 1, step 5).

`evaluate_policy` answers the run's fixed evaluation sample of a benchmark (aipo_core.eval_sample:
seeded, stratified, the same prompts every iteration) with a model (greedy unless
`evaluation.temperature` > 0), asks a pairwise judge whether each answer beats the baseline answer,
and returns eval/{benchmark}.jsonl records plus the raw win rate, average length and their
standard errors. The length-controlled win rate is not computed here: it needs all of a run's
evaluations by the judge at once (aipo_core.eval_summary, docs/evaluation.md).

Judges (`make_judge`, from `evaluation.judge`):
* `pairrm`, `reward_model`, `llm_judge`: the rankers of aipo_core.ranking; each judges a pair in
  both orders (or symmetrically), so position bias cancels. `llm_judge` with `model: base`
  (default) judges with the frozen initial model, the same judge for every iteration;
  `model: policy` with the evaluated model itself.
* `alpaca_eval`: the official AlpacaEval annotator (`alpaca_eval.annotators.PairwiseAnnotator`,
  default config weighted_alpaca_eval_gpt4_turbo), i.e. real AlpacaEval 2.0 numbers against
  GPT-4-Turbo outputs. It calls the OpenAI API: install `alpaca-eval` yourself (it needs
  `setuptools<81`, which this project does not pin, so it is not a dependency) and export
  OPENAI_API_KEY, which alpaca_eval reads; this module never reads the environment.

Items without a baseline output (MT-Bench questions outside math/reasoning/coding have no GPT-4
reference answer) are never sampled, and the result's notes say how many there are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from aipo_core.access import ModelAccess
from aipo_core.config import BASE_JUDGE, EvaluationConfig, JudgeConfig
from aipo_core.devices import Placement
from aipo_core.eval_answers import Answers, answer_samples
from aipo_core.eval_sample import EvalSample, evaluation_sample
from aipo_core.generation import Generator, HFGenerator
from aipo_core.models import DEFAULT_ACCESS
from aipo_core.winrate import raw_win_rate

Sink = Callable[[dict], None]
DEFAULT_ALPACA_EVAL_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
# Prompts per generation batch and per progress report while judging. A batch decodes until its
# longest answer ends, so fewer, fuller batches take fewer decoding steps: 16 answers a 12-prompt
# sample (the demo's) in one batch instead of 8 + 4, and a decoding step of 12 rows costs little
# more than one of 8 on a CPU (each step reads every weight once, whatever the rows).
GENERATION_BATCH_SIZE = 16
JUDGE_CHUNK = 16


class PairwiseJudge(Protocol):
    """P(output_a is better than output_b) in [0, 1] for one prompt (aipo_core.ranking.Ranker)."""

    def pairwise_preference(self, prompt: str, output_a: str, output_b: str) -> float: ...


@dataclass
class EvalResult:
    """eval/{benchmark}.jsonl records, scalar metrics for the store, and notes for the user."""

    benchmark: str
    records: list[dict[str, Any]]
    metrics: dict[str, float | int | None]
    notes: list[str] = field(default_factory=list)

    @property
    def prompt_ids(self) -> list[str]:
        return [str(r["id"]) for r in self.records]


class AlpacaEvalJudge:
    """The official AlpacaEval annotator behind the PairwiseJudge interface.

    alpaca_eval is imported lazily (it is an optional, user-installed package); annotating runs
    the configured API judge, in batches, with alpaca_eval's own order randomisation.
    """

    def __init__(
        self, annotator: str = DEFAULT_ALPACA_EVAL_ANNOTATOR, caching_path: str | Path | None = None
    ):
        try:
            from alpaca_eval.annotators import PairwiseAnnotator
        except ImportError as exc:
            raise ImportError(
                "evaluation.judge.kind 'alpaca_eval' needs the alpaca_eval package, which is not installed: "
                "pip install alpaca-eval 'setuptools<81' (and export OPENAI_API_KEY), or use "
                "judge kind llm_judge, pairrm or reward_model"
            ) from exc
        self.annotator_name = annotator
        self._annotator = PairwiseAnnotator(annotators_config=annotator, caching_path=caching_path)

    def pairwise_preferences(
        self, prompts: Sequence[str], outputs_a: Sequence[str], outputs_b: Sequence[str]
    ) -> list[float]:
        """P(a > b) = AlpacaEval preference − 1, with b as output_1 (baseline) and a as output_2."""
        baseline = [
            {"instruction": p, "output": b, "generator": "baseline"}
            for p, b in zip(prompts, outputs_b, strict=True)
        ]
        model = [
            {"instruction": p, "output": a, "generator": "policy"}
            for p, a in zip(prompts, outputs_a, strict=True)
        ]
        annotated = self._annotator.annotate_head2head(outputs_1=baseline, outputs_2=model, is_ordered=True)
        if len(annotated) != len(prompts):
            raise RuntimeError(f"alpaca_eval returned {len(annotated)} annotations for {len(prompts)} pairs")
        prefs = [row.get("preference") for row in annotated]
        return [math.nan if p is None or p != p else float(p) - 1.0 for p in prefs]

    def pairwise_preference(self, prompt: str, output_a: str, output_b: str) -> float:
        return self.pairwise_preferences([prompt], [output_a], [output_b])[0]


def make_judge(
    config: JudgeConfig,
    *,
    access: ModelAccess = DEFAULT_ACCESS,
    policy: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
    base: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    placement: Placement | None = None,
) -> PairwiseJudge:
    """The judge `evaluation.judge` describes.

    `model: base` judges with `base` (the frozen initial model, loaded by the caller), `model:
    policy` with `policy` (the evaluated model); for pairrm both mean the published PairRM. The
    judge model loads under `access`; an annotator given as a path must lie in a data root.
    """
    if config.kind == "alpaca_eval":
        annotator = config.annotator or DEFAULT_ALPACA_EVAL_ANNOTATOR
        return AlpacaEvalJudge(access.check_annotator(annotator, "evaluation.judge.annotator"))
    from aipo_core.ranking import POLICY, make_ranker

    judge_model = policy
    if config.model == BASE_JUDGE and config.kind == "llm_judge":
        if base is None:
            raise ValueError("evaluation.judge.model: 'base' needs the base model passed as base=")
        judge_model = base
    return make_ranker(
        config.kind,
        POLICY if config.model == BASE_JUDGE else config.model,
        access=access,
        field="evaluation.judge.model",
        policy=judge_model,
        batch_size=config.batch_size,
        trust_remote_code=trust_remote_code,
        device=device,
        cache_dir=cache_dir,
        placement=placement,
    )


def judge_against_baseline(
    judge: PairwiseJudge,
    instructions: Sequence[str],
    outputs: Sequence[str],
    baselines: Sequence[str],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> list[float | None]:
    """AlpacaEval preferences (1..2, 2 = output beats baseline; None when the judge gave none).

    Uses the judge's batched `pairwise_preferences` where it has one, in chunks so progress
    can be reported.
    """
    batched = getattr(judge, "pairwise_preferences", None)
    prefs: list[float | None] = []
    for start in range(0, len(instructions), JUDGE_CHUNK):
        chunk = slice(start, start + JUDGE_CHUNK)
        if batched is not None:
            probs = batched(instructions[chunk], outputs[chunk], baselines[chunk])
        else:
            probs = [
                judge.pairwise_preference(p, o, b)
                for p, o, b in zip(instructions[chunk], outputs[chunk], baselines[chunk], strict=True)
            ]
        for i, p in enumerate(probs, start=start):
            if p is not None and not math.isnan(p) and not 0.0 <= p <= 1.0:
                raise ValueError(f"judge returned P(output better) = {p!r} for item {i}; expected [0, 1]")
            prefs.append(None if p is None or math.isnan(p) else 1.0 + float(p))
        if on_progress is not None:
            on_progress(len(prefs))
    return prefs


def eval_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float | int | None]:
    """Raw win rate (percent), its SE, discrete win rate, average length (characters and tokens)
    of eval records. The LC win rate is a run-level number (aipo_core.eval_summary)."""
    judged = [r for r in records if r["preference"] is not None]
    base: dict[str, float | int | None] = {"n_unjudged": len(records) - len(judged)}
    if records:
        base["avg_tokens"] = sum(r["output_tokens"] for r in records) / len(records)
    if not judged:
        return {**base, "n": 0}
    raw = raw_win_rate([r["preference"] for r in judged], [r["output_chars"] for r in judged])
    keys = ("win_rate", "win_rate_se", "discrete_win_rate", "avg_length", "n")
    return {**base, **{k: None if raw[k] != raw[k] else raw[k] for k in keys}}


def evaluate_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    benchmark: str,
    config: EvaluationConfig,
    *,
    judge: PairwiseJudge,
    judge_name: str | None = None,
    baseline_model: str | None = None,
    sink: Sink | None = None,
    generator: Generator | None = None,
    metric_prefix: str = "",
    sample: EvalSample | None = None,
) -> EvalResult:
    """Answer the run's evaluation sample of `benchmark` and judge the answers against the baseline.

    The sample is `evaluation_sample(benchmark, config.limit, config.seed)` unless given; sampled
    decoding (temperature > 0) is seeded with `config.seed` too, so evaluations are paired.
    `generator` overrides the default transformers generator (e.g. a vLLM one). Progress events
    go to `sink`: generation is the first half of the fraction, judging the second. The evaluate
    stage runs the two halves apart (`answer_samples`, then `judge_answers`) so the evaluated
    model is released before a different judge loads.
    """
    sample = sample or evaluation_sample(benchmark, config.limit, config.seed)
    label = f"{metric_prefix}{benchmark}"
    generator = generator or HFGenerator(model, tokenizer, batch_size=GENERATION_BATCH_SIZE)

    def answered(done: int, total: int) -> None:
        if sink is not None:
            message = f"{label}: answered {done}/{total}"
            sink({"kind": "progress", "fraction": 0.5 * done / total, "message": message})

    answers = answer_samples(generator, [sample], config, on_answered=answered)[benchmark]
    return judge_answers(
        sample,
        answers,
        judge=judge,
        judge_name=judge_name,
        baseline_model=baseline_model,
        sink=sink,
        metric_prefix=metric_prefix,
        progress_start=0.5,
    )


def judge_answers(
    sample: EvalSample,
    answers: Answers,
    *,
    judge: PairwiseJudge,
    judge_name: str | None = None,
    baseline_model: str | None = None,
    sink: Sink | None = None,
    metric_prefix: str = "",
    progress_start: float = 0.0,
) -> EvalResult:
    """Judge one model's `answers` to `sample` against the baseline outputs.

    Records name the judge and the baseline model so that a file is self-describing (`aipo
    winrate`). Progress events go to `sink`, the judged share mapped onto [progress_start, 1].
    """
    label = f"{metric_prefix}{sample.benchmark}"
    items = sample.items
    if not items:
        return EvalResult(sample.benchmark, [], eval_metrics([]), sample.notes)

    def judged(done: int) -> None:
        if sink is not None:
            fraction = progress_start + (1.0 - progress_start) * done / len(items)
            sink(
                {"kind": "progress", "fraction": fraction, "message": f"{label}: judged {done}/{len(items)}"}
            )

    prefs = judge_against_baseline(
        judge,
        [item.instruction for item in items],
        answers.outputs,
        [item.baseline_output or "" for item in items],
        on_progress=judged,
    )
    records = [
        {
            "id": item.id,
            "category": item.category,
            "instruction": item.instruction,
            "output": output,
            "baseline_output": item.baseline_output,
            "preference": pref,
            "output_chars": len(output),
            "baseline_chars": len(item.baseline_output or ""),
            "output_tokens": tokens,
            "judge": judge_name,
            "baseline_model": baseline_model,
        }
        for item, output, pref, tokens in zip(items, answers.outputs, prefs, answers.tokens, strict=True)
    ]
    metrics = eval_metrics(records)
    if sink is not None:
        values = {f"eval/{label}/{k}": v for k, v in metrics.items() if v is not None}
        sink({"kind": "metric", "step": 0, "values": values})
    return EvalResult(sample.benchmark, records, metrics, sample.notes)
