"""Run detail: status and actions, live stages, per-iteration metrics, the paper's charts, stage logs."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from dashboard import api_client, charts, derived, frames, lineage, session, theme, ui

REFRESH_S = 5

st.title("Run detail")
with ui.api_guard():
    run = ui.pick_run()
if run is None:
    st.stop()
run_id = int(run["id"])
with ui.api_guard():
    objectives = api_client.objectives()
active = run["status"] in api_client.ACTIVE_STATUSES


# ----------------------------------------------------------------------------- header and actions


def header() -> None:
    st.subheader(f"#{run_id} {run['name']}")
    hp = frames.hyperparameters(run, objectives)
    hp_text = ", ".join(f"{k} = {v:g}" for k, v in hp.items())
    st.markdown(
        f"{ui.status_markdown(run['status'])} · **{run['objective']}** ({hp_text}) · "
        f"model `{run['config']['model']}` · {run['config']['iterations']} iterations"
    )
    times = [
        f"{label} {run[key]}"
        for key, label in (("created_at", "created"), ("started_at", "started"), ("finished_at", "finished"))
        if run[key]
    ]
    if run["created_by"]:
        times.append(f"by {run['created_by']}")
    if run["parent_run_id"]:
        times.append(f"cloned from #{run['parent_run_id']}")
    if run["sweep_id"]:
        times.append(f"sweep #{run['sweep_id']} point {run['sweep_point']}")
    st.caption(" · ".join(times))
    if run["error"]:
        st.error(f"Failed: {run['error']}", icon=":material/cancel:")
    progress = run["progress"]
    if progress:
        where = (
            f" · now: iteration {progress['current_iteration']} {progress['current_stage']}"
            if progress["current_stage"]
            else ""
        )
        st.progress(
            float(progress["fraction"]),
            text=f"{progress['stages_done']}/{progress['stages_total']} stages{where}",
        )


def _act(action, verb: str) -> None:
    """Run a write action; errors (e.g. 409 run already finished) become a message, not a crash."""
    try:
        result = action(run_id)
    except api_client.ApiError as exc:
        ui.show_api_error(exc)
        return
    if verb == "cloned":
        st.query_params["run"] = str(result["id"])  # this page, showing the new run
        st.toast(f"Run #{run_id} cloned into #{result['id']}.")
    else:
        st.toast(f"Run #{run_id} {verb}.")
    st.rerun()


def actions() -> None:
    writable = session.can_write()
    read_only = None if writable else ui.READ_ONLY_HELP
    cols = st.columns(4)
    if cols[0].button(
        "Cancel",
        icon=":material/stop_circle:",
        disabled=not (active and writable),
        help=read_only or "Stop the run's running and queued stages.",
    ):
        _act(api_client.cancel_run, "cancelled")
    resumable = run["status"] in ("failed", "cancelled")
    if cols[1].button(
        "Resume",
        icon=":material/play_arrow:",
        disabled=not (resumable and writable),
        help=read_only or "Continue from the first unfinished stage.",
    ):
        _act(api_client.resume_run, "resumed")
    if cols[2].button(
        "Clone",
        icon=":material/content_copy:",
        disabled=not writable,
        help=read_only or "Launch a new run with the same config.",
    ):
        _act(api_client.clone_run, "cloned")
    cols[3].page_link(
        ui.LAUNCH_PAGE,
        label="Edit & relaunch",
        icon=":material/edit:",
        query_params={"from": run_id},
        disabled=not writable,
    )


header()
actions()

# ----------------------------------------------------------------------------- stages

STAGE_COLUMNS = {
    "iteration": st.column_config.NumberColumn("It", format="%d", width="small"),
    "name": st.column_config.TextColumn("Stage"),
    "status": st.column_config.TextColumn("Status"),
    "progress": st.column_config.ProgressColumn(
        "Progress", min_value=0.0, max_value=1.0, format="percent", color=theme.ACCENT
    ),
    "message": st.column_config.TextColumn("Message"),
    "attempt": st.column_config.NumberColumn("Attempt", format="%d", width="small"),
    "started_at": st.column_config.TextColumn("Started"),
    "finished_at": st.column_config.TextColumn("Finished"),
    "error": st.column_config.TextColumn("Error"),
}


def stages_panel() -> None:
    with ui.api_guard(stop=False):
        stages = api_client.run_stages(run_id)
        frame = pd.DataFrame(stages, columns=list(STAGE_COLUMNS))
        frame["status"] = frame["status"].map(theme.status_label)
        st.dataframe(ui.status_styler(frame), hide_index=True, column_config=STAGE_COLUMNS, placeholder="—")


st.markdown("#### Stages")
if active:
    st.fragment(run_every=REFRESH_S)(stages_panel)()
else:
    stages_panel()

# ----------------------------------------------------------------------------- iterations

ITERATION_COLUMNS = {
    "iteration": st.column_config.NumberColumn("Iteration", format="%d"),
    "status": st.column_config.TextColumn("Status"),
    "lc_win_rate": st.column_config.NumberColumn("LC win rate (%)", format="%.1f"),
    "lc_win_rate_se": st.column_config.NumberColumn("± SE", format="%.1f", width="small"),
    "win_rate": st.column_config.NumberColumn("Win rate (%)", format="%.1f"),
    "win_rate_se": st.column_config.NumberColumn("± SE ", format="%.1f", width="small"),
    "avg_length": st.column_config.NumberColumn("Avg length (chars)", format="%.0f"),
    "lc_unavailable_reason": st.column_config.TextColumn("LC unavailable because"),
    "pairs": st.column_config.NumberColumn("Pairs", format="%d"),
    "agreement_rate": st.column_config.NumberColumn("Agreement P(s_ref>0)", format="percent"),
    "mean_s_ref": st.column_config.NumberColumn("Mean s_ref (nats)", format="%.2f"),
    "mean_chosen_length": st.column_config.NumberColumn("Chosen len (tokens)", format="%.0f"),
    "mean_rejected_length": st.column_config.NumberColumn("Rejected len (tokens)", format="%.0f"),
}


with ui.api_guard():
    body = api_client.run_iterations(run_id)
    benchmark = frames.headline_benchmark(run)
    iterations = frames.iteration_rows(body, benchmark)
    evaluations = frames.run_evaluations(body)
st.markdown("#### Iterations")
if not iterations:
    st.info("No iterations recorded yet.")
else:
    rows = [{**it, "status": theme.status_label(it["status"])} for it in iterations]
    st.dataframe(
        pd.DataFrame(rows, columns=list(ITERATION_COLUMNS)),
        hide_index=True,
        column_config=ITERATION_COLUMNS,
        placeholder="—",
    )
    headline = [e for e in evaluations if e["benchmark"] == benchmark]
    if headline:
        st.caption(f"Win rates of θ_{{k+1}}, ± SE · {derived.protocol_text(run['config'], headline[-1])}")
    with st.expander("All evaluation metrics"):
        flat = pd.DataFrame([{"iteration": it["iteration"], **it["metrics"]} for it in iterations])
        st.dataframe(flat.set_index("iteration"))

# ----------------------------------------------------------------------------- charts


def win_rate_tab() -> None:
    """θ_0 … θ_K with 95% intervals, the rates as "x ± SE", who judged, and length exploitation."""
    frame = derived.evaluation_frame(evaluations, run=run["name"], run_id=run_id)
    benchmarks = list(dict.fromkeys(frame["benchmark"]))
    if len(benchmarks) > 1:
        frame = frame[frame["benchmark"] == st.selectbox("Benchmark", benchmarks, key="wr_benchmark")]
    st.plotly_chart(charts.win_rate_vs_length(lineage.chart_frame(frame)), key="wr_len")
    if frame.empty:
        return
    lineage.protocol_captions({run["name"]: run["config"]}, frame)
    st.dataframe(lineage.evaluation_table(frame), hide_index=True)
    st.markdown("##### Length exploitation")
    lineage.show_length_exploitation(frame, key="len_exploit")


def rewards_tab() -> None:
    keys = [frames.CHOSEN_REWARD_KEY, frames.REJECTED_REWARD_KEY, frames.GRADIENT_WEIGHT_KEY]
    histories = {k: frames.history_frame(v) for k, v in api_client.metric_histories(run_id, keys).items()}
    st.plotly_chart(
        charts.reward_trajectories(
            histories[frames.CHOSEN_REWARD_KEY], histories[frames.REJECTED_REWARD_KEY]
        ),
        key="rewards",
    )
    if not histories[frames.GRADIENT_WEIGHT_KEY].empty:
        curve = derived.global_steps(histories[frames.GRADIENT_WEIGHT_KEY]).assign(
            series="mean gradient weight"
        )
        st.plotly_chart(
            charts.metric_curves(
                curve.assign(step=curve["global_step"]),
                title="Mean gradient weight",
                y_title=theme.LABELS["gradient_weight"],
            ),
            key="weight_curve",
        )


def pairs_tab() -> None:
    choices = [it["iteration"] for it in iterations if it["pairs"]]
    if not choices:
        st.info("No preference pairs yet: they appear after an iteration's rank stage.")
        return
    iteration = st.selectbox("Iteration", choices, index=len(choices) - 1, key="pairs_iteration")
    pairs = api_client.all_pairs(run_id, iteration=iteration)
    frame = frames.pairs_frame(pairs)
    left, right = st.columns(2)
    left.plotly_chart(charts.s_ref_histogram(frame["s_ref"]), key="s_ref")
    weights, caption = derived.pair_gradient_weights([p["extra"] for p in pairs])
    right.plotly_chart(charts.gradient_weight_histogram(weights), key="weights")
    formula = frames.weight_formula(objectives, run["objective"])
    right.caption(f"{run['objective']} weights w = {formula}, {caption}.")
    left, right = st.columns(2)
    left.plotly_chart(charts.length_vs_logprob(frame), key="len_logp")
    unit = right.radio("Length unit", ["chars", "tokens"], horizontal=True, key="len_unit")
    column = "chars" if unit == "chars" else "length"
    right.plotly_chart(
        charts.length_histograms(frame[f"chosen_{column}"], frame[f"rejected_{column}"], unit=unit),
        key="len_hist",
    )
    if len(pairs) >= 5_000:
        st.caption("Charts use the first 5,000 pairs of this iteration.")
    st.page_link(
        ui.PAIRS_PAGE, label="Browse these pairs", icon=":material/balance:", query_params={"run": run_id}
    )


def curves_tab() -> None:
    keys = api_client.metric_keys(run_id)
    if not keys:
        st.info("No metrics recorded yet.")
        return
    defaults = [k for k in frames.DEFAULT_CURVE_KEYS if k in keys] or list(keys)[:1]
    chosen = st.multiselect("Metrics", sorted(keys), default=defaults, key="curve_keys")
    histories = api_client.metric_histories(run_id, chosen)
    for key in chosen:
        frame = derived.global_steps(frames.history_frame(histories[key]))
        frame = frame.assign(series=[f"it {i}" for i in frame["iteration"]], step=frame["global_step"])
        st.plotly_chart(
            charts.metric_curves(frame, title=key, y_title=key, x_title="Step (cumulative over iterations)"),
            key=f"curve_{key}",
        )


def samples_tab() -> None:
    page = api_client.eval_samples(run_id, limit=20)
    if not page.items:
        st.info("No evaluation outputs yet.")
        return
    shown = ["iteration", "benchmark", "evaluated", "instruction", "output", "preference", "output_chars",
             "baseline_chars"]  # fmt: skip
    st.dataframe(pd.DataFrame(page.items, columns=shown), hide_index=True)
    st.caption("preference: 2 = model output preferred over the baseline, 1 = baseline preferred.")
    st.markdown("##### One prompt across iterations")
    prompts = {(s["benchmark"], s["uid"]): s["instruction"] for s in page.items if s["uid"] is not None}
    if not prompts:
        return
    chosen = st.selectbox(
        "Prompt",
        list(prompts),
        format_func=lambda key: f"{key[0]} #{key[1]}: {prompts[key][:80]}",
        key="lineage_prompt",
    )
    lineage.show_eval_lineage(chosen[0], chosen[1], [run_id])
    st.page_link(
        ui.COMPARE_PAGE,
        label="Compare this prompt across runs",
        icon=":material/compare_arrows:",
        query_params={"runs": str(run_id), "benchmark": chosen[0], "prompt": chosen[1]},
    )


def logs_tab() -> None:
    stages = [s for s in api_client.run_stages(run_id) if s["status"] not in ("pending", "queued")]
    if not stages:
        st.info("No stage has started yet.")
        return
    stage = st.selectbox(
        "Stage",
        stages,
        index=len(stages) - 1,
        key="log_stage",
        format_func=lambda s: f"iteration {s['iteration']} · {s['name']} ({s['status']})",
    )
    try:
        text = api_client.stage_log(run_id, int(stage["id"]))
    except api_client.ApiNotFound:
        st.info("This stage has not written a log yet.")
        return
    st.code(text or "(empty log)", language="log")


TABS = {
    "Win rate vs length": win_rate_tab,
    "Rewards": rewards_tab,
    "Pair diagnostics": pairs_tab,
    "Training curves": curves_tab,
    "Eval samples": samples_tab,
    "Logs": logs_tab,
}
for tab, draw in zip(st.tabs(list(TABS)), TABS.values(), strict=True):
    with tab, ui.api_guard(stop=False):
        draw()

if any(math.isnan(it["avg_length"]) for it in iterations) and active:
    st.caption("Charts fill in as iterations finish; press Refresh data in the sidebar to update them.")
