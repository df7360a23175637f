"""Plotly figures for the dashboard: pure functions from plain data to `go.Figure`.

Nothing here talks to the API or to Streamlit, so every chart can be unit-tested by reading
the traces back. Inputs are lists or pandas DataFrames with documented columns; an empty
input gives a figure that says so instead of raising. Conventions: chosen = green,
rejected = red, one colour per run, units in every axis title (see `dashboard.theme`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard import theme

TEMPLATE = "plotly_white"
#: 95% normal interval half-width in standard errors: every rate's error bar is ±Z_95·SE.
Z_95 = 1.96


def _layout(fig: go.Figure, *, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title, "x": 0.0, "xanchor": "left"},
        xaxis_title=x,
        yaxis_title=y,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1.0},
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
    )
    return fig


def empty_figure(message: str, *, title: str = "") -> go.Figure:
    """A blank figure carrying `message` in the middle: what a chart shows when there is no data."""
    fig = go.Figure()
    fig.add_annotation(
        text=message,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font={"size": 14, "color": theme.NEUTRAL},
    )
    fig.update_layout(
        template=TEMPLATE, title={"text": title, "x": 0.0}, xaxis_visible=False, yaxis_visible=False
    )
    return fig


def _finite(values: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    """Float array without None/NaN/inf (the API sends None where a value is undefined)."""
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def _shared_bins(values: np.ndarray, bins: int, value_range: tuple[float, float] | None = None) -> dict:
    """Explicit bin edges so overlaid histograms (chosen vs rejected, agree vs disagree) line up."""
    lo, hi = value_range if value_range is not None else (float(values.min()), float(values.max()))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    size = (hi - lo) / bins
    # Plotly's bins are half-open [a, a + size); ending half a bin past `hi` keeps the maximum in.
    return {"start": lo, "end": hi + size / 2, "size": size}


# ----------------------------------------------------------------------------- win rate vs length


def win_rate_vs_length(frame: pd.DataFrame, *, title: str = "Win rate vs average length") -> go.Figure:
    """Paper Figs. 2–3: one line per run through its iterations, x = avg length, y = win rate.

    `frame` columns: run (label), iteration (int), avg_length (chars), win_rate and
    lc_win_rate (percent, either may be NaN). LC win rate is the solid line, raw win rate
    the dashed one in the same colour; each point is labelled with its iteration, or with
    `label` (e.g. "θ_2") when the frame has that column. With win_rate_se / lc_win_rate_se
    columns each point carries its 95% interval, ±1.96·SE, as a vertical error bar; with an
    lc_unavailable_reason column, the reasons of the points without LC are written on the chart.
    """
    needed = {"run", "iteration", "avg_length", "win_rate", "lc_win_rate"}
    data = frame.dropna(subset=["avg_length"]) if needed <= set(frame.columns) else frame.iloc[0:0]
    if data.empty:
        return empty_figure("No evaluated iterations yet.", title=title)
    fig = go.Figure()
    for index, (run, rows) in enumerate(data.groupby("run", sort=False)):
        rows = rows.sort_values("iteration")
        color = theme.run_color(index)
        labels = rows["label"].tolist() if "label" in rows else [f"it {int(k)}" for k in rows["iteration"]]
        _add_rate_traces(
            fig,
            rows,
            "avg_length",
            ("lc_win_rate", "LC"),
            ("win_rate", "raw"),
            run,
            color,
            labels,
            hover="length %{{x:.0f}} chars<br>{suffix} %{{y:.1f}}%",
        )
    fig.add_annotation(**_INTERVAL_NOTE)
    missing = _lc_unavailable_note(data)
    if missing:
        _corner_note(fig, missing, font={"size": 11, "color": theme.NEUTRAL}, bgcolor="rgba(255,255,255,0.8)")
    return _layout(fig, title=title, x=theme.LABELS["avg_length"], y=theme.LABELS["win_rate"])


def _lc_unavailable_note(data: pd.DataFrame) -> str | None:
    """ "LC n/a: <reason>; …" for the points without an LC win rate, from the API's reasons."""
    if "lc_unavailable_reason" not in data:
        return None
    reasons = data.loc[data["lc_win_rate"].isna(), "lc_unavailable_reason"].dropna().unique()
    return "LC n/a: " + "; ".join(str(r) for r in reasons[:2]) if len(reasons) else None


