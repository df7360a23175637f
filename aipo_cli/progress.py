"""How `aipo run --local`, `aipo demo` and `aipo submit --wait` show a run's progress.

One `ProgressReporter` interface, two implementations, chosen by whether the console writes to a
terminal (`sys.stdout.isatty()` for the default console):

* `LiveReporter` (a terminal): rich's live bars, overall and for the current stage, with a line
  printed above them as each stage ends;
* `PlainReporter` (a CI log, `nohup`, a pipe): no bar, which would print nothing readable there,
  but one line per stage transition, flushed at once:
  ``[  2:41] iter 0  rank           succeeded   0:38  8 pairs, agreement 0.62``
  (time since following began, iteration, stage, status, the stage's duration, its key metric).
  A long stage also gets a `…` line with its progress when that changed, at most once a minute,
  so a log (and a CI job's inactivity timeout) sees a stage that takes many minutes move.

Callers report transitions (`StageEvent`: a stage started, ended, was skipped or failed) and, for
the live bars only, progress inside a stage (`update`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

ENDED = frozenset({"succeeded", "skipped", "failed", "cancelled"})


@dataclass(frozen=True)
class StageEvent:
    """A stage of iteration `iteration` reached `status`; `elapsed_s` is how long it ran (when it
    ended), `metrics` its summary (for `key_metric`), `error` why it failed."""

    iteration: int
    stage: str
    status: str
    elapsed_s: float | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def key_metric(stage: str, metrics: Mapping[str, Any], benchmark: str = "alpaca_eval") -> str:
    """The one figure that says how a finished stage went, from its summary metrics."""
    if metrics.get("skipped"):
        return f"skipped: {metrics['skipped']}"
    m = {key: _number(metrics, key) for key in metrics}
    parts: list[str] = []
    if stage == "self_instruct" and m.get("instructions") is not None:
        parts.append(f"{m['instructions']:.0f} instructions")
        if m.get("from_pool"):
            parts.append(f"{m['from_pool']:.0f} from the pool")
    elif stage == "generate" and m.get("prompts") is not None:
        parts.append(f"{m['prompts']:.0f} prompts")
        if m.get("unfinished") is not None:
            parts.append(f"{m['unfinished']:.0f} candidates cut off")
    elif stage == "rank" and m.get("pairs") is not None:
        parts.append(f"{m['pairs']:.0f} pairs")
        if m.get("agreement_rate") is not None:
            parts.append(f"agreement {m['agreement_rate']:.2f}")
    elif stage == "train":
        loss = m.get("loss") if m.get("loss") is not None else m.get("train_loss")
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if m.get("steps") is not None:
            parts.append(f"{m['steps']:.0f} steps")
        if m.get("steps") and m.get("learning_rate_max") == 0:
            parts.append("learning rate 0 at every step: the policy did not change")
    elif stage == "evaluate" and m.get(f"{benchmark}/win_rate") is not None:
        rate, se = m[f"{benchmark}/win_rate"], m.get(f"{benchmark}/win_rate_se")
        parts.append(f"{benchmark} win rate {rate:.1f}" + (f" ± {se:.1f}" if se is not None else "") + " %")
    return ", ".join(parts)


#: The summary keys `key_metric` reads, per stage (what to ask the API for).
KEY_METRICS: dict[str, tuple[str, ...]] = {
    "self_instruct": ("instructions", "from_pool"),
    "generate": ("prompts", "unfinished"),
    "rank": ("pairs", "agreement_rate"),
    "train": ("train_loss", "steps"),
    "evaluate": ("win_rate", "win_rate_se"),  # prefixed with the benchmark
}


def clock(seconds: float | None) -> str:
    """m:ss (h:mm:ss past an hour); blank when unknown."""
    if seconds is None:
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressReporter:
    """What a run follower calls; see the module docstring. Use as a context manager."""

    def __init__(self, console: Console, *, total_stages: int | None = None, benchmark: str = "alpaca_eval"):
        self.console, self.total_stages, self.benchmark = console, total_stages, benchmark
        self.started = time.monotonic()
        self.ended_stages = 0

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transition(self, event: StageEvent) -> None:
        if event.status in ENDED:
            self.ended_stages += 1
        self._show(event)

    def update(self, fraction: float, message: str = "") -> None:
        """Progress inside the current stage (0..1) and what it is doing."""

    def set_total(self, total_stages: int) -> None:
        self.total_stages = total_stages

    def note(self, text: str) -> None:
        """A line that is not a transition (submitted, run finished)."""
        self.console.print(text, highlight=False)

    def close(self) -> None:
        """Stop any live display."""

    def line(self, event: StageEvent) -> str:
        """The plain line of a transition (PlainReporter prints it, LiveReporter when a stage ends)."""
        since = clock(time.monotonic() - self.started)
        detail = event.error if event.status == "failed" and event.error else self._metric(event)
        return (
            f"[{since:>7}] iter {event.iteration:<2} {event.stage:<14} {event.status:<10} "
            f"{clock(event.elapsed_s):>6}  {detail}"
        ).rstrip()

    def _metric(self, event: StageEvent) -> str:
        return key_metric(event.stage, event.metrics, self.benchmark) if event.status in ENDED else ""

    def _show(self, event: StageEvent) -> None:
        raise NotImplementedError


class PlainReporter(ProgressReporter):
    """One line per transition, written straight to the console's file and flushed: no bar, no
    wrapping at the console's width, nothing held back by buffering."""

    #: Least time between two lines about one stage's progress.
    PROGRESS_EVERY_S = 60.0

    def __init__(self, console: Console, *, total_stages: int | None = None, benchmark: str = "alpaca_eval"):
        super().__init__(console, total_stages=total_stages, benchmark=benchmark)
        self._running: StageEvent | None = None
        self._last_line = time.monotonic()
        self._last_progress: tuple[float, str] | None = None

    def _show(self, event: StageEvent) -> None:
        self._running = event if event.status == "running" else None
        self._last_progress = None
        self._write(self.line(event))

    def update(self, fraction: float, message: str = "") -> None:
        """A `…` line for the running stage when its progress changed and a minute has passed."""
        now = time.monotonic()
        if self._running is None or (fraction, message) == self._last_progress:
            return
        if now - self._last_line < self.PROGRESS_EVERY_S:
            return
        self._last_progress = (fraction, message)
        since, event = clock(now - self.started), self._running
        where = f"[{since:>7}] iter {event.iteration:<2} {event.stage:<14} {'…':<10}"
        self._write(f"{where} {fraction:>6.0%}  {message}".rstrip())

    def note(self, text: str) -> None:
        self._write(text)

    def _write(self, text: str) -> None:
        out: IO[str] = self.console.file
        out.write(text + "\n")
        out.flush()
        self._last_line = time.monotonic()


