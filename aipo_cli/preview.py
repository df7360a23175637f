"""The launch summary `aipo submit --dry-run` prints: the API's POST /runs/preview as a table."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def count(value: int | None) -> str:
    """12,345 with separators; '–' for a figure the server could not know."""
    return "–" if value is None else f"{value:,}"


def parameters(value: int | None) -> str:
    """134.5M / 1.2B / 64.5K parameters."""
    if value is None:
        return "unknown"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return str(value)


def preview_rows(preview: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, figure) lines of a run preview, in the order a reviewer reads them."""
    model, tokens = preview["model"], preview["generation_tokens"]
    stages = " → ".join(stage["name"] for stage in preview["stages"])
    rows = [
        ("run", preview["name"]),
        ("model", f"{model['spec']}: {parameters(model['parameters'])} parameters ({model['source']})"),
        (
            "iterations × new instructions × candidates",
            f"{preview['sampled_iterations']} × {preview['new_instructions']} × "
            f"{preview['candidates_per_prompt']} = {count(preview['candidates'])} candidates",
        ),
        (
            "generated tokens (at most)",
            f"{count(tokens['total'])} (self-instruct {count(tokens['self_instruct'])}, candidates "
            f"{count(tokens['candidates'])}, evaluation {count(tokens['evaluation'])})",
        ),
        (
            "training tokens (at most)",
            f"{count(preview['training_tokens'])} over {count(preview['training_pairs'])} pair passes",
        ),
        ("judge forward passes", count(preview["judge_passes"])),
        ("evaluation prompts / iteration", count(preview["eval_prompts"])),
        ("stages", f"{stages}, × {preview['iterations']} iterations = {preview['stages_total']} stages"),
        (
            "queue",
            f"{', '.join(preview['queues'])} ({preview['active_runs']} runs queued or running now)",
        ),
    ]
    rows += [("note", note) for note in preview["notes"]]
    return rows


def preview_table(preview: dict[str, Any]) -> Table:
    table = Table(title="Launch preview (nothing was created)", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("figure")
    for what, figure in preview_rows(preview):
        table.add_row(what, figure)
    return table
