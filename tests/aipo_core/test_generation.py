"""Candidate generation: batching, seeding, greedy decoding, left padding, EOS, cleaning, records."""

import functools
import importlib.util

import pytest
import torch

from aipo_core.config import GenerationConfig
from aipo_core.generation import (
    GenerationResult,
    HFGenerator,
    clean_response,
    decoding_attention,
    generate_candidates,
    make_generator,
    padding_buckets,
)
from aipo_core.models import load_model_and_tokenizer

PROMPTS = [
    [{"role": "user", "content": "Write a short poem about the sea."}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Explain how photosynthesis works in simple terms, step by step, please."}],
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path_factory.mktemp("models"))


def _generate(generator, prompts=PROMPTS, **overrides) -> GenerationResult:
    args = {"num_candidates": 3, "temperature": 1.0, "top_p": 0.9, "max_new_tokens": 8, "seed": 0}
    return generator.generate(prompts, **{**args, **overrides})


def test_result_shapes_and_lengths(tiny):
    result = _generate(HFGenerator(*tiny, batch_size=2), max_new_tokens=6)
    assert len(result.texts) == len(result.lengths) == len(result.finished) == len(PROMPTS)
    assert all(len(row) == 3 for row in result.texts + result.lengths + result.finished)
    for lengths, finished in zip(result.lengths, result.finished, strict=True):
        for n, done in zip(lengths, finished, strict=True):
            assert 0 <= n <= 6
            assert done or n == 6  # a candidate that did not stop at EOS used the whole budget
    assert result.generated_tokens == sum(map(sum, result.lengths))
    assert result.tokens_per_s > 0


def test_same_seed_reproduces_and_other_seed_differs(tiny):
    generator = HFGenerator(*tiny, batch_size=2)
    first, again, other = (
        _generate(generator, seed=7),
        _generate(generator, seed=7),
        _generate(generator, seed=8),
    )
    assert first.texts == again.texts
    assert first.texts != other.texts
    assert len({tuple(row) for row in first.texts}) == len(PROMPTS)
    assert len(set(first.texts[0])) > 1  # sampled candidates of one prompt differ


def test_generation_leaves_global_rng_and_training_mode_alone(tiny):
    model, tokenizer = tiny
    model.train()
    state = torch.random.get_rng_state()
    try:
        _generate(HFGenerator(model, tokenizer), max_new_tokens=2)
        assert model.training
        assert torch.equal(torch.random.get_rng_state(), state)
    finally:
        model.eval()


def test_greedy_is_deterministic_and_gives_identical_candidates(tiny):
    generator = HFGenerator(*tiny, batch_size=3)
    a, b = _generate(generator, temperature=0.0, seed=1), _generate(generator, temperature=0.0, seed=2)
    assert a.texts == b.texts
    assert all(len(set(row)) == 1 for row in a.texts)
    assert a.generated_tokens == sum(row[0] for row in a.lengths)  # one copy decoded per prompt


def test_left_padded_batch_matches_one_prompt_at_a_time(tiny):
    batched = _generate(
        HFGenerator(*tiny, batch_size=3), temperature=0.0, num_candidates=2, max_new_tokens=10
    )
    single = _generate(HFGenerator(*tiny, batch_size=1), temperature=0.0, num_candidates=2, max_new_tokens=10)
    assert batched.texts == single.texts
    assert batched.lengths == single.lengths


def test_shared_prefill_samples_exactly_like_per_candidate_prefill(tiny):
    shared = _generate(HFGenerator(*tiny, batch_size=3, share_prefill=True), seed=3)
    separate = _generate(HFGenerator(*tiny, batch_size=3, share_prefill=False), seed=3)
    assert shared.texts == separate.texts


def test_each_prompt_is_prefilled_once_and_decoded_with_eager_attention(tiny, monkeypatch):
    """The shared prefill really runs: the first forward sees each prompt once ([B, L-1], not
    [B·N, L]), and every decoding forward runs under eager attention on a CPU. (The cache argument
    is `past_key_values`; one named `cache` once silently turned both off, and the equal-samples
    test above cannot tell.)"""
    model, tokenizer = tiny
    calls: list[tuple[tuple[int, ...], str]] = []
    forward = type(model).forward

    @functools.wraps(forward)  # keeps the signature the code inspects
    def recording(self, input_ids=None, **kwargs):
        calls.append((tuple(input_ids.shape), self.config._attn_implementation))
        return forward(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(type(model), "forward", recording)
    _generate(HFGenerator(model, tokenizer, batch_size=3), num_candidates=3, max_new_tokens=4)
    (rows, _), attention = calls[0]
    assert (rows, attention) == (3, "sdpa")  # three prompts, prefilled once each
    assert all(shape[0] == 9 and implementation == "eager" for shape, implementation in calls[1:])
    assert calls[1][0][1] == 1  # generate feeds only the last prompt token on top of the cache


def test_cpu_decoding_runs_eager_attention_and_restores_the_model_s_own(tiny):
    """Decoding on a CPU switches sdpa to eager (one query per row: the fused kernel's fixed cost
    dominates, bench/cpu_decoding.py) and puts sdpa back afterwards, also after an error; the
    samples above (shared prefill + eager vs plain generate with sdpa) are identical."""
    model, _ = tiny
    assert model.config._attn_implementation == "sdpa"
    seen = []
    with decoding_attention(model):
        seen.append(model.config._attn_implementation)
    with pytest.raises(RuntimeError), decoding_attention(model):
        raise RuntimeError("a failed decode")
    assert seen == ["eager"]
    assert model.config._attn_implementation == "sdpa"


def test_stops_at_eos_and_excludes_it_from_length(tiny):
    model, tokenizer = tiny
    prompt = PROMPTS[:1]
    free = model.generate(
        **tokenizer(
            tokenizer.apply_chat_template(prompt[0], add_generation_prompt=True, tokenize=False),
            add_special_tokens=False,
            return_tensors="pt",
        ),
        max_new_tokens=6,
        do_sample=False,
    )
    tokens = free[0, -6:].tolist()
    stop_token = tokens[3]  # pretend the 4th greedy token is the end of turn
    stop_at = tokens.index(stop_token)
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = stop_token
    try:
        result = _generate(HFGenerator(model, tokenizer), prompts=prompt, temperature=0.0, max_new_tokens=6)
    finally:
        model.generation_config.eos_token_id = original
    assert result.lengths[0] == [stop_at] * 3
    assert result.finished[0] == [True] * 3
    expected = clean_response(tokenizer.decode(tokens[:stop_at], skip_special_tokens=True))
    assert result.texts[0][0] == expected


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Paris is the capital.\n", "Paris is the capital."),
        ("Paris.<|im_end|>\n<|im_start|>user\nmore", "Paris."),
        ("Answer: yes</s> trailing", "Answer: yes"),
        ("The answer is 4 <|im_", "The answer is 4"),
        ("cut mid marker </", "cut mid marker"),
        ("x < y holds", "x < y holds"),
        ("ends with a less-than <", "ends with a less-than <"),
        ("", ""),
    ],
)
def test_clean_response(raw, clean):
    assert clean_response(raw) == clean


