"""Compare: overlay runs' win rate vs length and metric curves, paired differences within noise,
length exploitation, one evaluation prompt across runs; a sweep's hyperparameter heatmap."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from dashboard import api_client, charts, derived, frames, lineage, ui

st.title("Compare runs")
with ui.api_guard():
    runs = api_client.list_runs().items
    objectives = api_client.objectives()
if not runs:
    ui.empty_state("No runs yet — launch one.")
    st.stop()
by_id = {run["id"]: run for run in runs}


def _default_selection() -> list[int]:
    """?runs=1,2 from the URL, else the three newest finished runs (or the newest runs)."""
    wanted = [int(p) for p in str(st.query_params.get("runs", "")).split(",") if p.strip().isdigit()]
    wanted = [i for i in wanted if i in by_id]
    if wanted:
        return wanted
    finished = [i for i, r in by_id.items() if r["status"] == "succeeded"]
    return (finished or list(by_id))[:3]


selected = st.multiselect(
    "Runs",
    list(by_id),
    default=_default_selection()[: api_client.MAX_COMPARED_RUNS],
    format_func=lambda i: ui.run_label(by_id[i]),
    max_selections=api_client.MAX_COMPARED_RUNS,  # the API's cap per comparison request
)
st.query_params["runs"] = ",".join(map(str, selected))


def evaluations_of(labels: dict[int, str]) -> pd.DataFrame:
    """Every evaluation of the selected runs with SEs (derived.evaluation_frame), one frame."""
    parts = [
        derived.evaluation_frame(frames.run_evaluations(api_client.run_iterations(i)), run=label, run_id=i)
        for i, label in labels.items()
    ]
    return pd.concat(parts, ignore_index=True) if parts else derived.evaluation_frame([], run="", run_id=0)


def overlay() -> None:
    labels = {i: f"#{i} {by_id[i]['name']}" for i in selected}
    evaluations = evaluations_of(labels)
    # Each run's headline: its config's first benchmark (frames.headline_benchmark).
    headline_of = {i: frames.headline_benchmark(by_id[i]) for i in selected}
    headline = evaluations[evaluations["benchmark"] == evaluations["run_id"].map(headline_of)]
    st.plotly_chart(
        charts.win_rate_vs_length(
            lineage.chart_frame(headline), title="Win rate vs average length (θ_0 … θ_K)"
        ),
        key="cmp_wr",
    )
    lineage.protocol_captions({labels[i]: by_id[i]["config"] for i in selected}, headline)
    # The runs without their latest rates: the evaluations below carry every θ_j's rates ± SE.
    table = frames.runs_frame([by_id[i] for i in selected], objectives).drop(
        columns=list(frames.RUN_EVAL_COLUMNS)
    )
    st.dataframe(ui.run_table(table), hide_index=True, column_config=ui.RUN_COLUMNS, placeholder="—")
    if not evaluations.empty:
        st.dataframe(lineage.evaluation_table(evaluations), hide_index=True)
    keys = sorted(set().union(*(api_client.metric_keys(i) for i in selected)))
    if not keys:
        st.info("None of these runs has logged training metrics yet.")
        return
    key = st.selectbox("Metric", keys, index=keys.index("loss") if "loss" in keys else 0)
    curves = []
    for run_id, label in labels.items():
        points = api_client.metric_histories(run_id, [key])[key]
        history = derived.global_steps(frames.history_frame(points))
        curves.append(history.assign(series=label, step=history["global_step"]))
    st.plotly_chart(
        charts.metric_curves(
            pd.concat(curves, ignore_index=True),
            title=key,
            y_title=key,
            x_title="Step (cumulative over iterations)",
        ),
        key="cmp_curve",
    )


st.markdown("#### Runs side by side")
if selected:
    with ui.api_guard(stop=False):
        overlay()
else:
    st.info("Pick one or more runs above.")

# ----------------------------------------------------------------------------- noise, length, lineage


def differences_panel(benchmark: str) -> None:
    """Paired win-rate differences on shared prompts; those whose 95% interval covers 0 are noise."""
    items = api_client.paired_comparisons(benchmark, selected)
    st.plotly_chart(charts.paired_differences(items), key="cmp_paired")
    rows = [
        {
            "Runs": f"#{i['run_b']} θ_{i['policy_index_b']} − #{i['run_a']} θ_{i['policy_index_a']}",
            "Difference (points)": derived.rate_text(
                i["difference"], i["difference_se"], i["unavailable_reason"]
            ),
            "Shared prompts": i["n_shared"],
            "Verdict": "—"
            if i["within_noise"] is None
            else "within noise"
            if i["within_noise"]
            else "beyond noise",
            "Judge": i["judge_a"] if i["judge_a"] == i["judge_b"] else f"{i['judge_a']} / {i['judge_b']}",
        }
        for i in items
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.caption(
        "Each run's latest evaluated model; b − a in win-rate points over the prompts both judged, ± the "
        "paired SE (sd of per-prompt differences / √n). Within noise: the 95% interval covers 0."
    )


def prompt_panel(benchmark: str) -> None:
    """One evaluation prompt across the selected runs' iterations, next to the baseline answer."""
    wanted = st.query_params.get("prompt")
    page = api_client.eval_samples(selected[0], benchmark=benchmark, limit=100)
    prompts = {str(s["uid"]): s["instruction"] for s in page.items if s["uid"] is not None}
    if wanted and wanted not in prompts:
        prompts = {str(wanted): "(from the link)", **prompts}
    if not prompts:
        st.info(f"Run #{selected[0]} has no {benchmark} outputs yet.")
        return
    ids = list(prompts)
    chosen = st.selectbox(
        "Prompt",
        ids,
        index=ids.index(str(wanted)) if wanted in prompts else 0,
        format_func=lambda uid: f"#{uid}: {prompts[uid][:90]}",
        key="cmp_prompt",
    )
    lineage.show_eval_lineage(benchmark, chosen, selected)


