"""The published AlpacaEval 2.0 judgements shipped in this folder (SOURCES.md), as tests read them."""

from __future__ import annotations

import csv
import json
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODELS = ("gpt-3.5-turbo-1106", "gpt-3.5-turbo-1106_concise", "gpt-3.5-turbo-1106_verbose")
BASELINE = "gpt4_1106_preview"


@cache
def leaderboard() -> dict[str, dict[str, str]]:
    """Published leaderboard rows by model name."""
    with (HERE / "leaderboard_subset.csv").open(encoding="utf-8") as fh:
        return {row["model"]: row for row in csv.DictReader(fh)}


@cache
def annotations(model: str) -> tuple[dict[str, str], ...]:
    """One model's annotation rows: annotator, index, dataset, preference, baseline/output chars."""
    with (HERE / "annotation_lengths.csv").open(encoding="utf-8") as fh:
        return tuple(row for row in csv.DictReader(fh) if row["model"] == model)


def write_alpaca_eval_annotations(model: str, path: Path) -> Path:
    """An AlpacaEval annotations JSON with the published preferences and answers of the published
    lengths (placeholder text: only lengths matter to the estimator)."""
    records: list[dict[str, Any]] = [
        {
            "instruction": f"instruction {row['index']}",
            "output_1": "b" * int(row["baseline_chars"]),
            "generator_1": BASELINE,
            "output_2": "m" * int(row["output_chars"]),
            "generator_2": model,
            "annotator": row["annotator"],
            "preference": float(row["preference"]) if row["preference"] else None,
        }
        for row in annotations(model)
    ]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path
