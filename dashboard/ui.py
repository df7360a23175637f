"""Small Streamlit building blocks shared by the pages (error boxes, run picker, empty states).

Pages stay declarative: they fetch through `api_client`, draw through `charts`, and use these
helpers so an API outage or an empty database looks the same everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

from dashboard import api_client, theme

log = logging.getLogger(__name__)

# Page files, relative to app.py (what st.switch_page / st.page_link accept under st.navigation).
RUNS_PAGE = "views/runs.py"
RUN_DETAIL_PAGE = "views/run_detail.py"
COMPARE_PAGE = "views/compare.py"
PAIRS_PAGE = "views/pairs.py"
LAUNCH_PAGE = "views/launch.py"

# Shown (instead of a traceback) when a page hits a bug; tests look for it.
UNEXPECTED_ERROR = "Something went wrong while drawing this page."


READ_ONLY_HELP = "Your token is read-only: launching, cancelling, resuming and cloning need a write token."


def show_api_error(exc: api_client.ApiError) -> None:
    """An API failure as a user-facing box, with the one hint that fixes the usual cause."""
    if isinstance(exc, api_client.ApiUnavailable):
        st.error(f"**API unreachable.** {exc}", icon=":material/power_off:")
    elif isinstance(exc, api_client.ApiUnauthorized):
        st.error(f"**Not authorised.** {exc}", icon=":material/key:")
    elif isinstance(exc, api_client.ApiNotFound):
        st.warning(str(exc), icon=":material/search_off:")
    else:
        st.error(str(exc), icon=":material/warning:")


@contextmanager
def api_guard(*, stop: bool = True) -> Iterator[None]:
    """Run a block of API calls; on ApiError show it and (by default) end the page there."""
    try:
        yield
    except api_client.ApiError as exc:
        show_api_error(exc)
        if stop:
            st.stop()


def report_unexpected(exc: Exception) -> None:
    """A bug in a page: logged with its traceback on the server, a plain message in the browser."""
    log.exception("dashboard page failed", exc_info=exc)
    st.error(
        f"{UNEXPECTED_ERROR} The details are in the dashboard's log ({type(exc).__name__}).",
        icon=":material/bug_report:",
    )


def run_label(run: dict[str, Any]) -> str:
    return f"#{run['id']} {run['name']} ({run['objective']}, {run['status']})"


def query_int(name: str) -> int | None:
    """An integer query parameter (?run=3), None when absent or not a number."""
    value = st.query_params.get(name)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def pick_run(*, key: str = "run") -> dict[str, Any] | None:
    """The run this page is about: ?run=<id> if given, else a select box over all runs.

    The URL is the source of truth (links and reloads land on the same run); choosing another
    run in the box writes it back to the URL. Shows the "no runs yet" empty state and returns
    None when the database is empty.
    """
    runs = api_client.list_runs(limit=api_client.MAX_RUNS_PAGE).items
    if not runs:
        empty_state("No runs yet — launch one.")
        return None
    by_id = {run["id"]: run for run in runs}
    widget = f"pick_{key}"
    wanted = query_int(key)
    if wanted is not None and wanted not in by_id:
        by_id[wanted] = api_client.get_run(wanted)  # older than the list's first page
    if wanted is not None:
        st.session_state[widget] = wanted
    elif st.session_state.get(widget) not in by_id:
        st.session_state[widget] = next(iter(by_id))

    def remember() -> None:
        st.query_params[key] = str(st.session_state[widget])

    chosen = st.selectbox(
        "Run", list(by_id), format_func=lambda i: run_label(by_id[i]), key=widget, on_change=remember
    )
    return by_id[chosen]


def empty_state(message: str, *, launch_link: bool = True) -> None:
    """A friendly 'nothing here yet' box, with a link to the Launch page."""
    st.info(message, icon=":material/science:")
    if launch_link:
        st.page_link(LAUNCH_PAGE, label="Launch a run", icon=":material/rocket_launch:")


RUN_COLUMNS = {
    "id": st.column_config.NumberColumn("ID", format="%d", width="small"),
    "name": st.column_config.TextColumn("Name"),
    "status": st.column_config.TextColumn("Status"),
    "objective": st.column_config.TextColumn("Objective"),
    "lc_win_rate": st.column_config.NumberColumn("LC win rate (%)", format="%.1f"),
    "lc_win_rate_se": st.column_config.NumberColumn("± SE", format="%.1f", width="small"),
    "win_rate": st.column_config.NumberColumn("Win rate (%)", format="%.1f"),
    "win_rate_se": st.column_config.NumberColumn("± SE ", format="%.1f", width="small"),
    "avg_length": st.column_config.NumberColumn("Avg length (chars)", format="%.0f"),
    "eval_iteration": st.column_config.NumberColumn(
        "Eval it", format="%d", help="The iteration whose policy θ_{k+1} was evaluated last (empty: θ_0)"
    ),
    "lc_unavailable_reason": st.column_config.TextColumn("LC unavailable because"),
    "judge_label": st.column_config.TextColumn("Judge", help="Who judged the latest evaluation."),
    "n": st.column_config.NumberColumn("n", format="%d", width="small", help="Judged benchmark prompts"),
    "seed": st.column_config.NumberColumn("Eval seed", format="%d", width="small"),
    "beta": st.column_config.NumberColumn("β", format="%g", width="small"),
    "alpha": st.column_config.NumberColumn("α", format="%g", width="small"),
    "lambda_": st.column_config.NumberColumn("λ", format="%g", width="small"),
    "gamma": st.column_config.NumberColumn("γ", format="%g", width="small"),
    "iterations": st.column_config.NumberColumn("Iters", format="%d", width="small"),
    "model": st.column_config.TextColumn("Model"),
    "created_at": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm"),
    "created_by": st.column_config.TextColumn("Created by", help="The API token's name that launched it."),
}


def run_table(frame: pd.DataFrame) -> Styler:
    """frames.runs_frame output ready for st.dataframe(..., column_config=RUN_COLUMNS)."""
    shown = frame.copy()
    shown["status"] = shown["status"].map(theme.status_label)
    shown["created_at"] = pd.to_datetime(shown["created_at"], errors="coerce", utc=True)
    return status_styler(shown[[c for c in RUN_COLUMNS if c in shown.columns]])


def status_styler(frame: pd.DataFrame, column: str = "status") -> Styler:
    """`frame` for st.dataframe with its status labels coloured (green done, red failed, ...)."""

    def color(label: str) -> str:
        status = str(label).split(" ")[-1]
        return f"color: {theme.STATUS_COLORS[status]}" if status in theme.STATUS_COLORS else ""

    return frame.style.map(color, subset=[column])


def status_markdown(status: str) -> str:
    """Coloured status text for st.markdown (green done, red failed, blue running, grey otherwise)."""
    color = {"succeeded": "green", "failed": "red", "running": "blue", "cancelled": "orange"}.get(
        status, "gray"
    )
    return f":{color}[{theme.status_label(status)}]"