_INTERVAL_NOTE = {
    "text": "bars: 95% interval (±1.96·SE)",
    "x": 0.0,
    "y": -0.16,
    "xref": "paper",
    "yref": "paper",
    "showarrow": False,
    "xanchor": "left",
    "font": {"size": 11, "color": theme.NEUTRAL},
}


def _add_rate_traces(
    fig: go.Figure,
    rows: pd.DataFrame,
    x: str,
    lc: tuple[str, str],
    raw: tuple[str, str],
    run: object,
    color: str,
    labels: list[str],
    *,
    hover: str,
) -> None:
    """One run's LC (solid) and raw (dashed) rate against `x`, each with its 95% interval.

    `lc`/`raw`: (column, legend suffix); the SE column is `<column>_se`. `hover` is a Plotly
    hover template in which `{suffix}` names the series.
    """
    for (column, suffix), dash, symbol in ((lc, "solid", "circle"), (raw, "dash", "circle-open")):
        if rows[column].isna().all():
            continue
        fig.add_trace(
            go.Scatter(
                x=rows[x].tolist(),
                y=rows[column].tolist(),
                text=labels,
                mode="lines+markers+text",
                textposition="top center",
                name=f"{run} · {suffix}",
                line={"color": color, "dash": dash},
                marker={"symbol": symbol, "size": 9},
                legendgroup=str(run),
                error_y=_interval(rows, f"{column}_se", color),
                hovertemplate=f"{run}<br>%{{text}}<br>" + hover.format(suffix=suffix) + "<extra></extra>",
            )
        )


def _interval(rows: pd.DataFrame, se_column: str, color: str) -> dict | None:
    """Plotly error_y of ±1.96·SE from `se_column` (None when the frame has no SEs)."""
    if se_column not in rows:
        return None
    se = rows[se_column].astype(float)
    return {"type": "data", "array": (Z_95 * se).tolist(), "visible": True, "color": color, "thickness": 1}


# ----------------------------------------------------------------------------- length exploitation

#: A policy "exploits length" when its answers grew by more than this (percent of θ_0's length)…
LENGTH_GROWTH_PCT = 10.0


def length_exploitation_flag(
    length_change_pct: float, lc_change: float | None, lc_change_se: float | None
) -> bool | None:
    """The rule of docs/dashboard.md: True when the average answer length grew by more than
    LENGTH_GROWTH_PCT percent over θ_0 while the LC win rate did not rise beyond noise
    (LC change ≤ 1.96·SE: inside its 95% interval, or down). None when LC or its SE is
    unavailable (the rule cannot be decided), False otherwise."""
    if not (length_change_pct > LENGTH_GROWTH_PCT):
        return False if math.isfinite(length_change_pct) else None
    if (
        lc_change is None
        or lc_change_se is None
        or not (math.isfinite(lc_change) and math.isfinite(lc_change_se))
    ):
        return None
    return lc_change <= Z_95 * lc_change_se


