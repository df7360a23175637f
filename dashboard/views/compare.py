"""Compare: overlay runs' win rate vs length and metric curves; a sweep's hyperparameter heatmap."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import api_client, charts, derived, frames, ui

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
    "Runs", list(by_id), default=_default_selection(), format_func=lambda i: ui.run_label(by_id[i])
)
st.query_params["runs"] = ",".join(map(str, selected))


def overlay() -> None:
    labels = {i: f"#{i} {by_id[i]['name']}" for i in selected}
    bodies = {
        label: (api_client.run_iterations(i), frames.headline_benchmark(by_id[i]))
        for i, label in labels.items()
    }
    st.plotly_chart(charts.win_rate_vs_length(frames.iterations_frame(bodies)), key="cmp_wr")
    table = frames.runs_frame([by_id[i] for i in selected], objectives)
    st.dataframe(ui.run_table(table), hide_index=True, column_config=ui.RUN_COLUMNS, placeholder="—")
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

# ----------------------------------------------------------------------------- sweeps

Z_CHOICES = {
    "lc_win_rate": "LC win rate (%)",
    "win_rate": "Win rate (%)",
    "avg_length": "Average length (chars)",
}


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
    rows = []
    for run in sweep["runs"]:
        latest = frames.latest_evaluation_row(run)
        rows.append(
            {
                x: frames.sweep_point_value(run, x),
                y: "all" if y == "(none)" else frames.sweep_point_value(run, y),
                z: latest[z],
                "run": f"#{run['id']} {run['name']}",
                "status": run["status"],
            }
        )
    frame = pd.DataFrame(rows, columns=[x, y, z, "run", "status"])
    st.plotly_chart(charts.sweep_heatmap(frame, x=x, y=y, z=z, z_title=Z_CHOICES[z]), key="sweep_heat")
    st.dataframe(frame, hide_index=True)


st.markdown("#### Sweep heatmap")
sweep_ids = sorted({int(r["sweep_id"]) for r in runs if r["sweep_id"]})
if not sweep_ids:
    st.info("No sweeps yet — launch one from the Launch page (Sweep tab).")
else:
    with ui.api_guard(stop=False):
        sweep_panel(sweep_ids)
