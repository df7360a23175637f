"""Pairs: browse a run's chosen/rejected pairs side by side, filter them, export them."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import api_client, lineage, ui

AGREEMENT = {
    "all": None,
    "reference agrees (s_ref > 0)": "agree",
    "reference disagrees (s_ref ≤ 0)": "disagree",
}

st.title("Preference pairs")
with ui.api_guard():
    run = ui.pick_run()
    if run is None:
        st.stop()
    run_id = int(run["id"])
    iterations = [it["index"] for it in api_client.run_iterations(run_id)["items"]]

cols = st.columns([1, 2, 1, 1])
iteration = cols[0].selectbox("Iteration", ["all", *iterations])
agreement = AGREEMENT[cols[1].selectbox("Judge / reference agreement", list(AGREEMENT))]
min_diff = cols[2].number_input("Min Δlength (tokens)", value=None, step=10, help="chosen − rejected length")
max_diff = cols[3].number_input("Max Δlength (tokens)", value=None, step=10, help="chosen − rejected length")
cols = st.columns([3, 1])
query = cols[0].text_input("Search prompt / responses", placeholder="words to find")
page_size = cols[1].selectbox("Per page", [10, 25, 50, 100], index=1)
filters = {
    "iteration": None if iteration == "all" else int(iteration),
    "agreement": agreement,
    "min_length_diff": None if min_diff is None else int(min_diff),
    "max_length_diff": None if max_diff is None else int(max_diff),
    "q": query.strip() or None,
}

# Keyset pagination: remember the cursors of the pages already visited, reset when filters change.
signature = (run_id, page_size, tuple(sorted(filters.items())))
if st.session_state.get("pairs_signature") != signature:
    st.session_state["pairs_signature"] = signature
    st.session_state["pairs_cursors"] = [None]
cursors: list[str | None] = st.session_state["pairs_cursors"]

with ui.api_guard():
    page = api_client.list_pairs(run_id, limit=page_size, cursor=cursors[-1], include_total=True, **filters)


def _number(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def show_pair(pair: dict[str, Any]) -> None:
    s_ref = pair["s_ref"]
    agrees = "no s_ref" if s_ref is None else "reference agrees" if s_ref > 0 else "reference disagrees"
    diff = pair["length_diff"]
    with st.container(border=True):
        st.caption(
            f"iteration {pair['iteration']} · id {pair['uid'] or pair['id']} · "
            f"s_ref = {_number(s_ref, '.2f')} nats "
            f"({agrees}) · Δlength = {_number(diff, '.0f')} tokens"
        )
        st.markdown(f"**Prompt.** {pair['prompt_text']}")
        left, right = st.columns(2)
        for col, role, color in ((left, "chosen", "green"), (right, "rejected", "red")):
            numbers = (
                f"score {_number(pair[f'score_{role}'], '.3g')}"
                f" · {_number(pair[f'{role}_length'], '.0f')} tokens"
                f" · {_number(pair[f'{role}_chars'], '.0f')} chars"
                f" · log πref {_number(pair[f'ref_{role}_logps'], '.1f')}"
            )
            col.markdown(f":{color}[**{role.capitalize()}**] · {numbers}")
            col.text(pair[role])
        # Lineage (docs/dashboard.md): fetched only when opened, one request per opened pair.
        # The candidates are keyed by the prompt's id (PairPublic.uid); a pair without one has none.
        if pair["uid"] is not None and st.toggle(
            "All candidates of this prompt", key=f"candidates_{pair['iteration']}_{pair['uid']}"
        ):
            with ui.api_guard(stop=False):
                lineage.show_candidates(run_id, int(pair["iteration"]), str(pair["uid"]))


if not page.items:
    if cursors == [None] and not any(v is not None for v in filters.values()):
        st.info("This run has no pairs yet: they appear after an iteration's rank stage.")
    else:
        st.info("No pairs match these filters.")
else:
    first = (len(cursors) - 1) * page_size + 1
    total = f" of {page.total}" if page.total is not None else ""
    st.caption(f"Pairs {first}–{first + len(page.items) - 1}{total}")
    for pair in page.items:
        show_pair(pair)

nav = st.columns([1, 1, 4])
if nav[0].button("Previous", icon=":material/arrow_back:", disabled=len(cursors) == 1):
    cursors.pop()
    st.rerun()
if nav[1].button("Next", icon=":material/arrow_forward:", disabled=page.next_cursor is None):
    cursors.append(page.next_cursor)
    st.rerun()

st.markdown("#### Export")
cols = st.columns([1, 3])
fmt = cols[0].selectbox("Format", ["jsonl", "parquet"])
suffix = "" if filters["iteration"] is None else f"-iter{filters['iteration']}"
cols[1].download_button(
    "Download matching pairs (TRL format)",
    icon=":material/download:",
    data=lambda: api_client.export_pairs(run_id, fmt=fmt, **filters),
    file_name=f"run-{run_id}{suffix}-pairs.{fmt}",
    mime="application/x-ndjson" if fmt == "jsonl" else "application/vnd.apache.parquet",
)