def length_exploitation(
    deltas: pd.DataFrame, *, title: str = "Length vs LC win rate, change from θ_0"
) -> go.Figure:
    """Paper Figs. 2–3 as changes: x = Δ average length (% of θ_0's), y = Δ LC win rate (points)
    with its 95% interval, one line per run through θ_1, θ_2, …; the raw win rate's change dashed.
    Points the rule flags (`length_exploitation_flag`) get a red ring and "length ↑, LC not".

    `deltas` columns: derived.deltas_from_base's (run, policy_index, length_change_pct,
    lc_change, lc_change_se, win_rate_change, win_rate_change_se).
    """
    if deltas.empty or deltas["length_change_pct"].isna().all():
        return empty_figure("Needs θ_0 and at least one trained policy evaluated.", title=title)
    fig = go.Figure()
    for index, (run, rows) in enumerate(deltas.groupby("run", sort=False)):
        rows = rows.sort_values("policy_index")
        color = theme.run_color(index)
        labels = [f"θ_{int(j)}" for j in rows["policy_index"]]
        _add_rate_traces(
            fig,
            rows,
            "length_change_pct",
            ("lc_change", "Δ LC"),
            ("win_rate_change", "Δ raw"),
            run,
            color,
            labels,
            hover="Δ length %{{x:.0f}}%<br>{suffix} %{{y:.1f}} pts",
        )
        flags = [
            length_exploitation_flag(r.length_change_pct, r.lc_change, r.lc_change_se)
            for r in rows.itertuples()
        ]
        flagged = rows[[flag is True for flag in flags]]
        if not flagged.empty:
            fig.add_trace(
                go.Scatter(
                    x=flagged["length_change_pct"].tolist(),
                    y=flagged["lc_change"].tolist(),
                    mode="markers+text",
                    text=["length ↑, LC not"] * len(flagged),
                    textposition="bottom center",
                    name=f"{run} · length exploitation",
                    marker={
                        "symbol": "circle-open",
                        "size": 20,
                        "color": theme.REJECTED,
                        "line": {"width": 3},
                    },
                    legendgroup=str(run),
                )
            )
    fig.add_hline(y=0.0, line={"color": theme.NEUTRAL, "width": 1, "dash": "dot"})
    fig.add_vline(x=LENGTH_GROWTH_PCT, line={"color": theme.REJECTED, "width": 1, "dash": "dot"})
    fig.add_annotation(**_INTERVAL_NOTE)
    return _layout(fig, title=title, x="Δ average length vs θ_0 (%)", y="Δ win rate vs θ_0 (points)")


def paired_differences(
    items: Sequence[dict], *, title: str = "Run differences on shared prompts"
) -> go.Figure:
    """Forest plot of paired win-rate differences (GET /comparisons/paired items): one row per
    pair of runs, the difference with its 95% interval (±1.96·SE); grey when within noise."""
    shown = [i for i in items if i.get("difference") is not None]
    if not shown:
        return empty_figure("No pair of these runs shares judged prompts.", title=title)
    labels = [f"#{i['run_b']} − #{i['run_a']}" for i in shown]
    colors = [theme.NEUTRAL if i["within_noise"] else theme.ACCENT for i in shown]
    fig = go.Figure(
        go.Scatter(
            x=[i["difference"] for i in shown],
            y=labels,
            mode="markers",
            marker={"color": colors, "size": 10},
            error_x={"type": "data", "array": [Z_95 * i["difference_se"] for i in shown], "visible": True},
            customdata=[
                [i["n_shared"], "within noise" if i["within_noise"] else "beyond noise"] for i in shown
            ],
            hovertemplate="%{y}: %{x:.1f} pts<br>n = %{customdata[0]} shared prompts<br>%{customdata[1]}"
            "<extra></extra>",
            name="b − a",
        )
    )
    fig.add_vline(x=0.0, line={"color": theme.NEUTRAL, "dash": "dash"})
    fig.add_annotation(**_INTERVAL_NOTE)
    return _layout(fig, title=title, x="Win rate difference (points, 95% interval)", y="Runs")


# ----------------------------------------------------------------------------- training curves


