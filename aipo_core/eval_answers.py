"""The evaluated model's answers to the evaluation sample, produced before any judging.

The evaluate stage (aipo_core.pipeline.stage_evaluate, docs/evaluation.md "Devices and memory")
answers first and judges afterwards, so whatever generated the answers is gone before a different
judge loads. The generator is either the in-process HF one (`HFGenerator` on the evaluated model)
or, with `generation.backend: vllm`, the generate stage's vLLM child processes
(`aipo_core.generation.VLLMGenerator`), sharded over `tensor_parallel_size × data_parallel_size`
GPUs; the stage process then loads no weights to answer, and the GPUs are free again once the
children have exited.

Every benchmark of one model is answered in a single `generate` call (one vLLM start per model,
not per benchmark): the prompts of all samples are concatenated and the results split back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aipo_core.config import EvaluationConfig
from aipo_core.eval_sample import EvalSample
from aipo_core.generation import Generator


@dataclass(frozen=True)
class Answers:
    """One model's answers to one benchmark sample, in the sample's order."""

    outputs: list[str]
    tokens: list[int]  # generated tokens per answer, EOS excluded


def answer_samples(
    generator: Generator,
    samples: Sequence[EvalSample],
    config: EvaluationConfig,
    *,
    on_answered: Callable[[int, int], None] | None = None,
) -> dict[str, Answers]:
    """benchmark → `Answers` for every sample, from one `generate` call over all their prompts.

    Each item is one user turn; decoding follows `config` (greedy unless `temperature` > 0, seeded
    with `config.seed`). `on_answered(done, total)` reports progress after each internal batch.
    """
    prompts = [[{"role": "user", "content": item.instruction}] for s in samples for item in s.items]
    if not prompts:
        return {sample.benchmark: Answers([], []) for sample in samples}
    result = generator.generate(
        prompts,
        num_candidates=1,
        temperature=config.temperature,
        top_p=1.0,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed,
        on_batch=None if on_answered is None else lambda done, _: on_answered(done, len(prompts)),
    )
    answers: dict[str, Answers] = {}
    start = 0
    for sample in samples:
        rows = slice(start, start + len(sample.items))
        answers[sample.benchmark] = Answers(
            outputs=[texts[0] for texts in result.texts[rows]],
            tokens=[lengths[0] for lengths in result.lengths[rows]],
        )
        start = rows.stop
    return answers
