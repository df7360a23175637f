"""Streamlit panels that follow a number back to its texts, and show rates with their noise.

Shared by the run detail, compare and pairs pages (docs/dashboard.md): a pair's prompt with
every candidate, one evaluation prompt across iterations and runs, a run's evaluations as
"rate ± SE" with judge and protocol, and the length-exploitation view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import api_client, charts, derived

VERDICT_COLORS = {
    "model preferred": "green",
    "baseline preferred": "red",
    "tie": "gray",
    "not judged": "gray",
}


def _number(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def show_candidates(run_id: int, iteration: int, prompt_id: str) -> None:
    """Every candidate of one prompt: full text, ranker score, tokens, EOS, role, reference log-prob."""
    body = api_client.prompt_candidates(run_id, iteration, prompt_id)
    outcome = body["outcome"]
    st.caption(
        f"Ranked by **{body['ranker']}**. Rule: {body['selection_rule']}. "
        f"Outcome: **{outcome or 'not recorded'}**"
        + (f" ({body['scores_unavailable_reason']})" if body["scores_unavailable_reason"] else "")
    )
    for candidate in body["candidates"]:
        role = candidate["role"]
        tag = {"chosen": ":green[**chosen**]", "rejected": ":red[**rejected**]"}.get(role, "")
        eos = "stopped at EOS" if candidate["finished"] else ":orange[cut off at max_new_tokens]"
        with st.container(border=True):
            st.markdown(
                f"**Candidate {candidate['index']}** {tag} · score {_number(candidate['score'], '.3g')} · "
                f"{_number(candidate['length'], 'd')} tokens · {candidate['chars']} chars · {eos}"
                + (f" · log πref {candidate['ref_logps']:.1f}" if candidate["ref_logps"] is not None else "")
            )
            st.text(candidate["text"])


def show_eval_lineage(benchmark: str, prompt_id: str, run_ids: Sequence[int]) -> None:
    """One evaluation prompt: the baseline answer, then each run's θ_0, θ_1, … side by side."""
    body = api_client.eval_sample_lineage(benchmark, prompt_id, run_ids)
    st.markdown(f"**Prompt** ({benchmark} #{prompt_id})")
    st.text(body["instruction"])
    with st.expander(f"Baseline answer ({body['baseline_model'] or 'baseline'})", expanded=False):
        st.text(body["baseline_output"] or "(none stored)")
    for run in body["runs"]:
        st.markdown(
            f"**#{run['run_id']} {run['run_name']}** ({run['objective']}) · judge: {run['judge_label']} · "
            f"sample of {run['sample_size'] or 'all'} prompts, evaluation seed {run['eval_seed']}"
        )
        columns = st.columns(max(len(run["outputs"]), 1))
        for column, output in zip(columns, run["outputs"], strict=False):
            color = VERDICT_COLORS[output["verdict"]]
            column.markdown(
                f"**θ_{output['policy_index']}** · :{color}[{output['verdict']}] · "
                f"{_number(output['output_chars'], 'd')} chars"
            )
            column.text(output["output"])


def evaluation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """derived.evaluation_frame as a table of text: every rate "x ± SE" or "n/a (why)"."""
    return pd.DataFrame(
        {
            "Run": frame["run"],
            "Model": [f"θ_{int(j)}" for j in frame["policy_index"]],
            "Benchmark": frame["benchmark"],
            "Win rate (%)": [
                derived.rate_text(v, s) for v, s in zip(frame["win_rate"], frame["win_rate_se"], strict=True)
            ],
            "LC win rate (%)": [
                derived.rate_text(v, s, r)
                for v, s, r in zip(
                    frame["lc_win_rate"], frame["lc_win_rate_se"], frame["lc_unavailable_reason"], strict=True
                )
            ],
            "Avg length (chars)": frame["avg_length"].round(0),
            "Judged": frame["n"],
            "Judge": frame["judge"],
        }
    )


def chart_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """derived.evaluation_frame in charts.win_rate_vs_length's columns, points labelled θ_j."""
    return frame.assign(iteration=frame["policy_index"], label=[f"θ_{int(j)}" for j in frame["policy_index"]])


def show_length_exploitation(frame: pd.DataFrame, *, key: str) -> None:
    """Δ length vs Δ LC from θ_0 with the rule's verdict per flagged policy (docs/dashboard.md)."""
    deltas = derived.deltas_from_base(frame)
    st.plotly_chart(charts.length_exploitation(deltas), key=key)
    flags = [
        (row, charts.length_exploitation_flag(row.length_change_pct, row.lc_change, row.lc_change_se))
        for row in deltas.itertuples()
    ]
    for row, flag in flags:
        if flag:
            st.warning(
                f"{row.run} θ_{row.policy_index}: answers {row.length_change_pct:+.0f}% longer than θ_0 "
                f"while LC win rate changed {row.lc_change:+.1f} ± {row.lc_change_se:.1f} points "
                "(within noise or down): the gain, if any, is length.",
                icon=":material/straighten:",
            )
    undecided = [
        row for row, flag in flags if flag is None and row.length_change_pct > charts.LENGTH_GROWTH_PCT
    ]
    if undecided:
        reasons = {str(row.lc_unavailable_reason) for row in undecided if row.lc_unavailable_reason}
        st.caption(
            f"{len(undecided)} longer polic{'y' if len(undecided) == 1 else 'ies'} cannot be checked: LC is "
            f"unavailable ({'; '.join(sorted(reasons)) or 'no SE'})."
        )


def protocol_captions(config_of: Mapping[str, Mapping[str, Any]], frame: pd.DataFrame) -> None:
    """One caption per run and benchmark: the judge and the evaluation sample behind its numbers."""
    for (run, _benchmark), rows in frame.groupby(["run", "benchmark"], sort=False):
        st.caption(f"{run} · {derived.protocol_text(config_of[run], rows.iloc[-1].to_dict())}")