def reward_trajectories(
    chosen: pd.DataFrame, rejected: pd.DataFrame, *, title: str = "Chosen / rejected rewards"
) -> go.Figure:
    """Paper Fig. 4: β·(log πθ − log πref) of chosen (green) and rejected (red) over training steps.

    Both frames have columns iteration, step, value. Each iteration is its own pair of lines;
    later iterations are drawn more opaque so the trend across iterations reads left to right.
    """
    if chosen.empty and rejected.empty:
        return empty_figure("No training steps logged yet.", title=title)
    iterations = sorted(
        set(chosen.get("iteration", pd.Series(dtype=int)))
        | set(rejected.get("iteration", pd.Series(dtype=int)))
    )
    fig = go.Figure()
    for position, iteration in enumerate(iterations):
        opacity = 0.35 + 0.65 * (position + 1) / len(iterations)
        for role, frame, color in (("chosen", chosen, theme.CHOSEN), ("rejected", rejected, theme.REJECTED)):
            rows = frame[frame["iteration"] == iteration].sort_values("step") if not frame.empty else frame
            if rows.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=rows["step"].tolist(),
                    y=rows["value"].tolist(),
                    mode="lines",
                    name=f"{role} · it {int(iteration)}",
                    line={"color": color},
                    opacity=opacity,
                    legendgroup=role,
                )
            )
    fig.add_hline(y=0.0, line={"color": theme.NEUTRAL, "width": 1, "dash": "dot"})
    return _layout(fig, title=title, x=theme.LABELS["step"], y=theme.LABELS["reward"])


