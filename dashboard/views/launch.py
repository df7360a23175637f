"""Launch: a run config as a form or as YAML, or a sweep over a grid; the API's 422s shown inline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from dashboard import api_client, run_form, session, theme, ui

st.title("Launch")
if not session.can_write():
    st.info(ui.READ_ONLY_HELP, icon=":material/visibility:")
    st.stop()

with ui.api_guard():
    catalog = api_client.objective_catalog()
    source_id = ui.query_int("from")
    source = api_client.get_run(source_id)["config"] if source_id is not None else None
base = run_form.starting_config(source)
if source_id is not None:
    st.caption(f"Starting from the config of run #{source_id}.")

# Outcome of the last submission, kept across the rerun that redraws the form with its errors.
launched = st.session_state.pop("launch_result", None)
if launched:
    kind, item = launched
    if kind == "run":
        st.success(f"Run #{item['id']} **{item['name']}** launched.", icon=":material/rocket_launch:")
        st.page_link(
            ui.RUN_DETAIL_PAGE, label="Open it", icon=":material/biotech:", query_params={"run": item["id"]}
        )
    else:
        st.success(
            f"Sweep #{item['id']} **{item.get('name', '')}** created with {len(item.get('runs', []))} runs."
        )
        st.page_link(ui.COMPARE_PAGE, label="Compare its runs", icon=":material/stacked_line_chart:")


def show_errors(origin: str, *prefixes: str) -> None:
    """The stored 422 field errors of `origin` under these config paths (all of them if none given)."""
    errors: list[api_client.FieldError] = st.session_state.get(f"errors_{origin}", [])
    shown = run_form.errors_under(errors, *prefixes) if prefixes else errors
    for error in shown:
        st.error(f"`{error.path or 'config'}`: {error.message}", icon=":material/error:")


def submit(origin: str, send: Callable[[], dict[str, Any]], kind: str) -> None:
    """Send a launch; 422 → remember the field errors for `origin` and redraw; success → show it."""
    st.session_state.pop(f"errors_{origin}", None)
    try:
        item = send()
    except api_client.ApiValidationError as exc:
        st.session_state[f"errors_{origin}"] = list(exc.field_errors)
    except api_client.ApiError as exc:
        ui.show_api_error(exc)
        return
    else:
        st.session_state["launch_result"] = (kind, item)
    st.rerun()


form_tab, yaml_tab, sweep_tab = st.tabs(["Form", "YAML", "Sweep"])

# ----------------------------------------------------------------------------- form

with form_tab:
    show_errors("form")
    objectives = sorted(catalog)
    base_objective = (base.get("objective") or {}).get("name", "aipo")
    objective = st.selectbox(
        "Objective",
        objectives,
        index=objectives.index(base_objective) if base_objective in objectives else 0,
        key="form_objective",
    )
    with st.form("launch_form"):
        cols = st.columns([2, 2, 1, 1])
        name = cols[0].text_input("Name", value=str(base.get("name", "")))
        model = cols[1].text_input(
            "Model",
            value=str(base.get("model", "")),
            help="hub id, local path, or " + " / ".join(run_form.MODEL_PRESETS),
        )
        iterations = cols[2].number_input("Iterations", min_value=1, value=int(base.get("iterations", 2)))
        seed = cols[3].number_input("Seed", min_value=0, value=int(base.get("seed", 0)))
        show_errors("form", "name", "model", "iterations", "seed")

        st.markdown("**Objective hyperparameters**")
        defaults = run_form.hyperparameter_defaults(objective, base, catalog)
        hp_cols = st.columns(max(len(defaults), 1))
        hp = {
            k: col.number_input(
                theme.hyperparameter_label(k), value=float(v), format="%g", key=f"hp_{objective}_{k}"
            )
            for col, (k, v) in zip(hp_cols, defaults.items(), strict=False)
        }
        show_errors("form", "objective")

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
        show_errors("form", "self_instruct", "generation", "ranker")

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
        show_errors("form", "training")

        st.markdown("**Evaluation**")
        ev = base.get("evaluation", {})
        cols = st.columns([3, 1])
        benchmarks = cols[0].multiselect(
            "Benchmarks", list(run_form.BENCHMARKS), default=list(ev.get("benchmarks", ["alpaca_eval"]))
        )
        limit = cols[1].number_input("Prompts per benchmark", min_value=1, value=int(ev.get("limit") or 32))
        show_errors("form", "evaluation")

        if st.form_submit_button("Launch run", icon=":material/rocket_launch:", type="primary"):
            config = run_form.merge(
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
            config["objective"] = run_form.objective_section(objective, hp, defaults)
            submit("form", lambda: api_client.create_run(config), "run")

# ----------------------------------------------------------------------------- YAML

with yaml_tab:
    st.caption("The full run config (DESIGN.md §3). Unknown keys are rejected by the API.")
    text = st.text_area("Run config (YAML)", value=run_form.to_yaml(base), height=420, key="yaml_text")
    show_errors("yaml")
    if st.button("Launch from YAML", icon=":material/rocket_launch:", type="primary"):
        try:
            config = run_form.parse_yaml(text)
        except ValueError as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            submit("yaml", lambda: api_client.create_run(config), "run")

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
    show_errors("sweep")
    if st.button("Launch sweep", icon=":material/grid_on:", type="primary"):
        try:
            body = {
                "name": sweep_name,
                "base_config": run_form.parse_yaml(text, what="run config (YAML tab)"),
                "grid": run_form.parse_yaml(grid_text, what="grid"),
                "max_concurrent": int(max_concurrent),
            }
        except ValueError as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            submit("sweep", lambda: api_client.create_sweep(body), "sweep")
