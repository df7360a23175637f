"""Train θ_{t+1} from θ_t on preference pairs with any registered objective (Algorithm 1, step 4).

Built on TRL's `DPOTrainer`: its data collator, optimiser/scheduler/accumulation loop and
mixed-precision handling are used as they are; `PreferenceTrainer` replaces only the loss
(`aipo_core.objectives.pair_loss`, looked up by name) and the prompt truncation TRL 1.16 dropped.

Memory plan: the reference θ_t is scored ONCE per iteration (`attach_reference_logps`, usually in
the rank stage) and its summed log-probs travel with the pairs (`ref_chosen_logps`,
`ref_rejected_logps`). The trainer then holds one model and runs one forward per batch, chosen
and rejected sequences stacked as TRL does. TRL normally loads a reference copy itself (from the
hub or the model's path) unless `precompute_ref_log_probs=True`, in which case it recomputes the
log-probs with the policy; `PreferenceTrainer` sets that flag and reuses the stored values instead,
so no second model is ever built.

Reference scoring and training share `tokenize_pair`, TRL's `DataCollatorForPreference` and the
`completion_mask=` forward of `aipo_core.logprobs`, so at step 0 the policy's log-probs equal the
stored ones (tested to 1e-4).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PrinterCallback, TrainerCallback
from trl import DPOConfig, DPOTrainer
from trl.data_utils import common_prefix_length
from trl.trainer.dpo_trainer import DataCollatorForPreference

from aipo_core.artifacts import atomic_dir
from aipo_core.config import ObjectiveConfig, TrainingConfig
from aipo_core.devices import Placement
from aipo_core.logprobs import add_sequence_logps_head, restore_forward, sequence_logps_head
from aipo_core.objectives import pair_loss

Sink = Callable[[dict[str, Any]], None]
REF_FIELDS = ("ref_chosen_logps", "ref_rejected_logps")
# Keys of the "values" dict of every {"kind": "metric"} event the trainer emits. rewards_*, margins,
# accuracy and gradient_weight_mean are in the run objective's own terms (its implicit reward and
# declared gradient weight, aipo_core.objectives), under the same names for every objective.
METRIC_KEYS = (
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "margins",
    "accuracy",
    "s_ref_mean",
    "s_ref_std",
    "s_ref_agreement",
    "s_theta_mean",
    "gradient_weight_mean",
    "nll",
    "logps_chosen",
    "logps_rejected",
    "log_ratio_chosen",
    "log_ratio_rejected",
    "learning_rate",
    "grad_norm",
    "tokens_per_s",
    "num_tokens",
    "epoch",
)


# ----------------------------------------------------------------------------- pairs and tokens


def validate_pairs(pairs: Sequence[dict[str, Any]]) -> None:
    """Raise ValueError naming the pair and field when a pair is not TRL conversational format."""
    if not pairs:
        raise ValueError("pairs: need at least one preference pair")
    for index, pair in enumerate(pairs):
        where = f"pairs[{index}] (id={pair.get('id')!r})" if isinstance(pair, dict) else f"pairs[{index}]"
        if not isinstance(pair, dict):
            raise ValueError(f"{where}: must be a dict, got {type(pair).__name__}")
        for name in ("prompt", "chosen", "rejected"):
            messages = pair.get(name)
            if not isinstance(messages, list) or not messages:
                raise ValueError(f"{where}: field {name!r} must be a non-empty list of chat messages")
            for message in messages:
                if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                    raise ValueError(f"{where}: field {name!r} has a message without string 'content'")
                if not isinstance(message.get("role"), str):
                    raise ValueError(f"{where}: field {name!r} has a message without a 'role'")
        for name in REF_FIELDS:
            value = pair.get(name)
            if value is not None and not (isinstance(value, int | float) and math.isfinite(value)):
                raise ValueError(f"{where}: field {name!r} must be a finite number, got {value!r}")


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Only role and content: extra keys would give Arrow rows different schemas."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _chat_ids(
    tokenizer: PreTrainedTokenizerBase, messages: list, *, add_generation_prompt: bool = False
) -> list:
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(encoded["input_ids"])


def tokenize_pair(
    example: dict[str, Any], tokenizer: PreTrainedTokenizerBase, max_prompt_length: int
) -> dict[str, list[int]]:
    """prompt_ids / chosen_ids / rejected_ids of one conversational pair, as TRL 1.16 tokenizes it.

    Same steps as `DPOTrainer._prepare_dataset`: chat-template the prompt (with generation prompt)
    and prompt+response; the response starts where the two diverge. Then the prompt keeps its LAST
    `max_prompt_length` tokens (the end holds the question and the assistant header), which TRL 1.16
    no longer does; the collator later truncates prompt+response to `max_length`.
    """
    prompt_ids = _chat_ids(tokenizer, example["prompt"], add_generation_prompt=True)
    chosen_full = _chat_ids(tokenizer, example["prompt"] + example["chosen"])
    rejected_full = _chat_ids(tokenizer, example["prompt"] + example["rejected"])
    prompt_len = min(
        common_prefix_length(prompt_ids, chosen_full), common_prefix_length(prompt_ids, rejected_full)
    )
    return {
        "prompt_ids": prompt_ids[:prompt_len][-max_prompt_length:],
        "chosen_ids": chosen_full[prompt_len:],
        "rejected_ids": rejected_full[prompt_len:],
    }


def preference_collator(tokenizer: PreTrainedTokenizerBase, max_length: int) -> DataCollatorForPreference:
    """TRL's collator: [chosen; rejected] stacked, right-padded, prompt+response cut to `max_length`."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return DataCollatorForPreference(pad_token_id=pad_id, max_length=max_length, truncation_mode="keep_start")


