"""Trainer: reference scoring, loss through the objective registry, metric events, saved policy."""

from __future__ import annotations

import math
import re
import tempfile

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from aipo_core.config import ObjectiveConfig, TrainingConfig
from aipo_core.models import load_model_and_tokenizer
from aipo_core.training import (
    METRIC_KEYS,
    PreferenceTrainer,
    attach_reference_logps,
    dpo_config,
    train_policy,
    use_bf16,
    validate_pairs,
)

ANSWERS = [
    "The capital of France is Paris.",
    "First, second, third, finally, in conclusion.",
    "Here is a step by step explanation of how photosynthesis works in simple terms.",
    "Yes.",
]


def make_pairs(n: int = 6) -> list[dict]:
    return [
        {
            "id": f"p{i}",
            "prompt": [{"role": "user", "content": f"Question {i}: explain something in simple terms."}],
            "chosen": [{"role": "assistant", "content": ANSWERS[i % 4] * (1 + i % 2)}],
            "rejected": [{"role": "assistant", "content": ANSWERS[(i + 1) % 4]}],
            "score_chosen": 1.0,
            "score_rejected": 0.0,
        }
        for i in range(n)
    ]


def tiny():
    model, tokenizer = load_model_and_tokenizer("tiny-random-llama")
    return model, tokenizer


def fast_training(**overrides) -> TrainingConfig:
    values = {"batch_size": 3, "max_steps": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0, "max_length": 128}
    values["max_prompt_length"] = 64
    return TrainingConfig(**{**values, **overrides})


def naive_response_logp(model, tokenizer, prompt: list, response: list) -> tuple[float, int]:
    """log π(response | prompt) straight from the model's logits, one sequence at a time."""
    prompt_ids = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    full_ids = tokenizer.apply_chat_template(prompt + response, tokenize=True, return_dict=True)
    prompt_ids, full_ids = list(prompt_ids["input_ids"]), list(full_ids["input_ids"])
    assert full_ids[: len(prompt_ids)] == prompt_ids
    ids = torch.tensor([full_ids])
    with torch.no_grad():
        logps = model(input_ids=ids).logits[0].float().log_softmax(-1)  # [T, V]
    n = len(prompt_ids)
    picked = logps[n - 1 : -1].gather(-1, ids[0, n:].unsqueeze(-1))  # response tokens
    return picked.sum().item(), len(full_ids) - n


def test_attach_reference_logps_equals_naive_computation():
    model, tokenizer = tiny()
    pairs = make_pairs()
    scored = attach_reference_logps(
        pairs, model, tokenizer, batch_size=4, max_prompt_length=64, max_length=256
    )
    for pair, out in zip(pairs, scored, strict=True):
        chosen, chosen_len = naive_response_logp(model, tokenizer, pair["prompt"], pair["chosen"])
        rejected, rejected_len = naive_response_logp(model, tokenizer, pair["prompt"], pair["rejected"])
        assert out["ref_chosen_logps"] == pytest.approx(chosen, abs=1e-4)
        assert out["ref_rejected_logps"] == pytest.approx(rejected, abs=1e-4)
        assert out["s_ref"] == pytest.approx(chosen - rejected, abs=2e-4)
        assert (out["chosen_length"], out["rejected_length"]) == (chosen_len, rejected_len)
        assert out["id"] == pair["id"] and out["score_chosen"] == pair["score_chosen"]
    assert "ref_chosen_logps" not in pairs[0]  # the input is not mutated


def test_attach_reference_logps_agrees_with_trl_own_precompute():
    """Same tokenization and numbers as TRL's DPOTrainer(precompute_ref_log_probs=True)."""
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = tiny()
    pairs = make_pairs()
    ours = attach_reference_logps(
        pairs, model, tokenizer, batch_size=4, max_prompt_length=100, max_length=128
    )
    plain = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]
    with tempfile.TemporaryDirectory() as scratch:
        args = DPOConfig(
            output_dir=scratch,
            precompute_ref_log_probs=True,
            per_device_train_batch_size=4,
            report_to="none",
            bf16=False,
            gradient_checkpointing=False,
            max_length=128,
        )
        trl_dataset = DPOTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(plain), processing_class=tokenizer
        )
        trl_rows = list(trl_dataset.train_dataset)
    for mine, theirs in zip(ours, trl_rows, strict=True):
        assert mine["ref_chosen_logps"] == pytest.approx(theirs["ref_chosen_logps"], rel=1e-6, abs=1e-4)
        assert mine["ref_rejected_logps"] == pytest.approx(theirs["ref_rejected_logps"], rel=1e-6, abs=1e-4)
        assert mine["chosen_length"] == len(theirs["chosen_ids"])


