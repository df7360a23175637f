"""Multi-process training: 2 gloo processes (DDP, and FSDP2 full shard) equal 1 process with the
same global batch: loss curve within 1e-4 relative, final weights within 1e-4."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aipo_core import artifacts
from aipo_core.config import RunConfig
from aipo_core.devices import Hardware, training_placement
from aipo_core.distributed import launch_command, train_distributed
from aipo_core.models import load_model_and_tokenizer
from aipo_core.training import attach_reference_logps, train_policy
from tests.aipo_core.test_training import make_pairs

TRAINING = {
    "batch_size": 4,
    "max_steps": 3,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.0,
    "max_length": 128,
    "max_prompt_length": 64,
}


def _config(num_processes: int, strategy: str = "auto") -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "ddp",
            "model": "tiny-random-llama",
            "device": "cpu",
            "training": {**TRAINING, "num_processes": num_processes, "strategy": strategy},
        }
    )


def _scored_pairs(path: Path) -> list[dict]:
    model, tokenizer = load_model_and_tokenizer("tiny-random-llama")
    pairs = attach_reference_logps(
        make_pairs(12), model, tokenizer, batch_size=4, max_prompt_length=64, max_length=128
    )
    artifacts.write_jsonl_atomic(path, pairs)
    return pairs


def test_launch_command_starts_n_local_processes_of_this_module(tmp_path: Path) -> None:
    placement = training_placement(_config(2), Hardware())
    command = launch_command(placement, tmp_path / "spec.json", port=29999)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[-3:] == ["-m", "aipo_core.distributed", str(tmp_path / "spec.json")]


def test_zero3_without_deepspeed_is_refused_with_the_fix(tmp_path: Path) -> None:
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("DeepSpeed is installed here")
    config = _config(2, "deepspeed_zero3")
    with pytest.raises(ImportError, match=r"needs DeepSpeed on the worker \(pip install deepspeed\)"):
        train_distributed(
            model="tiny-random-llama",
            config=config,
            pairs_path=tmp_path / "pairs.jsonl",
            output_dir=tmp_path / "out",
            placement=training_placement(config, Hardware()),
            seed=0,
            workdir=tmp_path / "work",
        )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process(tmp_path: Path, strategy: str) -> None:
    pairs = _scored_pairs(tmp_path / "pairs.jsonl")
    one = _config(1)
    model, tokenizer = load_model_and_tokenizer("tiny-random-llama")
    single = train_policy(
        model,
        tokenizer,
        pairs,
        objective=one.objective,
        training=one.training,
        output_dir=tmp_path / "one",
        seed=0,
        placement=training_placement(one, Hardware()),
    )
    events: list[dict] = []
    two = _config(2, strategy)
    placement = training_placement(two, Hardware())
    assert placement.num_processes == 2 and placement.strategy == strategy
    steps, metrics = train_distributed(
        model="tiny-random-llama",
        config=two,
        pairs_path=tmp_path / "pairs.jsonl",
        output_dir=tmp_path / "two",
        placement=placement,
        seed=0,
        workdir=tmp_path / "work",
        sink=events.append,
    )
    assert steps == single.steps == 3
    expected = [e["values"]["loss"] for e in single.history]
    got = [e["values"]["loss"] for e in events if e["kind"] == "metric"]
    assert len(got) == len(expected) == 3
    for a, b in zip(got, expected, strict=True):
        assert math.isclose(a, b, rel_tol=1e-4), (got, expected)
    assert math.isclose(metrics["train_loss"], single.metrics["train_loss"], rel_tol=1e-4)
    # The weights moved (lr 1e-3), and both runs moved them the same way.
    start, _ = load_model_and_tokenizer("tiny-random-llama")
    initial = {k: v.detach() for k, v in start.state_dict().items()}
    a = load_file(tmp_path / "one" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - initial[k]).abs().max().item() for k in a) > 1e-3
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4, msg=key)
    # Only rank 0 wrote: one tokenizer, no pickled arguments, no stray staging folders.
    assert (tmp_path / "two" / "tokenizer_config.json").is_file()
    assert not (tmp_path / "two" / "training_args.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