def use_bf16(precision: str) -> bool:
    """TrainingConfig.precision → bf16 autocast or not ("auto": only where CUDA supports bf16)."""
    if precision == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def _model_device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


# ----------------------------------------------------------------------------- reference scoring


@torch.no_grad()
def attach_reference_logps(
    pairs: Sequence[dict[str, Any]],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int,
    max_prompt_length: int,
    max_length: int,
    precision: str = "auto",
    placement: Placement | None = None,
) -> list[dict[str, Any]]:
    """Copies of `pairs` with the reference model's scores of their responses.

    Adds ref_chosen_logps / ref_rejected_logps (summed token log-probs of each response under
    `model`, the reference θ_t), s_ref = their difference, and chosen_length / rejected_length
    (number of response tokens scored, after truncation). The forward must be the trainer's so the
    stored numbers equal the policy's at step 0 (bf16 autocast changes them at ~1e-2): pass the
    training `placement` (its autocast is used), or else `precision` as in TrainingConfig.
    """
    validate_pairs(pairs)
    tokenized = [tokenize_pair(pair, tokenizer, max_prompt_length) for pair in pairs]
    collate = preference_collator(tokenizer, max_length)
    # Similar lengths in a batch means less padding; results are written back by index.
    order = sorted(
        range(len(pairs)), key=lambda i: len(tokenized[i]["prompt_ids"]) + len(tokenized[i]["chosen_ids"])
    )
    device = _model_device(model)
    scores: dict[int, dict[str, float | int]] = {}
    was_training = model.training
    model.eval()
    try:
        autocast = (
            placement.autocast()
            if placement is not None
            else torch.autocast(device.type, torch.bfloat16, enabled=use_bf16(precision))
        )
        with sequence_logps_head(model), autocast:
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                batch = collate([tokenized[i] for i in indices])
                out = model(
                    input_ids=batch["input_ids"].to(device),  # [2b, L]: chosen rows, then rejected rows
                    attention_mask=batch["attention_mask"].to(device),
                    completion_mask=batch["completion_mask"].to(device),
                )
                chosen, rejected = out.logps.float().cpu().chunk(2)  # [b] each
                chosen_len, rejected_len = out.lengths.cpu().chunk(2)  # [b] each
                for k, i in enumerate(indices):
                    scores[i] = {
                        "ref_chosen_logps": chosen[k].item(),
                        "ref_rejected_logps": rejected[k].item(),
                        "s_ref": (chosen[k] - rejected[k]).item(),
                        "chosen_length": int(chosen_len[k]),
                        "rejected_length": int(rejected_len[k]),
                    }
    finally:
        model.train(was_training)
    return [{**pair, **scores[i]} for i, pair in enumerate(pairs)]