def test_truncation_keeps_prompt_end_and_caps_total_length():
    model, tokenizer = tiny()
    pairs = make_pairs(2)
    pairs[0]["prompt"][0]["content"] = "word " * 200
    pairs[0]["chosen"][0]["content"] = "answer " * 200
    scored = attach_reference_logps(
        pairs, model, tokenizer, batch_size=2, max_prompt_length=16, max_length=40
    )
    assert scored[0]["chosen_length"] == 40 - 16  # prompt keeps 16 tokens, the response fills the rest
    assert scored[0]["rejected_length"] < 24
    assert math.isfinite(scored[0]["ref_chosen_logps"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("chosen"), "pairs[1] (id='p1'): field 'chosen'"),
        (lambda p: p.update(prompt="hello"), "field 'prompt' must be a non-empty list"),
        (
            lambda p: p["rejected"][0].pop("content"),
            "field 'rejected' has a message without string 'content'",
        ),
        (
            lambda p: p.update(ref_chosen_logps=float("nan")),
            "field 'ref_chosen_logps' must be a finite number",
        ),
    ],
)
def test_bad_pairs_are_rejected_naming_the_field(mutate, message):
    pairs = make_pairs(2)
    mutate(pairs[1])
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_pairs(pairs)


def test_trainer_policy_logps_at_init_equal_stored_reference():
    """The trainer's own forward on its own batches reproduces the stored reference log-probs."""
    model, tokenizer = tiny()
    training = fast_training()
    pairs = attach_reference_logps(
        make_pairs(), model, tokenizer, batch_size=2, max_prompt_length=64, max_length=128
    )
    dataset = Dataset.from_list(
        [
            {k: p[k] for k in ("prompt", "chosen", "rejected", "ref_chosen_logps", "ref_rejected_logps")}
            for p in pairs
        ]
    )
    with tempfile.TemporaryDirectory() as scratch:
        trainer = PreferenceTrainer(
            model=model,
            tokenizer=tokenizer,
            train_dataset=dataset,
            args=dpo_config(training, ObjectiveConfig(name="aipo"), scratch, seed=0),
            objective=ObjectiveConfig(name="aipo"),
            max_prompt_length=training.max_prompt_length,
        )
        assert trainer.ref_model is None
        model.train()  # as in a training step (dropout is disabled by the trainer)
        checked = 0
        for batch in trainer.get_train_dataloader():
            with torch.no_grad():
                chosen, rejected, chosen_len, _ = trainer.policy_logps(model, batch)
            torch.testing.assert_close(chosen, batch["ref_chosen_logps"], atol=1e-4, rtol=0)
            torch.testing.assert_close(rejected, batch["ref_rejected_logps"], atol=1e-4, rtol=0)
            checked += len(chosen)
        assert checked == len(pairs)


def test_two_step_aipo_training_updates_streams_and_saves(tmp_path):
    model, tokenizer = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = attach_reference_logps(
        make_pairs(), model, tokenizer, batch_size=6, max_prompt_length=64, max_length=128
    )
    events: list[dict] = []
    result = train_policy(
        model,
        tokenizer,
        pairs,
        objective=ObjectiveConfig(name="aipo", alpha=0.05, lambda_=0.2),
        training=fast_training(batch_size=6),
        output_dir=tmp_path / "policy",
        seed=0,
        sink=events.append,
    )
    assert result.steps == 2
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "training left every weight unchanged"

    metric_events = [e for e in events if e["kind"] == "metric"]
    assert [e["step"] for e in metric_events] == [1, 2]
    assert set(METRIC_KEYS) <= set(metric_events[0]["values"])
    assert all(math.isfinite(v) for e in metric_events for v in e["values"].values())
    assert [e["fraction"] for e in events if e["kind"] == "progress"] == [0.5, 1.0]
    first = metric_events[0]["values"]
    # One batch holds all pairs and step 1 runs before any update: policy == reference.
    s_ref = torch.tensor([p["s_ref"] for p in pairs])
    assert first["s_theta_mean"] == pytest.approx(s_ref.mean().item(), abs=1e-4)
    assert first["s_ref_mean"] == pytest.approx(s_ref.mean().item(), abs=1e-4)
    assert first["s_ref_agreement"] == pytest.approx((s_ref > 0).float().mean().item())
    # AIPO's implicit reward β(logπθ − (1+α)logπref) is −βα·logπref at θ = θ_ref (objectives.py).
    ref_chosen = torch.tensor([p["ref_chosen_logps"] for p in pairs])
    assert first["rewards_chosen"] == pytest.approx((-0.1 * 0.05 * ref_chosen).mean().item(), abs=1e-5)
    assert first["margins"] == pytest.approx((-0.1 * 0.05 * s_ref).mean().item(), abs=1e-5)
    assert first["accuracy"] == pytest.approx((s_ref < 0).float().mean().item())
    assert first["gradient_weight_mean"] == pytest.approx(
        torch.sigmoid(0.1 * 0.05 * s_ref).mean().item(), abs=1e-5
    )  # Eq. 8 with s_θ = s_ref
    assert metric_events[1]["values"]["margins"] != 0.0  # the second step sees the updated policy
    assert result.metrics["pairs_s_ref_mean"] == pytest.approx(s_ref.double().mean().item(), abs=1e-4)

    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    saved_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "policy")
    assert saved_tokenizer.chat_template
    for key, value in model.state_dict().items():
        torch.testing.assert_close(saved.state_dict()[key], value)
    assert "forward" not in vars(model)  # the caller gets a plain model back


