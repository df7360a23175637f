"""Runs: every run with status, objective, hyperparameters and latest win rates; filters; live refresh."""

from __future__ import annotations

import streamlit as st

from dashboard import api_client, frames, ui

REFRESH_S = 5
PAGE_SIZE = 50

st.title("Runs")

filters = st.columns([1, 1, 2, 1])
status = filters[0].selectbox("Status", ["all", *api_client.RUN_STATUSES])
with ui.api_guard():
    objectives = api_client.objectives()
objective = filters[1].selectbox("Objective", ["all", *sorted(o["name"] for o in objectives)])
name = filters[2].text_input("Name contains", placeholder="e.g. aipo-smollm2")
auto_refresh = filters[3].toggle(
    "Auto-refresh", value=True, help=f"Reload every {REFRESH_S} s while runs are active."
)
query = {
    "status": None if status == "all" else status,
    "objective": None if objective == "all" else objective,
    "name": name or None,
}


def page_number(total: int) -> int:
    """1-based page of the table; the selector only appears when there is more than one page."""
    pages = max(1, -(-total // PAGE_SIZE))
    if pages == 1:
        return 1
    return int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1))


def run_links(run_id: int) -> None:
    links = st.columns(3)
    links[0].page_link(
        ui.RUN_DETAIL_PAGE, label="Open run detail", icon=":material/biotech:", query_params={"run": run_id}
    )
    links[1].page_link(
        ui.PAIRS_PAGE, label="Browse pairs", icon=":material/balance:", query_params={"run": run_id}
    )
    links[2].page_link(
        ui.LAUNCH_PAGE,
        label="Edit & relaunch",
        icon=":material/rocket_launch:",
        query_params={"from": run_id},
    )


def runs_table(number: int) -> None:
    with ui.api_guard():
        page = api_client.list_runs(**query, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
        frame = frames.runs_frame(page.items, objectives)
    active = int(frame["status"].isin(api_client.ACTIVE_STATUSES).sum())
    st.caption(f"{len(frame)} of {page.total} runs · {active} active on this page")
    selection = st.dataframe(
        ui.run_table(frame),
        placeholder="—",
        hide_index=True,
        column_config=ui.RUN_COLUMNS,
        on_select="rerun",
        selection_mode="single-row",
        key="runs_table",
    )
    rows = selection.selection.rows if selection is not None else []
    if rows:
        run_links(int(frame.iloc[rows[0]]["id"]))
    else:
        st.caption("Select a row to open the run, browse its pairs or relaunch it.")


with ui.api_guard():
    first = api_client.list_runs(**query, limit=PAGE_SIZE)
if first.total == 0:
    if any(query.values()):
        st.info("No runs match these filters.")
    else:
        ui.empty_state("No runs yet — launch one.")
    st.stop()
number = page_number(first.total or 0)
if auto_refresh and (first.active or 0) > 0:
    st.fragment(run_every=REFRESH_S)(runs_table)(number)
else:
    runs_table(number)