def thin(frame: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """At most `max_points` evenly spaced rows, always keeping the first and the last.

    The API already downsamples a metric's history; this caps what a browser draws when many
    runs are overlaid.
    """
    if max_points < 2:
        raise ValueError(f"max_points: must be at least 2, got {max_points}")
    if len(frame) <= max_points:
        return frame
    keep = np.unique(np.linspace(0, len(frame) - 1, max_points).round().astype(int))
    return frame.iloc[keep]


def metric_curves(
    frame: pd.DataFrame,
    *,
    title: str,
    y_title: str,
    x_title: str = theme.LABELS["step"],
    max_points_per_series: int = 500,
) -> go.Figure:
    """One line per series: `frame` columns series (legend label), step, value.

    Series keep their first-seen order and colour; each is thinned to `max_points_per_series`.
    """
    if frame.empty:
        return empty_figure("No values recorded yet.", title=title)
    fig = go.Figure()
    for index, (series, rows) in enumerate(frame.groupby("series", sort=False)):
        rows = thin(rows.sort_values("step"), max_points_per_series)
        fig.add_trace(
            go.Scatter(
                x=rows["step"].tolist(),
                y=rows["value"].tolist(),
                mode="lines+markers" if len(rows) < 30 else "lines",
                name=str(series),
                line={"color": theme.run_color(index)},
            )
        )
    return _layout(fig, title=title, x=x_title, y=y_title)


# ----------------------------------------------------------------------------- pair diagnostics


def agreement_rate(s_ref: Sequence[float] | np.ndarray) -> float:
    """P(s_ref > 0): how often the reference model already prefers the judge's choice (NaN if empty)."""
    values = _finite(s_ref)
    return float((values > 0).mean()) if values.size else math.nan


def s_ref_histogram(
    s_ref: Sequence[float] | np.ndarray, *, bins: int = 30, title: str = "s_ref distribution"
) -> go.Figure:
    """Paper Fig. 6: histogram of s_ref, agreeing pairs (s_ref > 0) green, the rest red.

    The agreement rate P(s_ref > 0) and the pair count are written on the chart.
    """
    values = _finite(s_ref)
    if values.size == 0:
        return empty_figure("No pairs with reference log-probs.", title=title)
    xbins = _shared_bins(values, bins)
    fig = go.Figure()
    for name, part, color in (
        ("reference agrees (s_ref > 0)", values[values > 0], theme.CHOSEN),
        ("reference disagrees (s_ref ≤ 0)", values[values <= 0], theme.REJECTED),
    ):
        fig.add_trace(
            go.Histogram(
                x=part.tolist(), xbins=xbins, name=name, marker_color=color, opacity=0.8, autobinx=False
            )
        )
    fig.add_vline(x=0.0, line={"color": theme.NEUTRAL, "dash": "dash"})
    _corner_note(
        fig,
        f"agreement P(s_ref > 0) = {100 * agreement_rate(values):.1f}% (n = {values.size})",
        bgcolor="rgba(255,255,255,0.8)",
    )
    fig.update_layout(barmode="stack")
    return _layout(fig, title=title, x=theme.LABELS["s_ref"], y=theme.LABELS["count"])


def gradient_weight_histogram(
    weights: Sequence[float] | np.ndarray, *, bins: int = 20, title: str = "Gradient weight distribution"
) -> go.Figure:
    """Histogram of per-pair gradient weights with the mean marked.

    The logistic objectives' weights lie in [0, 1] (AIPO Eq. 8 for aipo), which is then the fixed
    axis; IPO's can leave it (docs/objectives.md), and then the axis spans the data.
    """
    values = _finite(weights)
    if values.size == 0:
        return empty_figure("No gradient weights available.", title=title)
    unit = bool(values.min() >= 0.0 and values.max() <= 1.0)
    span = (0.0, 1.0) if unit else (float(values.min()), float(values.max()))
    fig = go.Figure(
        go.Histogram(
            x=values.tolist(),
            xbins=_shared_bins(values, bins, span),
            autobinx=False,
            marker_color=theme.ACCENT,
            name="pairs",
        )
    )
    mean = float(values.mean())
    fig.add_vline(x=mean, line={"color": theme.NEUTRAL, "dash": "dash"})
    fig.add_annotation(
        text=f"mean w = {mean:.3f} (n = {values.size})",
        x=mean,
        y=1.0,
        yref="paper",
        showarrow=False,
        xanchor="left",
        yanchor="bottom",
    )
    if unit:
        fig.update_xaxes(range=[0.0, 1.0])
    return _layout(fig, title=title, x=theme.LABELS["gradient_weight"], y=theme.LABELS["count"])


def _corner_note(fig: go.Figure, text: str, **style: object) -> None:
    """A summary statistic in the plot's top-right corner."""
    fig.add_annotation(
        text=text, x=0.99, y=0.98, xref="paper", yref="paper", xanchor="right", showarrow=False, **style
    )


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def length_vs_logprob(pairs: pd.DataFrame, *, title: str = "Response length vs log-prob") -> go.Figure:
    """Paper Fig. 5: token length vs summed reference log-prob, chosen green, rejected red.

    `pairs` columns: chosen_length, rejected_length (tokens), ref_chosen_logps,
    ref_rejected_logps (nats); optional id for hover. Pearson r over both roles is annotated.
    """
    needed = ["chosen_length", "rejected_length", "ref_chosen_logps", "ref_rejected_logps"]
    if pairs.empty or not set(needed) <= set(pairs.columns):
        return empty_figure("No pairs to plot.", title=title)
    fig = go.Figure()
    xs, ys = [], []
    for role, color in (("chosen", theme.CHOSEN), ("rejected", theme.REJECTED)):
        rows = pairs[[f"{role}_length", f"ref_{role}_logps"]].astype(float).dropna()
        xs.append(rows.iloc[:, 0].to_numpy())
        ys.append(rows.iloc[:, 1].to_numpy())
        fig.add_trace(
            go.Scatter(
                x=rows.iloc[:, 0].tolist(),
                y=rows.iloc[:, 1].tolist(),
                mode="markers",
                name=role,
                marker={"color": color, "size": 7, "opacity": 0.7},
                hovertemplate=f"{role}<br>%{{x}} tokens<br>log π = %{{y:.1f}}<extra></extra>",
            )
        )
    r = _pearson(np.concatenate(xs), np.concatenate(ys))
    if math.isfinite(r):
        _corner_note(fig, f"Pearson r = {r:.2f}")
    return _layout(fig, title=title, x=theme.LABELS["length_tokens"], y=theme.LABELS["logp"])


def length_histograms(
    chosen: Sequence[float],
    rejected: Sequence[float],
    *,
    unit: str = "chars",
    bins: int = 30,
    title: str = "Chosen / rejected lengths",
) -> go.Figure:
    """Overlaid length histograms of chosen (green) and rejected (red) responses, same bins."""
    if unit not in ("chars", "tokens"):
        raise ValueError(f"unit: expected 'chars' or 'tokens', got {unit!r}")
    chosen_v, rejected_v = _finite(chosen), _finite(rejected)
    if chosen_v.size == 0 and rejected_v.size == 0:
        return empty_figure("No pairs to plot.", title=title)
    xbins = _shared_bins(np.concatenate([chosen_v, rejected_v]), bins)
    fig = go.Figure()
    for name, values, color in (("chosen", chosen_v, theme.CHOSEN), ("rejected", rejected_v, theme.REJECTED)):
        mean = f"{values.mean():.0f}" if values.size else "–"
        fig.add_trace(
            go.Histogram(
                x=values.tolist(),
                xbins=xbins,
                autobinx=False,
                marker_color=color,
                opacity=0.6,
                name=f"{name} (mean {mean})",
            )
        )
    fig.update_layout(barmode="overlay")
    return _layout(fig, title=title, x=theme.LABELS[f"length_{unit}"], y=theme.LABELS["count"])


# ----------------------------------------------------------------------------- sweeps


def _mean_se(errors: pd.Series) -> float:
    """SE of the mean of k independent results with these SEs (NaN if any is undefined)."""
    if errors.empty or errors.isna().any():
        return math.nan
    return math.sqrt(float((errors**2).sum())) / len(errors)


def sweep_heatmap(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    z: str = "lc_win_rate",
    z_title: str = "LC win rate (%)",
    se: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """Hyperparameter grid (e.g. alpha × lambda_) coloured by a result; duplicates are averaged.

    `frame` has one row per run with columns `x`, `y` and `z` (and `se`, z's standard error, when
    given: each cell then reads "z ± SE", the SE of a mean of k runs being √ΣSE²/k); runs without a
    result (NaN z) leave their cell empty. Axis values are sorted and shown as categories so a grid
    like {0.03, 0.05, 0.07} is evenly spaced.
    """
    title = title or f"{z_title} over {x} × {y}"
    if frame.empty or not {x, y, z} <= set(frame.columns) or frame[z].isna().all():
        return empty_figure("No finished sweep points yet.", title=title)
    shown = frame[frame[z].notna()]
    grid = shown.pivot_table(index=y, columns=x, values=z, aggfunc="mean").sort_index().sort_index(axis=1)
    cells = grid.to_numpy(dtype=float)
    text = [["" if math.isnan(v) else f"{v:.1f}" for v in row] for row in cells]
    if se is not None:
        errors = (
            shown.pivot_table(index=y, columns=x, values=se, aggfunc=_mean_se, dropna=False)
            .reindex(index=grid.index, columns=grid.columns)
            .to_numpy(dtype=float)
        )
        text = [
            [t if not t or math.isnan(e) else f"{t} ± {e:.1f}" for t, e in zip(t_row, e_row, strict=True)]
            for t_row, e_row in zip(text, errors, strict=True)
        ]
    fig = go.Figure(
        go.Heatmap(
            z=[[None if math.isnan(v) else v for v in row] for row in cells],
            x=[str(v) for v in grid.columns],
            y=[str(v) for v in grid.index],
            text=text,
            colorscale="Viridis",
            colorbar={"title": {"text": z_title}},
            texttemplate="%{text}",
            hovertemplate=f"{x} = %{{x}}<br>{y} = %{{y}}<br>{z_title} %{{text}}<extra></extra>",
        )
    )
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return _layout(fig, title=title, x=x, y=y)
