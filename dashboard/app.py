"""AIPO Lab dashboard: `streamlit run dashboard/app.py` (env AIPO_API_URL, AIPO_DASHBOARD_AUTH).

The entry point only sets up navigation, sign-in and the sidebar (API connection, who is signed
in, refresh); each page lives in dashboard/views/ and composes api_client + charts + widgets. In
login mode (the default) a session without an accepted token sees the sign-in form and nothing
else; server-token mode refuses to run unless the dashboard listens on loopback only. A page
that raises is reported as a short message, never as a traceback in the browser.
"""

from __future__ import annotations

import streamlit as st
from PIL import Image, ImageDraw

from dashboard import api_client, login, session, theme, ui
from dashboard.settings import SERVER_TOKEN, auth_mode, is_loopback


def favicon() -> Image.Image:
    """An accent-coloured dot, drawn here: a Material or emoji page icon makes the browser fetch it
    from an outside host, and the page must not reach beyond this machine (docs/dashboard.md)."""
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((4, 4, 60, 60), fill=theme.ACCENT)
    return image


st.set_page_config(page_title="AIPO Lab", page_icon=favicon(), layout="wide")
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


def refuse_shared_server_token() -> None:
    """Server-token mode hands the server's token to every visitor: only when nobody else can visit."""
    address = st.get_option("server.address")
    if auth_mode() == SERVER_TOKEN and not is_loopback(address):
        st.error(
            f"AIPO_DASHBOARD_AUTH=server-token is refused on address {address or 'every interface'!r}: "
            "anyone reaching this port would act with the server's token. Listen on 127.0.0.1 "
            "(`--server.address 127.0.0.1`), or use AIPO_DASHBOARD_AUTH=login.",
            icon=":material/gpp_bad:",
        )
        st.stop()


def sidebar() -> None:
    """Where the dashboard points, whether the API answers, who is signed in, and a cache refresh."""
    settings = session.api_settings()
    with st.sidebar:
        st.caption(f"API: `{settings.url}`")
        try:
            api_client.health()
        except api_client.ApiError as exc:
            st.error(str(exc), icon=":material/power_off:")
        else:
            st.caption(":green[●] connected")
        login.signed_in_panel()
        if st.button("Refresh data", icon=":material/refresh:", width="stretch"):
            api_client.clear_cache()
            st.rerun()


refuse_shared_server_token()
if session.needs_sign_in():
    st.navigation(PAGES, position="hidden")  # keeps a deep link's page for after sign-in
    login.sign_in_page()
    st.stop()
page = st.navigation(PAGES)
sidebar()
try:
    page.run()
except Exception as exc:  # noqa: BLE001 — the last line of defence: users see a message, the log the traceback
    ui.report_unexpected(exc)
