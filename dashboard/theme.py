"""Colours and labels shared by every chart and page, so that a quantity looks the same everywhere.

Chosen responses are always green and rejected ones red (the paper's convention); runs get
colours from one qualitative palette in a stable order.
"""

from __future__ import annotations

CHOSEN = "#2e9e4f"
REJECTED = "#d64541"
NEUTRAL = "#5b6b7c"
ACCENT = "#3b6fd8"

# Plotly's "Plotly" qualitative palette minus its red and green, which mean chosen/rejected here.
RUN_PALETTE = (
    "#636efa",
    "#ab63fa",
    "#ffa15a",
    "#19d3f3",
    "#ff6692",
    "#b6e880",
    "#ff97ff",
    "#fecb52",
    "#8c564b",
    "#17becf",
)

# Plain symbols (present in common text fonts, unlike emoji on minimal Linux installs).
STATUS_ICONS = {
    "queued": "…",
    "pending": "·",
    "running": "▶",
    "succeeded": "✓",
    "skipped": "↷",
    "failed": "✗",
    "cancelled": "■",
}
STATUS_COLORS = {"succeeded": CHOSEN, "failed": REJECTED, "running": ACCENT, "cancelled": "#c77c02"}

# Axis titles carry units: log-probs are summed token log-probs in nats, lengths in chars or tokens.
LABELS = {
    "avg_length": "Average response length (chars)",
    "win_rate": "Win rate (%)",
    "lc_win_rate": "LC win rate (%)",
    "reward": "Reward β·(log πθ − log πref) (nats)",
    "s_ref": "s_ref = log πref(y_w) − log πref(y_l) (nats)",
    "gradient_weight": "Gradient weight w (the run objective's; see /objectives)",
    "logp": "Summed log-prob log π(y) (nats)",
    "length_tokens": "Response length (tokens)",
    "length_chars": "Response length (chars)",
    "step": "Training step",
    "count": "Pairs",
}


HYPERPARAMETER_SYMBOLS = {"beta": "β", "alpha": "α", "lambda_": "λ", "gamma": "γ"}


def hyperparameter_label(name: str) -> str:
    """'λ (lambda_)': the paper's symbol and the config key users type in YAML."""
    symbol = HYPERPARAMETER_SYMBOLS.get(name)
    return f"{symbol} ({name})" if symbol else name


def run_color(index: int) -> str:
    """The colour of the `index`-th run of a chart (cycles through the palette)."""
    return RUN_PALETTE[index % len(RUN_PALETTE)]


def status_label(status: str) -> str:
    """'✅ succeeded' style label for tables."""
    return f"{STATUS_ICONS.get(status, '?')} {status}"
