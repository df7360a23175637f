"""Launch: a run config as form fields or YAML, or a sweep over a grid.

Nothing launches by accident. The fields are plain widgets, not an `st.form`: pressing Enter in
one only commits that field and redraws the page; runs are created only by the Launch buttons.
Above each button the API's preview of the current settings says what they will cost; settings
the API refuses show their field errors and disable the button. Every submission carries an
Idempotency-Key derived from this browser session and the exact request, so a double click or a
rerun of the page returns the run already created instead of queueing another.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from dashboard import api_client, frames, launch_summary, run_form, session, theme, ui

st.title("Launch")
if not session.can_write():
    st.info(ui.READ_ONLY_HELP, icon=":material/visibility:")
    st.stop()

with ui.api_guard():
    catalog = frames.objective_defaults(api_client.objectives())
    source_id = ui.query_int("from")
    source = api_client.get_run(source_id)["config"] if source_id is not None else None
base = run_form.starting_config(source)
if source_id is not None:
    st.caption(f"Starting from the config of run #{source_id}.")
session_salt = st.session_state.setdefault("launch_salt", secrets.token_hex(16))


def show_result(kind: str, item: dict[str, Any]) -> None:
    """The outcome of the last submission (kept across the rerun that follows it)."""
    again = " These exact settings were already sent, so the API returned that instead of creating another."
    if kind == "run":
        message = f"Run #{item['id']} **{item['name']}** launched."
        st.success(message + (again if item.get("replayed") else ""), icon=":material/rocket_launch:")
        st.page_link(
            ui.RUN_DETAIL_PAGE, label="Open it", icon=":material/biotech:", query_params={"run": item["id"]}
        )
    else:
        message = f"Sweep #{item['id']} **{item['name']}** created with {len(item['runs'])} runs."
        st.success(message + (again if item.get("replayed") else ""))
        st.page_link(ui.COMPARE_PAGE, label="Compare its runs", icon=":material/stacked_line_chart:")


launched = st.session_state.pop("launch_result", None)
if launched:
    show_result(*launched)


@dataclass
class Check:
    """The API's verdict on the current settings: a cost summary, or field errors, or a problem."""

    summary: dict[str, Any] | None = None
    errors: list[api_client.FieldError] = field(default_factory=list)
    problem: str | None = None


def check(kind: str, body: dict[str, Any]) -> Check:
    """Preview `body` (cached per body) and, if a launch of exactly it was refused, those errors."""
    key = run_form.submission_key(session_salt, kind, body)
    refused = st.session_state.get("launch_refused")
    launch_errors = refused[1] if refused and refused[0] == key else []
    try:
        summary = api_client.preview_run(body) if kind == "run" else api_client.preview_sweep(body)
    except api_client.ApiValidationError as exc:
        return Check(errors=list(exc.field_errors))
    except api_client.ApiError as exc:
        return Check(errors=launch_errors, problem=str(exc))
    return Check(summary=summary, errors=launch_errors)


def show_errors(errors: list[api_client.FieldError], *prefixes: str) -> None:
    """`errors` under these config paths (all of them if none given)."""
    for error in run_form.errors_under(errors, *prefixes) if prefixes else errors:
        st.error(f"`{error.path or 'config'}`: {error.message}", icon=":material/error:")


def submit(kind: str, body: dict[str, Any]) -> None:
    """Send a launch with this form state's key; 422 → remember the field errors; then redraw."""
    key = run_form.submission_key(session_salt, kind, body)
    create = api_client.create_run if kind == "run" else api_client.create_sweep
    try:
        item = create(body, idempotency_key=key)
    except api_client.ApiValidationError as exc:
        st.session_state["launch_refused"] = (key, list(exc.field_errors))
    except api_client.ApiError as exc:
        ui.show_api_error(exc)
        return
    else:
        st.session_state["launch_result"] = (kind, item)
    st.rerun()


def launch_button(
    origin: str, kind: str, body: dict[str, Any] | None, verdict: Check, label: str, icon: str
) -> None:
    """The cost summary, then the button; disabled while the settings cannot be sent or are refused."""
    if verdict.summary is not None:
        show = launch_summary.show_run_summary if kind == "run" else launch_summary.show_sweep_summary
        show(verdict.summary, origin)
    elif verdict.problem:
        st.warning(f"No cost summary for these settings: {verdict.problem}", icon=":material/warning:")
    blocked = body is None or bool(verdict.errors)
    if st.button(label, icon=icon, type="primary", disabled=blocked, key=f"launch_{origin}") and body:
        submit(kind, body)


form_tab, yaml_tab, sweep_tab = st.tabs(["Form", "YAML", "Sweep"])

# ----------------------------------------------------------------------------- form