def test_training_is_deterministic_for_a_seed(tmp_path):
    finals = []
    for run in range(2):
        model, tokenizer = tiny()
        train_policy(
            model,
            tokenizer,
            make_pairs(),
            objective=ObjectiveConfig(name="dpo"),
            training=fast_training(batch_size=2),
            output_dir=tmp_path / f"run{run}",
            seed=3,
        )
        finals.append(model.state_dict())
    for key, value in finals[0].items():
        assert torch.equal(value, finals[1][key]), key


def test_stored_reference_path_never_loads_a_second_model(tmp_path, monkeypatch):
    import transformers
    import trl.trainer.dpo_trainer as dpo_module

    model, tokenizer = tiny()
    pairs = attach_reference_logps(
        make_pairs(), model, tokenizer, batch_size=4, max_prompt_length=64, max_length=128
    )

    def refuse(*args, **kwargs):
        raise AssertionError("a second model was loaded")

    monkeypatch.setattr(dpo_module, "create_model_from_path", refuse)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    model.config._name_or_path = str(tmp_path / "nowhere")  # where TRL would look for a reference copy
    result = train_policy(
        model,
        tokenizer,
        pairs,
        objective=ObjectiveConfig(name="aipo"),
        training=fast_training(),
        output_dir=tmp_path / "policy",
    )
    assert result.steps == 2


def test_missing_reference_logps_are_computed_from_the_policy(tmp_path):
    model, tokenizer = tiny()
    pairs = make_pairs()
    expected = attach_reference_logps(
        pairs, model, tokenizer, batch_size=6, max_prompt_length=64, max_length=128
    )
    result = train_policy(
        model,
        tokenizer,
        pairs,
        objective=ObjectiveConfig(name="dpo"),
        training=fast_training(batch_size=6, max_steps=1),
        output_dir=tmp_path / "policy",
    )
    s_ref = torch.tensor([p["s_ref"] for p in expected], dtype=torch.float64)
    assert result.metrics["pairs_s_ref_mean"] == pytest.approx(s_ref.mean().item(), abs=1e-4)