# ----------------------------------------------------------------------------- metrics streaming


class MetricSinkCallback(TrainerCallback):
    """Turns every Trainer log into a {"kind": "metric"} event (+ a progress event) for `sink`.

    Keeps the events in `history` and the Trainer's end-of-run summary in `summary`, so a caller
    without a sink still gets them. Only the main process emits.
    """

    def __init__(self, sink: Sink | None = None):
        self.sink = sink
        self.history: list[dict[str, Any]] = []
        self.summary: dict[str, float] = {}
        self._last_time = 0.0
        self._last_tokens = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.perf_counter()
        self._last_tokens = 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "train_runtime" in logs:  # Trainer's closing summary, not a step
            self.summary = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
            return
        now = time.perf_counter()
        values = {k: float(logs[k]) for k in METRIC_KEYS if isinstance(logs.get(k), int | float)}
        tokens = values.get("num_tokens", 0.0)
        values["tokens_per_s"] = (tokens - self._last_tokens) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_tokens = now, tokens
        event = {"kind": "metric", "step": int(state.global_step), "values": values}
        self.history.append(event)
        if self.sink is not None:
            self.sink(event)
            fraction = state.global_step / state.max_steps if state.max_steps else 0.0
            message = f"train step {state.global_step}/{state.max_steps}"
            self.sink({"kind": "progress", "fraction": min(fraction, 1.0), "message": message})


# ----------------------------------------------------------------------------- trainer