def test_generate_candidates_records_and_sink_events(tiny):
    instructions = [
        {"id": "i0", "instruction": "Write a short poem about the sea.", "source": "pool"},
        {"id": "i1", "instruction": "Hi", "source": "self_instruct"},
        {"id": "i2", "instruction": "Give three tips for staying healthy.", "source": "pool"},
    ]
    config = GenerationConfig(num_candidates=2, max_new_tokens=4, batch_size=2)
    events = []
    records, stats = generate_candidates(
        instructions, make_generator(config, *tiny), config, seed=0, sink=events.append
    )
    assert [r["id"] for r in records] == ["i0", "i1", "i2"]
    for record, source in zip(records, instructions, strict=True):
        assert record["prompt"] == [{"role": "user", "content": source["instruction"]}]
        assert record["instruction"] == source["instruction"]
        assert len(record["candidates"]) == len(record["lengths"]) == len(record["finished"]) == 2
        assert all(isinstance(n, int) and 0 <= n <= 4 for n in record["lengths"])
        # A candidate that did not stop at EOS was cut off at max_new_tokens.
        assert all(
            done is True or (done is False and n == 4)
            for n, done in zip(record["lengths"], record["finished"], strict=True)
        )
    progress = [e["fraction"] for e in events if e["kind"] == "progress"]
    metrics = [e for e in events if e["kind"] == "metric"]
    assert progress == pytest.approx([2 / 3, 1.0])
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert metrics[0]["values"]["generate/tokens_per_s"] > 0
    assert stats["generated_tokens"] == sum(n for r in records for n in r["lengths"])
    assert metrics[-1]["values"]["generate/total_generated_tokens"] == stats["generated_tokens"]
    assert stats["tokens_per_s"] > 0 and 0 <= stats["finished_fraction"] <= 1
    flags = [done for r in records for done in r["finished"]]
    assert stats["finished_fraction"] == pytest.approx(sum(flags) / len(flags))
    assert not all(flags)  # 4 tokens are too few for the random model to reach EOS every time