if len(selected) >= 1:
    with ui.api_guard(stop=False):
        runs_evaluations = evaluations_of({i: f"#{i} {by_id[i]['name']}" for i in selected})
        benchmarks = list(dict.fromkeys(runs_evaluations["benchmark"])) or [
            frames.headline_benchmark(by_id[selected[0]])
        ]
        wanted_benchmark = st.query_params.get("benchmark")
        benchmark = st.selectbox(
            "Benchmark",
            benchmarks,
            index=benchmarks.index(wanted_benchmark) if wanted_benchmark in benchmarks else 0,
            key="cmp_benchmark",
        )
        if len(selected) >= 2:
            st.markdown("#### Differences between runs (paired on shared prompts)")
            differences_panel(benchmark)
        st.markdown("#### Length exploitation: change from θ_0")
        lineage.show_length_exploitation(
            runs_evaluations[runs_evaluations["benchmark"] == benchmark], key="cmp_len_exploit"
        )
        st.markdown("#### One evaluation prompt across runs")
        prompt_panel(benchmark)

# ----------------------------------------------------------------------------- sweeps

Z_CHOICES = {
    "lc_win_rate": "LC win rate (%)",
    "win_rate": "Win rate (%)",
    "avg_length": "Average length (chars)",
}

#: The colours that are rates, each with its standard error (frames.EVAL_FIELDS' `_se` fields).
Z_WITH_SE = ("lc_win_rate", "win_rate")


def _shown(latest: dict, z: str) -> str:
    """A run's result as the table shows it: a rate "x ± SE" (or "n/a (why)"), a length as is."""
    if z in Z_WITH_SE:
        reason = latest["lc_unavailable_reason"] if z == "lc_win_rate" else None
        return derived.rate_text(latest[z], latest[f"{z}_se"], reason)
    return "n/a" if math.isnan(latest[z]) else f"{latest[z]:.0f}"


def sweep_panel(sweep_ids: list[int]) -> None:
    sweep_id = st.selectbox("Sweep", sweep_ids, format_func=lambda i: f"sweep #{i}")
    sweep = api_client.get_sweep(sweep_id)
    params = list(sweep["grid"])
    st.caption(f"**{sweep['name']}** · grid {sweep['grid']} · {sweep['status_counts']}")
    if not params:
        st.info("This sweep has no grid parameters.")
        return
    cols = st.columns(3)
    x = cols[0].selectbox("x", params, index=0)
    y_options = [p for p in params if p != x] or ["(none)"]
    y = cols[1].selectbox("y", y_options, index=0)
    z = cols[2].selectbox("colour", list(Z_CHOICES), format_func=Z_CHOICES.get)
    se = f"{z}_se" if z in Z_WITH_SE else None
    rows = []
    for run in sweep["runs"]:
        latest = frames.latest_evaluation_row(run)  # RunPublic.latest_evaluation
        rows.append(
            {
                x: frames.sweep_point_value(run, x),
                y: "all" if y == "(none)" else frames.sweep_point_value(run, y),
                z: latest[z],
                f"{z}_se": latest[se] if se else math.nan,
                "shown": _shown(latest, z),
                "judge": latest["judge_label"],
                "n": latest["n"],
                "run": f"#{run['id']} {run['name']}",
                "status": run["status"],
            }
        )
    frame = pd.DataFrame(rows, columns=[x, y, z, f"{z}_se", "shown", "judge", "n", "run", "status"])
    st.plotly_chart(charts.sweep_heatmap(frame, x=x, y=y, z=z, z_title=Z_CHOICES[z], se=se), key="sweep_heat")
    table = frame[[x, y, "shown", "judge", "n", "run", "status"]].rename(columns={"shown": Z_CHOICES[z]})
    st.dataframe(table, hide_index=True)


st.markdown("#### Sweep heatmap")
sweep_ids = sorted({int(r["sweep_id"]) for r in runs if r["sweep_id"]})
if not sweep_ids:
    st.info("No sweeps yet — launch one from the Launch page (Sweep tab).")
else:
    with ui.api_guard(stop=False):
        sweep_panel(sweep_ids)
