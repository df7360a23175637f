"""The sign-in screen of login mode: a token field, nothing else of the app until it is accepted.

The token typed in is checked with GET /me; only an accepted token is kept (in this browser
session's `st.session_state`, see dashboard.session). Errors say what went wrong without
echoing the token.
"""

from __future__ import annotations

import streamlit as st

from dashboard import api_client, session, ui
from dashboard.settings import LOGIN, auth_mode

FORM = "sign_in"


def sign_in_page() -> None:
    st.title("AIPO Lab")
    st.caption(
        "Sign in with your personal API token. The operator creates one with "
        "`aipo token create YOUR-NAME` (add `--read-only` for viewing only)."
    )
    with st.form(FORM, clear_on_submit=True):
        token = st.text_input("API token", type="password", autocomplete="off", placeholder="aipo_…")
        submitted = st.form_submit_button("Sign in", icon=":material/login:", type="primary")
    if not submitted:
        return
    token = token.strip()
    if not token:
        st.error("Enter your API token.", icon=":material/key:")
        return
    try:
        identity = api_client.whoami(token)
    except api_client.ApiUnauthorized:
        st.error("That token was not accepted: it is unknown or has been revoked.", icon=":material/key_off:")
        return
    except api_client.ApiError as exc:
        ui.show_api_error(exc)
        return
    session.sign_in(token, identity)
    st.rerun()


def signed_in_panel() -> None:
    """Sidebar: who this session is, and (login mode) the sign-out button."""
    who = session.identity()
    if who is None:
        try:
            who = api_client.whoami()
        except api_client.ApiError:
            return  # the connection line above already says what is wrong
        session.remember_identity(who)
    scope = "read-only" if who["scope"] == "read" else "read & write"
    st.caption(f"Signed in as **{who.get('name')}** ({scope})")
    if auth_mode() == LOGIN:
        if st.button("Sign out", icon=":material/logout:", width="stretch"):
            session.sign_out()
            api_client.clear_cache()
            st.rerun()
