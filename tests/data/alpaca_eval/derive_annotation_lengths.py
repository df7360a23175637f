"""Recreate annotation_lengths.csv from AlpacaEval's published annotations (see SOURCES.md).

    python tests/data/alpaca_eval/derive_annotation_lengths.py ANNOTATIONS_DIR > annotation_lengths.csv

ANNOTATIONS_DIR holds results/<model>/weighted_alpaca_eval_gpt4_turbo/annotations.json of
tatsu-lab/alpaca_eval, saved as <model>.json. Only what the win-rate estimator reads is kept:
the preference exactly as published (repr of the float, empty when missing) and the character
lengths of the baseline (output_1) and model (output_2) answers, in the file's order.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

MODELS = ("gpt-3.5-turbo-1106", "gpt-3.5-turbo-1106_concise", "gpt-3.5-turbo-1106_verbose")
FIELDS = ("model", "annotator", "index", "dataset", "preference", "baseline_chars", "output_chars")


def main(annotations_dir: Path) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(FIELDS)
    for model in MODELS:
        records = json.loads((annotations_dir / f"{model}.json").read_text(encoding="utf-8"))
        for index, rec in enumerate(records):
            pref = rec["preference"]
            writer.writerow(
                (
                    model,
                    rec["annotator"],
                    index,
                    rec["dataset"],
                    "" if pref is None else repr(float(pref)),
                    len(rec["output_1"]),
                    len(rec["output_2"]),
                )
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