class PreferenceTrainer(DPOTrainer):
    """`DPOTrainer` whose loss is `pair_loss(objective.name, ...)` on stored reference log-probs.

    The train dataset must hold prompt/chosen/rejected (conversational) and ref_chosen_logps /
    ref_rejected_logps. No reference model is loaded or kept.
    """

    def __init__(
        self,
        *,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        train_dataset: Dataset,
        args: DPOConfig,
        objective: ObjectiveConfig,
        max_prompt_length: int,
        callbacks: list[TrainerCallback] | None = None,
    ):
        if not args.precompute_ref_log_probs:
            raise ValueError(
                "PreferenceTrainer needs precompute_ref_log_probs=True (no reference model is loaded)"
            )
        missing = [name for name in REF_FIELDS if name not in train_dataset.column_names]
        if missing:
            raise ValueError(f"train_dataset: missing {', '.join(missing)}; run attach_reference_logps first")
        self.objective_name = objective.name
        self.hyperparameters = objective.resolved()
        self.max_prompt_length = max_prompt_length
        super().__init__(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=train_dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        add_sequence_logps_head(self.model)
        # Metrics go to MetricSinkCallback; with tqdm off, Trainer would also print every log dict.
        self.remove_callback(PrinterCallback)

    def _send_telemetry(self):
        """No network from the trainer: TRL's usage ping is skipped."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Tokenize with `tokenize_pair` (TRL's steps + prompt truncation), keeping the ref columns."""
        return dataset.map(
            tokenize_pair,
            fn_kwargs={"tokenizer": processing_class, "max_prompt_length": self.max_prompt_length},
            remove_columns=["prompt", "chosen", "rejected"],
            desc=f"Tokenizing {dataset_name} pairs",
        )

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        """The reference log-probs are already in the dataset; TRL would recompute them here."""
        return dataset

    def policy_logps(self, model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths), each [B], of a batch."""
        out = model(
            input_ids=inputs["input_ids"],  # [2B, L]: B chosen rows, then B rejected rows
            attention_mask=inputs["attention_mask"],
            completion_mask=inputs["completion_mask"],
        )
        chosen, rejected = out.logps.chunk(2)
        chosen_lengths, rejected_lengths = out.lengths.chunk(2)
        return chosen, rejected, chosen_lengths, rejected_lengths

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        chosen, rejected, chosen_lengths, rejected_lengths = self.policy_logps(model, inputs)
        ref_chosen = inputs["ref_chosen_logps"].to(chosen)  # [B]
        ref_rejected = inputs["ref_rejected_logps"].to(chosen)  # [B]
        losses, metrics = pair_loss(
            self.objective_name,
            policy_chosen_logps=chosen,
            policy_rejected_logps=rejected,
            ref_chosen_logps=ref_chosen,
            ref_rejected_logps=ref_rejected,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
            **self.hyperparameters,
        )  # losses [B], metrics: dict of [B]
        log_ratios = (chosen - ref_chosen, rejected - ref_rejected)  # [B] each
        self._record_metrics(metrics, chosen, rejected, log_ratios, inputs["attention_mask"])
        loss = losses.mean()
        return (loss, metrics) if return_outputs else loss

    def _record_metrics(self, metrics, chosen, rejected, log_ratios, attention_mask) -> None:
        """Per-batch means, gathered over processes; DPOTrainer.log averages them per logging step."""
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        s_ref = gather(metrics["s_ref"]).float()  # [B_total]
        summaries = {
            "rewards_chosen": metrics["rewards_chosen"],
            "rewards_rejected": metrics["rewards_rejected"],
            "margins": metrics["margins"],
            "accuracy": metrics["accuracy"],
            "s_theta_mean": metrics["s_theta"],
            "gradient_weight_mean": metrics["gradient_weight"],
            "nll": metrics["nll"],
            "logps_chosen": chosen.detach(),
            "logps_rejected": rejected.detach(),
            # log πθ − log π_ref, whatever the objective: 0 at step 0 when s_ref was computed as the
            # trainer computes (bench/gpu_smoke.py checks it).
            "log_ratio_chosen": log_ratios[0].detach(),
            "log_ratio_rejected": log_ratios[1].detach(),
        }
        for key, per_pair in summaries.items():
            self._metrics[mode][key].append(gather(per_pair.float()).mean().item())
        self._metrics[mode]["s_ref_mean"].append(s_ref.mean().item())
        self._metrics[mode]["s_ref_std"].append(s_ref.std(unbiased=False).item())
        self._metrics[mode]["s_ref_agreement"].append((s_ref > 0).float().mean().item())
        if mode == "train":
            self._total_train_tokens += gather(attention_mask.sum()).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]


# ----------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class TrainResult:
    """Where the policy went, how many optimiser steps ran, and summary metrics.

    metrics: the last step's values (METRIC_KEYS), Trainer's run summary (train_runtime,
    train_loss, train_samples_per_second = pairs/s) and dataset-level pairs_s_ref_mean /
    pairs_s_ref_std / pairs_s_ref_agreement / num_pairs. history: every metric event.
    """

    output_dir: Path
    steps: int
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


def dpo_config(
    training: TrainingConfig,
    objective: ObjectiveConfig,
    scratch_dir: Path | str,
    seed: int,
    placement: Placement | None = None,
) -> DPOConfig:
    """TRL/transformers arguments for one iteration: AdamW, schedule with warm-up, no hub, no loggers.

    With a `placement`, its device, autocast dtype and process layout decide: `training.batch_size`
    is the global batch, split evenly over the processes; FSDP / ZeRO-3 are configured here (the
    Trainer wraps the model), so create the config BEFORE loading the model (ZeRO-3 loads sharded).
    Without one, `training.precision` decides bf16 and the Trainer picks the device.
    """
    processes = placement.num_processes if placement else 1
    bf16 = placement.autocast_dtype == torch.bfloat16 if placement else use_bf16(training.precision)
    on_cuda = placement.device == "cuda" if placement else torch.cuda.is_available()
    arguments: dict[str, Any] = dict(
        output_dir=str(scratch_dir),
        per_device_train_batch_size=training.batch_size // processes,
        use_cpu=not on_cuda,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=training.learning_rate,
        num_train_epochs=training.epochs,
        max_steps=training.max_steps or -1,
        lr_scheduler_type=training.lr_scheduler_type,
        warmup_steps=training.warmup_ratio,  # a float < 1 is a fraction of the total steps
        weight_decay=training.weight_decay,
        optim="adamw_torch",
        bf16=bf16,
        fp16=False,
        gradient_checkpointing=training.gradient_checkpointing,
        max_length=training.max_length,
        beta=objective.resolved()["beta"],
        precompute_ref_log_probs=True,
        disable_dropout=True,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        push_to_hub=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=on_cuda,
        seed=seed,
        data_seed=seed,
        ddp_find_unused_parameters=False,
    )
    return DPOConfig(**{**arguments, **_sharding_arguments(placement, training)})


def _sharding_arguments(placement: Placement | None, training: TrainingConfig) -> dict[str, Any]:
    """FSDP (full shard, one unit per decoder layer) or DeepSpeed ZeRO-3 arguments for the Trainer."""
    if placement is None or not placement.sharded:
        return {}
    if placement.strategy == "fsdp":
        return {
            "fsdp": True,
            "fsdp_config": {
                "version": 2,
                "reshard_after_forward": True,  # full shard; one unit per decoder layer (default wrap)
                "cpu_ram_efficient_loading": True,  # rank 0 reads the checkpoint, the others receive it
                "state_dict_type": "FULL_STATE_DICT",
                "activation_checkpointing": training.gradient_checkpointing,
            },
            # FSDP checkpoints activations itself; the model-level switch would do it twice.
            "gradient_checkpointing": False,
        }
    bf16 = placement.autocast_dtype == torch.bfloat16
    return {
        "deepspeed": {
            "zero_optimization": {
                "stage": 3,
                "overlap_comm": True,
                "stage3_gather_16bit_weights_on_model_save": False,  # see _save_zero3_fp32
            },
            "bf16": {"enabled": bf16},
            "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
        }
    }


def _s_ref_summary(pairs: Sequence[dict[str, Any]]) -> dict[str, float]:
    s_ref = torch.tensor(
        [p["ref_chosen_logps"] - p["ref_rejected_logps"] for p in pairs], dtype=torch.float64
    )
    return {
        "num_pairs": float(len(pairs)),
        "pairs_s_ref_mean": s_ref.mean().item(),
        "pairs_s_ref_std": s_ref.std(unbiased=False).item(),
        "pairs_s_ref_agreement": (s_ref > 0).double().mean().item(),
    }


def save_policy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, output_dir: Path) -> Path:
    """`save_pretrained` model and tokenizer (with its chat template) into `output_dir`, atomically."""
    with atomic_dir(output_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return Path(output_dir)


def _save_zero3_fp32(trainer: PreferenceTrainer, staging: Path) -> None:
    """ZeRO-3 keeps the fp32 master weights in the optimizer's partitions; the module holds bf16
    copies, and saving those would round away updates smaller than bf16's resolution (a 5e-7
    step). So every rank writes its partition and the main process merges them in fp32."""
    checkpoint = staging.with_name(f"{staging.name}.zero")
    trainer.model_wrapped.save_checkpoint(str(checkpoint))
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(staging, state_dict=state)
        shutil.rmtree(checkpoint, ignore_errors=True)


def _save_sharded(
    trainer: PreferenceTrainer, tokenizer: PreTrainedTokenizerBase, output_dir: Path, placement: Placement
) -> None:
    """FSDP / ZeRO-3: every process takes part in gathering the full fp32 weights, the main one
    writes them (and the tokenizer) into a staging folder, which then replaces `output_dir`."""
    staging = output_dir.with_name(f".{output_dir.name}.gathering")
    if placement.strategy == "deepspeed_zero3":
        _save_zero3_fp32(trainer, staging)
    else:
        trainer.save_model(str(staging))  # FSDP: FULL_STATE_DICT of the fp32 shards, on rank 0
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the policy needs none
        tokenizer.save_pretrained(staging)
        with atomic_dir(output_dir) as target:
            for item in staging.iterdir():
                item.rename(target / item.name)
        staging.rmdir()
    trainer.accelerator.wait_for_everyone()


def _learning_rate_max(history: list[dict[str, Any]]) -> dict[str, float]:
    """The largest learning rate any optimiser step ran at. 0 means the policy did not change: a
    linear warm-up starts at 0, so a run of one step with any warm-up (warmup_ratio rounds up to one
    step) updates nothing; progress lines and the summary table say so."""
    rates = [float(e["values"]["learning_rate"]) for e in history if "learning_rate" in e.get("values", {})]
    return {"learning_rate_max": max(rates)} if rates else {}


def train_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    *,
    objective: ObjectiveConfig,
    training: TrainingConfig,
    output_dir: Path,
    seed: int = 0,
    sink: Sink | None = None,
    placement: Placement | None = None,
    args: DPOConfig | None = None,
) -> TrainResult:
    """Train `model` (θ_t, updated in place into θ_{t+1}) on `pairs` and save it to `output_dir`.

    Pairs without ref_chosen_logps/ref_rejected_logps are scored first by `model` itself, which
    before training is exactly the reference θ_t. Metric events go to `sink` after every optimiser
    step (see METRIC_KEYS). The saved folder loads with AutoModelForCausalLM/AutoTokenizer.
    `placement` (see `aipo_core.devices`) sets device, mixed precision and process layout; every
    process of a distributed run calls this, only the main one saves and reports metrics. `args`
    replaces `dpo_config(...)` (ZeRO-3 needs it created before the model is loaded).
    """
    validate_pairs(pairs)
    if tokenizer.chat_template is None:
        raise ValueError("tokenizer: a chat template is required (pairs are conversational)")
    if any(pair.get(name) is None for pair in pairs for name in REF_FIELDS):
        pairs = attach_reference_logps(
            pairs,
            model,
            tokenizer,
            batch_size=training.batch_size,
            max_prompt_length=training.max_prompt_length,
            max_length=training.max_length,
            precision=training.precision,
            placement=placement,
        )
    dataset = Dataset.from_list(
        [
            {
                "prompt": _messages(p["prompt"]),
                "chosen": _messages(p["chosen"]),
                "rejected": _messages(p["rejected"]),
                "ref_chosen_logps": float(p["ref_chosen_logps"]),
                "ref_rejected_logps": float(p["ref_rejected_logps"]),
            }
            for p in pairs
        ]
    )
    callback = MetricSinkCallback(sink)
    previous_forward = vars(model).get("forward")
    with tempfile.TemporaryDirectory(prefix="aipo-train-") as scratch:
        trainer = PreferenceTrainer(
            model=model,
            tokenizer=tokenizer,
            train_dataset=dataset,
            args=args or dpo_config(training, objective, scratch, seed, placement),
            objective=objective,
            max_prompt_length=training.max_prompt_length,
            callbacks=[callback],
        )
        try:
            trainer.train()
        finally:
            # TRL, accelerate and we patched model.forward; hand the caller back a plain model.
            restore_forward(model)
            if previous_forward is not None:
                model.forward = previous_forward
            if training.gradient_checkpointing and not (placement and placement.sharded):
                model.gradient_checkpointing_disable()
        if placement is not None and placement.sharded:
            _save_sharded(trainer, tokenizer, Path(output_dir), placement)
        elif trainer.is_world_process_zero():
            save_policy(model, tokenizer, Path(output_dir))
    last = callback.history[-1]["values"] if callback.history else {}
    metrics = {**last, **callback.summary, **_s_ref_summary(pairs), **_learning_rate_max(callback.history)}
    return TrainResult(
        output_dir=Path(output_dir),
        steps=trainer.state.global_step,
        metrics=metrics,
        history=callback.history,
    )