def test_objective_switching_uses_the_registry_loss_reward_and_weight(tmp_path):
    """Step-1 loss, mean implicit reward and mean gradient weight (policy == reference) match each
    objective's own formulas, computed here by hand from the stored reference log-probs."""
    model, tokenizer = tiny()
    pairs = attach_reference_logps(
        make_pairs(), model, tokenizer, batch_size=6, max_prompt_length=64, max_length=128
    )
    chosen = torch.tensor([p["ref_chosen_logps"] for p in pairs], dtype=torch.float64)
    rejected = torch.tensor([p["ref_rejected_logps"] for p in pairs], dtype=torch.float64)
    chosen_len = torch.tensor([p["chosen_length"] for p in pairs], dtype=torch.float64)
    rejected_len = torch.tensor([p["rejected_length"] for p in pairs], dtype=torch.float64)
    simpo_margin = 2.0 * (chosen / chosen_len - rejected / rejected_len)  # β = 2, γ = 0.5
    length_gap = chosen_len - rejected_len
    assert length_gap.abs().sum() > 0, "R-DPO's check needs pairs of unequal length"
    # name: (loss, rewards_chosen, gradient_weight_mean) at θ = θ_ref, default hyperparameters
    expected = {
        "dpo": (math.log(2.0), 0.0, 0.5),  # −logσ(0), β·log(π/π_ref) = 0, σ(0)
        "simpo": (
            -F.logsigmoid(simpo_margin - 0.5).mean().item(),
            (2.0 * chosen / chosen_len).mean().item(),
            torch.sigmoid(0.5 - simpo_margin).mean().item(),
        ),
        "ipo": (25.0, 0.0, 1.0),  # (0 − 1/(2·0.1))², w = 1 − 2·0
        "rdpo": (  # β = 0.1, α = 0.01: the margin is α(|y_w| − |y_l|) alone
            -F.logsigmoid(0.01 * length_gap).mean().item(),
            (0.01 * chosen_len).mean().item(),
            torch.sigmoid(-0.01 * length_gap).mean().item(),
        ),
    }
    for name, (loss, reward, weight) in expected.items():
        model, tokenizer = tiny()
        result = train_policy(
            model,
            tokenizer,
            pairs,
            objective=ObjectiveConfig(name=name),
            training=fast_training(batch_size=6, max_steps=1),
            output_dir=tmp_path / name,
        )
        values = result.history[0]["values"]
        assert values["loss"] == pytest.approx(loss, abs=1e-4), name
        assert values["rewards_chosen"] == pytest.approx(reward, abs=1e-4), name
        assert values["gradient_weight_mean"] == pytest.approx(weight, abs=1e-5), name


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    model, tokenizer = tiny()
    result = train_policy(
        model,
        tokenizer,
        make_pairs(8),
        objective=ObjectiveConfig(name="dpo_nll"),
        training=fast_training(batch_size=2, gradient_accumulation_steps=2, max_steps=None, epochs=1.0),
        output_dir=tmp_path / "policy",
    )
    assert result.steps == 2  # 8 pairs / (2 per batch × 2 accumulated batches)
    assert result.metrics["epoch"] == pytest.approx(1.0)


@pytest.mark.slow
def test_smollm2_two_steps(tmp_path):
    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    events: list[dict] = []
    result = train_policy(
        model,
        tokenizer,
        make_pairs(4),
        objective=ObjectiveConfig(name="aipo"),
        training=TrainingConfig(
            batch_size=2, max_steps=2, learning_rate=1e-5, max_prompt_length=64, max_length=128
        ),
        output_dir=tmp_path / "policy",
        sink=events.append,
    )
    assert result.steps == 2
    values = [e["values"] for e in events if e["kind"] == "metric"]
    assert len(values) == 2 and all(math.isfinite(v["loss"]) for v in values)
    assert values[0]["s_theta_mean"] == pytest.approx(values[0]["s_ref_mean"], abs=1e-3)
    assert AutoTokenizer.from_pretrained(tmp_path / "policy").chat_template


def test_dpo_config_maps_the_training_section(tmp_path):
    training = TrainingConfig(
        batch_size=4, gradient_accumulation_steps=3, learning_rate=2e-6, warmup_ratio=0.25, epochs=2.0
    )
    args = dpo_config(training, ObjectiveConfig(name="simpo", beta=3.0), tmp_path, seed=7)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 3)
    assert (args.learning_rate, args.num_train_epochs, args.max_steps) == (2e-6, 2.0, -1)
    assert args.lr_scheduler_type == "cosine" and args.get_warmup_steps(100) == 25
    assert args.optim == "adamw_torch" and args.beta == 3.0 and args.seed == 7
    assert args.precompute_ref_log_probs and args.report_to == [] and not args.push_to_hub
    assert args.bf16 == use_bf16("auto") == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert use_bf16("bf16") and not use_bf16("fp32")


@pytest.mark.parametrize(("warmup_ratio", "updated"), [(0.1, False), (0.0, True)])
def test_a_single_step_under_warmup_runs_at_learning_rate_zero_and_says_so(tmp_path, warmup_ratio, updated):
    """One optimiser step with any warm-up: warmup_ratio 0.1 of 1 step rounds up to 1 warm-up step,
    and a linear warm-up's first step has learning rate 0 — the demo trained nothing this way."""
    model, tokenizer = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_policy(
        model,
        tokenizer,
        make_pairs(4),
        objective=ObjectiveConfig(name="aipo"),
        training=fast_training(batch_size=4, max_steps=None, warmup_ratio=warmup_ratio),
        output_dir=tmp_path / "policy",
    )
    assert result.steps == 1
    changed = any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert changed is updated
    assert (result.metrics["learning_rate_max"] > 0) is updated
