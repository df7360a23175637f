"""The per-iteration summary table printed by `aipo run --local` and `aipo demo`.

One row per evaluated model: θ_0 (the base model, before any training) and then θ_{k+1}, the
policy iteration k trained, next to that iteration's pair statistics. Raw and length-controlled
win rates stand side by side, each with its standard error; an LC the judgements cannot support
is shown as "n/a" and the caption says why. The title names the judge (and says so when the
policy judged itself, i.e. the judge changed every iteration).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

HEADERS = ("model", "iter", "pairs kept", "agreement", "win rate %", "LC win rate %", "avg length (chars)")


def summary_rows(
    evaluations: Sequence[Mapping[str, Any]], pair_stats: Mapping[int, Mapping[str, Any]], benchmark: str
) -> list[dict[str, Any]]:
    """Rows for `summary_table` from flat evaluation dicts (EvaluationSummary.to_dict() or the API's
    EvaluationPublic) of one benchmark and {iteration: {pairs, agreement_rate}}."""
    rows = []
    for ev in sorted(
        (e for e in evaluations if e["benchmark"] == benchmark), key=lambda e: e["policy_index"]
    ):
        iteration = ev.get("iteration")
        stats = pair_stats.get(iteration, {}) if iteration is not None else {}
        rows.append(
            {
                "model": f"θ_{ev['policy_index']}" + (" (base)" if ev["evaluated"] == "base" else ""),
                "iteration": iteration,
                "pairs": stats.get("pairs"),
                "agreement_rate": stats.get("agreement_rate"),
                **{
                    key: ev.get(key)
                    for key in (
                        "win_rate",
                        "win_rate_se",
                        "lc_win_rate",
                        "lc_win_rate_se",
                        "lc_unavailable_reason",
                        "avg_length",
                        "judge",
                        "judge_label",
                        "slope_source",
                        "length_slope",
                        "length_slope_se",
                        "lc_pooled_n",
                    )
                },
            }
        )
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _rate(value: float | None, se: float | None, missing: str = "–") -> str:
    if value is None:
        return missing
    return f"{value:.1f}" if se is None else f"{value:.1f} ± {se:.1f}"


def lc_caption(rows: Sequence[Mapping[str, Any]]) -> str:
    """How the LC column was obtained, and why any entry is n/a."""
    lines = []
    shown = [r for r in rows if r.get("lc_win_rate") is not None]
    if shown:
        r = shown[0]
        if r.get("slope_source") == "prior":
            lines.append(f"LC: AlpacaEval's published length slope for {r['judge']} (1.51 ± 0.39).")
        elif r.get("slope_source") == "estimated":
            lines.append(
                f"LC: length slope {r['length_slope']:.2f} ± {r['length_slope_se']:.2f} estimated from "
                f"{r['lc_pooled_n']} judgements by this judge."
            )
    reasons: dict[str, list[str]] = {}
    for r in rows:
        if r.get("lc_win_rate") is None and r.get("lc_unavailable_reason"):
            reasons.setdefault(r["lc_unavailable_reason"], []).append(r["model"])
    for reason, models in reasons.items():
        lines.append(f"LC n/a for {', '.join(models)}: {reason}.")
    return "\n".join(lines)


def summary_title(rows: Sequence[Mapping[str, Any]], benchmark: str) -> str:
    labels = {r["judge_label"] for r in rows if r.get("judge_label")}
    judge = f"; judge: {labels.pop()}" if len(labels) == 1 else ""
    return f"Per-iteration summary ({benchmark}{judge})"


def summary_table(rows: Sequence[Mapping[str, Any]], benchmark: str) -> Table:
    table = Table(title=summary_title(rows, benchmark), caption=lc_caption(rows) or None)
    for header in HEADERS:
        table.add_column(header, justify="right", no_wrap=header == "model")
    for row in rows:
        table.add_row(
            row["model"],
            _fmt(row.get("iteration"), "d"),
            _fmt(row.get("pairs"), "d"),
            _fmt(row.get("agreement_rate"), ".2f"),
            _rate(row.get("win_rate"), row.get("win_rate_se")),
            _rate(row.get("lc_win_rate"), row.get("lc_win_rate_se"), missing="n/a"),
            _fmt(row.get("avg_length"), ".0f"),
        )
    return table