with form_tab:
    all_errors = st.container()
    objectives = sorted(catalog)
    base_objective = (base.get("objective") or {}).get("name", "aipo")
    objective = st.selectbox(
        "Objective",
        objectives,
        index=objectives.index(base_objective) if base_objective in objectives else 0,
        key="form_objective",
    )
    cols = st.columns([2, 2, 1, 1])
    name = cols[0].text_input("Name", value=str(base.get("name", "")))
    model = cols[1].text_input(
        "Model",
        value=str(base.get("model", "")),
        help="hub id, local path, or " + " / ".join(run_form.MODEL_PRESETS),
    )
    iterations = cols[2].number_input("Iterations", min_value=1, value=int(base.get("iterations", 2)))
    seed = cols[3].number_input("Seed", min_value=0, value=int(base.get("seed", 0)))
    basics_errors = st.container()

    st.markdown("**Objective hyperparameters**")
    defaults = run_form.hyperparameter_defaults(objective, base, catalog)
    hp_cols = st.columns(max(len(defaults), 1))
    hp = {
        k: col.number_input(
            theme.hyperparameter_label(k), value=float(v), format="%g", key=f"hp_{objective}_{k}"
        )
        for col, (k, v) in zip(hp_cols, defaults.items(), strict=False)
    }
    objective_errors = st.container()

    st.markdown("**Sampling**")
    si, gen, rank = base.get("self_instruct", {}), base.get("generation", {}), base.get("ranker", {})
    cols = st.columns(4)
    num_instructions = cols[0].number_input(
        "New instructions / iteration", min_value=1, value=int(si.get("num_instructions", 32))
    )
    num_candidates = cols[1].number_input(
        "Candidates / prompt", min_value=2, value=int(gen.get("num_candidates", 4))
    )
    temperature = cols[2].number_input(
        "Temperature", min_value=0.0, max_value=2.0, step=0.1, value=float(gen.get("temperature", 0.7))
    )
    max_new_tokens = cols[3].number_input(
        "Max new tokens", min_value=1, value=int(gen.get("max_new_tokens", 128))
    )
    kinds = list(run_form.RANKER_KINDS)
    ranker = st.selectbox(
        "Ranker",
        kinds,
        index=kinds.index(rank.get("kind", "llm_judge")) if rank.get("kind") in kinds else 0,
    )
    sampling_errors = st.container()

    st.markdown("**Training**")
    tr = base.get("training", {})
    cols = st.columns(3)
    batch_size = cols[0].number_input("Batch size", min_value=1, value=int(tr.get("batch_size", 8)))
    learning_rate = cols[1].number_input(
        "Learning rate",
        min_value=0.0,
        format="%.2e",
        step=1e-7,
        value=float(tr.get("learning_rate", 5e-7)),
    )
    epochs = cols[2].number_input("Epochs", min_value=0.0, step=0.5, value=float(tr.get("epochs", 1)))
    training_errors = st.container()

    st.markdown("**Evaluation**")
    ev = base.get("evaluation", {})
    cols = st.columns([3, 1])
    benchmarks = cols[0].multiselect(
        "Benchmarks", list(run_form.BENCHMARKS), default=list(ev.get("benchmarks", ["alpaca_eval"]))
    )
    limit = cols[1].number_input("Prompts per benchmark", min_value=1, value=int(ev.get("limit") or 32))
    evaluation_errors = st.container()

    form_config = run_form.merge(
        base,
        {
            "name": name,
            "model": model,
            "iterations": int(iterations),
            "seed": int(seed),
            "self_instruct": {"num_instructions": int(num_instructions)},
            "generation": {
                "num_candidates": int(num_candidates),
                "temperature": float(temperature),
                "max_new_tokens": int(max_new_tokens),
            },
            "ranker": {"kind": ranker},
            "training": {
                "batch_size": int(batch_size),
                "learning_rate": float(learning_rate),
                "epochs": float(epochs),
            },
            "evaluation": {"benchmarks": benchmarks, "limit": int(limit)},
        },
    )
    form_config["objective"] = run_form.objective_section(objective, hp, defaults)
    verdict = check("run", form_config)
    for slot, prefixes in (
        (all_errors, ()),
        (basics_errors, ("name", "model", "iterations", "seed")),
        (objective_errors, ("objective",)),
        (sampling_errors, ("self_instruct", "generation", "ranker")),
        (training_errors, ("training",)),
        (evaluation_errors, ("evaluation",)),
    ):
        with slot:
            show_errors(verdict.errors, *prefixes)
    launch_button("form", "run", form_config, verdict, "Launch run", ":material/rocket_launch:")

# ----------------------------------------------------------------------------- YAML

with yaml_tab:
    st.caption("The full run config (see the README's Configuration section). Unknown keys are rejected.")
    text = st.text_area("Run config (YAML)", value=run_form.to_yaml(base), height=420, key="yaml_text")
    try:
        yaml_config: dict[str, Any] | None = run_form.parse_yaml(text)
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        yaml_config, yaml_verdict = None, Check()
    else:
        yaml_verdict = check("run", yaml_config)
        show_errors(yaml_verdict.errors)
    launch_button("yaml", "run", yaml_config, yaml_verdict, "Launch from YAML", ":material/rocket_launch:")

# ----------------------------------------------------------------------------- sweep

with sweep_tab:
    st.caption(
        "One run per grid point (cartesian product) of the YAML tab's config; results land in "
        "Compare → Sweep heatmap."
    )
    cols = st.columns([2, 1])
    sweep_name = cols[0].text_input("Sweep name", value=f"{base.get('name', 'run')}-grid")
    max_concurrent = cols[1].number_input("Runs at once", min_value=1, value=2)
    grid_text = st.text_area(
        "Grid (YAML: dotted config path → list of values)", value=run_form.DEFAULT_GRID, height=120
    )
    try:
        sweep_body: dict[str, Any] | None = {
            "name": sweep_name,
            "base_config": run_form.parse_yaml(text, what="run config (YAML tab)"),
            "grid": run_form.parse_yaml(grid_text, what="grid"),
            "max_concurrent": int(max_concurrent),
        }
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        sweep_body, sweep_verdict = None, Check()
    else:
        sweep_verdict = check("sweep", sweep_body)
        show_errors(sweep_verdict.errors)
    launch_button("sweep", "sweep", sweep_body, sweep_verdict, "Launch sweep", ":material/grid_on:")
