"""AIPO Lab dashboard: `streamlit run dashboard/app.py` (env AIPO_API_URL, AIPO_API_TOKEN / AIPO_HOME).

The entry point only sets up navigation and the sidebar (API connection, refresh); each page
lives in dashboard/views/ and composes api_client + charts + widgets. A page that raises is
reported as a short message, never as a traceback in the browser.
"""

from __future__ import annotations

import streamlit as st

from dashboard import api_client, ui
from dashboard.settings import load_api_settings

st.set_page_config(page_title="AIPO Lab", page_icon=":material/science:", layout="wide")
st.set_option("client.showErrorDetails", "none")

# The page scripts live in views/, not pages/: Streamlit would treat a `pages/` folder beside the
# entry point as a legacy multipage app, and a fresh server's first deep link would show
# "Page not found" before st.navigation took over.
PAGES = [
    st.Page(ui.RUNS_PAGE, title="Runs", icon=":material/table_rows:", default=True),
    st.Page(ui.RUN_DETAIL_PAGE, title="Run detail", icon=":material/biotech:", url_path="run"),
    st.Page(ui.COMPARE_PAGE, title="Compare", icon=":material/stacked_line_chart:", url_path="comparison"),
    st.Page(ui.PAIRS_PAGE, title="Pairs", icon=":material/balance:", url_path="preference-pairs"),
    st.Page(ui.LAUNCH_PAGE, title="Launch", icon=":material/rocket_launch:", url_path="new-run"),
]


def sidebar() -> None:
    """Where the dashboard points, whether the API answers, and a manual cache refresh."""
    settings = load_api_settings()
    with st.sidebar:
        st.caption(f"API: `{settings.url}`")
        try:
            api_client.health()
        except api_client.ApiError as exc:
            st.error(str(exc), icon=":material/power_off:")
        else:
            st.caption(":green[●] connected")
        if st.button("Refresh data", icon=":material/refresh:", width="stretch"):
            api_client.clear_cache()
            st.rerun()


page = st.navigation(PAGES)
sidebar()
try:
    page.run()
except Exception as exc:  # noqa: BLE001 — the last line of defence: users see a message, the log the traceback
    ui.report_unexpected(exc)
