"""answer_samples: one generate call over every benchmark's sample, split back per benchmark."""

from __future__ import annotations

from aipo_core.config import EvaluationConfig
from aipo_core.eval_answers import answer_samples
from aipo_core.eval_sample import evaluation_sample
from aipo_core.generation import HFGenerator
from aipo_core.models import load_model_and_tokenizer


def test_answers_of_several_benchmarks_equal_answering_each_alone(tmp_path) -> None:
    model, tokenizer = load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path)
    # Batches of one prompt: no padding, so greedy answers cannot depend on their neighbours.
    generator = HFGenerator(model, tokenizer, batch_size=1)
    config = EvaluationConfig(benchmarks=["alpaca_eval", "mt_bench"], limit=2, max_new_tokens=6)
    samples = [evaluation_sample(b, config.limit, config.seed) for b in config.benchmarks]
    progress: list[tuple[int, int]] = []

    together = answer_samples(generator, samples, config, on_answered=lambda *p: progress.append(p))

    assert list(together) == ["alpaca_eval", "mt_bench"]
    for sample in samples:
        alone = answer_samples(generator, [sample], config)[sample.benchmark]
        assert together[sample.benchmark] == alone
        assert len(alone.outputs) == len(alone.tokens) == len(sample.items) == 2
        assert all(0 <= n <= 6 for n in alone.tokens)
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