class LiveReporter(ProgressReporter):
    """rich live bars: the whole run (stages ended / all stages) and the current stage."""

    def __init__(self, console: Console, *, total_stages: int | None = None, benchmark: str = "alpaca_eval"):
        super().__init__(console, total_stages=total_stages, benchmark=benchmark)
        columns = (TextColumn("{task.description:<30}"), BarColumn(), TextColumn("{task.fields[note]}"))
        self._bars = Progress(*columns, TimeElapsedColumn(), console=console)
        self._overall: TaskID = self._bars.add_task("run", total=total_stages or 1, note="")
        self._current: TaskID = self._bars.add_task("waiting", total=1.0, note="")
        self._bars.start()

    def _show(self, event: StageEvent) -> None:
        if event.status in ENDED:
            self._bars.console.print(self.line(event), highlight=False)
            self._bars.update(self._overall, completed=self.ended_stages)
            self._bars.update(self._current, completed=0.0, note="")
        else:
            self._bars.update(
                self._current, description=f"iter {event.iteration}: {event.stage}", completed=0.0, note=""
            )

    def update(self, fraction: float, message: str = "") -> None:
        self._bars.update(self._current, completed=fraction, note=message[:60])

    def set_total(self, total_stages: int) -> None:
        super().set_total(total_stages)
        self._bars.update(self._overall, total=total_stages)

    def note(self, text: str) -> None:
        self._bars.console.print(text, highlight=False)

    def close(self) -> None:
        self._bars.stop()


def is_terminal(console: Console) -> bool:
    """Whether the console writes to a terminal (for `Console()`: `sys.stdout.isatty()`)."""
    isatty = getattr(console.file, "isatty", None)
    return bool(isatty and isatty())


def make_reporter(
    console: Console, *, total_stages: int | None = None, benchmark: str = "alpaca_eval"
) -> ProgressReporter:
    """Live bars on a terminal, one plain line per stage transition anywhere else."""
    kind = LiveReporter if is_terminal(console) else PlainReporter
    return kind(console, total_stages=total_stages, benchmark=benchmark)
