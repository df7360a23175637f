"""The launch summary: what a run or sweep will cost, shown above the Launch buttons.

The figures are the API's (`POST /runs/preview`, `POST /sweeps/preview`), so the page, `aipo
submit --dry-run` and the server agree; this module only formats and lays them out. Token figures
are upper bounds (generation usually stops before its limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import streamlit as st


def count(value: int | None) -> str:
    """12,345 with separators; '–' for a figure the server could not know."""
    return "–" if value is None else f"{value:,}"


def parameters(value: int | None) -> str:
    """134.5M / 1.2B / 64.5K; 'unknown' when the server cannot count them."""
    if value is None:
        return "unknown"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return str(value)


def run_metrics(preview: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(label, value, help) of the headline figures of a run preview."""
    tokens = preview["generation_tokens"]
    model = preview["model"]
    return [
        (
            "Candidates",
            count(preview["candidates"]),
            f"{preview['sampled_iterations']} iterations × {preview['new_instructions']} new instructions × "
            f"{preview['candidates_per_prompt']} candidates",
        ),
        (
            "Generated tokens (at most)",
            count(tokens["total"]),
            f"self-instruct {count(tokens['self_instruct'])}, candidates {count(tokens['candidates'])}, "
            f"evaluation {count(tokens['evaluation'])}",
        ),
        (
            "Training tokens (at most)",
            count(preview["training_tokens"]),
            f"{count(preview['training_pairs'])} pair passes (epochs included), chosen + rejected",
        ),
        ("Model size", parameters(model["parameters"]), f"{model['spec']}: {model['source']}"),
    ]


def run_details(preview: Mapping[str, Any]) -> str:
    """One line on the work besides tokens: formula, judge passes, stages, queue and what waits."""
    p = preview
    stages = " → ".join(stage["name"] for stage in p["stages"])
    parts = [
        f"{p['sampled_iterations']} × {p['new_instructions']} × {p['candidates_per_prompt']} "
        f"= {count(p['candidates'])} candidates",
        f"{count(p['judge_passes'])} judge passes",
        f"{count(p['eval_prompts'])} evaluation prompts per iteration",
        f"stages {stages} × {p['iterations']} = {p['stages_total']} on queue {', '.join(p['queues'])}",
        f"{p['active_runs']} runs queued or running now",
    ]
    return " · ".join(parts)


def sweep_metrics(preview: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    totals = preview["totals"]
    return [
        ("Runs", count(preview["runs"]), f"{preview['max_concurrent']} at once; the rest wait their turn"),
        ("Candidates in total", count(totals["candidates"]), "summed over every run"),
        ("Generated tokens (at most)", count(totals["generation_tokens"]), "summed over every run"),
        ("Training tokens (at most)", count(totals["training_tokens"]), "summed over every run"),
    ]


def sweep_children(preview: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": child["name"],
                "candidates": child["candidates"],
                "generated tokens ≤": child["generation_tokens"],
                "training tokens ≤": child["training_tokens"],
                "judge passes": child["judge_passes"],
            }
            for child in preview["children"]
        ]
    )


def _metrics(rows: list[tuple[str, str, str]]) -> None:
    for column, (label, value, help_text) in zip(st.columns(len(rows)), rows, strict=True):
        column.metric(label, value, help=help_text)


def show_run_summary(preview: Mapping[str, Any], origin: str) -> None:
    """The summary box of a run preview; `origin` (form, yaml) names its element key."""
    with st.container(border=True, key=f"launch_summary_{origin}"):
        st.markdown("**Before you launch: this run will cost**")
        _metrics(run_metrics(preview))
        st.caption(run_details(preview))
        for note in preview["notes"]:
            st.caption(f"Note: {note}")


def show_sweep_summary(preview: Mapping[str, Any], origin: str = "sweep") -> None:
    with st.container(border=True, key=f"launch_summary_{origin}"):
        st.markdown("**Before you launch: this sweep will cost**")
        _metrics(sweep_metrics(preview))
        models = ", ".join(f"{m['spec']} ({parameters(m['parameters'])})" for m in preview["models"])
        st.caption(
            f"{count(preview['totals']['judge_passes'])} judge passes · {preview['totals']['stages_total']} "
            f"stages on queue {', '.join(preview['queues'])} · model {models} · "
            f"{preview['active_runs']} runs queued or running now"
        )
        with st.expander(f"Cost of each of the {preview['runs']} runs"):
            st.dataframe(sweep_children(preview), hide_index=True)