def test_generate_candidates_names_the_bad_field(tiny):
    config = GenerationConfig(num_candidates=2, max_new_tokens=2)
    generator = make_generator(config, *tiny)
    with pytest.raises(ValueError, match=r"instructions\[1\]\.instruction"):
        generate_candidates(
            [{"id": "a", "instruction": "ok"}, {"id": "b", "instruction": " "}], generator, config, seed=0
        )
    with pytest.raises(ValueError, match=r"instructions\[0\]\.id"):
        generate_candidates([{"instruction": "ok"}], generator, config, seed=0)


def test_bad_sampling_arguments_are_rejected(tiny):
    with pytest.raises(ValueError, match="top_p"):
        _generate(HFGenerator(*tiny), top_p=0.0)
    with pytest.raises(ValueError, match="num_candidates"):
        _generate(HFGenerator(*tiny), num_candidates=0)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_raises_a_clear_error(tiny):
    with pytest.raises(ImportError, match=r"aipo-lab\[gpu\]"):
        make_generator(GenerationConfig(backend="vllm"), *tiny, model_path="/nonexistent")


@pytest.mark.slow
def test_smollm2_candidates_are_clean_text():
    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    prompts = [[{"role": "user", "content": "What is the capital of France?"}]]
    result = _generate(HFGenerator(model, tokenizer), prompts=prompts, num_candidates=2, max_new_tokens=16)
    for text in result.texts[0]:
        assert text and text == text.strip()
        assert "<|im_end|>" not in text and "<|im_start|>" not in text


def test_vllm_data_parallel_shards_cover_every_prompt_once_each_on_its_own_gpus():
    from aipo_core.generation import shard_prompts

    shards = shard_prompts(10, data_parallel=2, tensor_parallel=2, gpu_indices=[0, 1, 2, 3])
    assert shards == [(slice(0, 5), "0,1"), (slice(5, 10), "2,3")]
    assert shard_prompts(3, data_parallel=1, tensor_parallel=4, gpu_indices=[0, 1, 2, 3]) == [
        (slice(0, 3), None)
    ]
    covered = [i for rows, _ in shard_prompts(7, 4, 1, [0, 1, 2, 3]) for i in range(7)[rows]]
    assert covered == list(range(7))
    assert len(shard_prompts(2, 4, 1, [0, 1, 2, 3])) == 2  # never an empty replica


def test_vllm_eos_ids_come_from_the_folder_without_loading_weights(tmp_path):
    from aipo_core.generation import eos_ids_of_folder, eos_token_ids
    from aipo_core.models import load_model_and_tokenizer, resolve_model_path

    model, tokenizer = load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path)
    folder = resolve_model_path("tiny-random-llama", tmp_path)
    assert eos_ids_of_folder(folder, tokenizer) == eos_token_ids(model, tokenizer)


def test_vllm_backend_on_a_cpu_worker_is_refused_with_the_fix(tmp_path):
    from aipo_core import artifacts
    from aipo_core.config import RunConfig
    from aipo_core.pipeline import run_stage

    config = RunConfig.model_validate(
        {"name": "v", "model": "tiny-random-llama", "device": "cpu", "generation": {"backend": "vllm"}}
    )
    artifacts.write_jsonl_atomic(
        artifacts.iteration_dir(tmp_path, "r", 0) / "instructions.jsonl", [{"id": "a", "instruction": "hi"}]
    )
    with pytest.raises(RuntimeError, match="backend 'vllm' needs a CUDA GPU; use backend: hf"):
        run_stage("generate", config, artifact_root=tmp_path, run_id="r", iteration=0)


def test_padding_buckets_keep_padding_bounded_and_cover_every_prompt():
    lengths = [410, 296, 642, 387, 333, 492, 1996, 342]  # the demo's self-instruct prompts, in tokens
    buckets = padding_buckets(lengths, max_padding=0.25)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for bucket in buckets:
        real = sum(lengths[i] for i in bucket)
        assert max(lengths[i] for i in bucket) * len(bucket) <= 1.25 * real
    assert [6] in buckets  # the long prompt runs alone
    assert len(buckets) < len(lengths)  # similar prompts still share a batch
    assert padding_buckets([5, 5, 5]) == [[0, 1, 2]]
    assert padding_buckets([]) == []
