"""Sweeps: a base config times a grid of overrides, run with bounded concurrency.

Every grid point becomes a child run at creation (so the sweep page shows the whole grid), but
only `max_concurrent` of them are launched; `backend.lifecycle.launch_waiting_sweep_runs` starts
more whenever a child leaves the active set (the worker calls it when a run finishes, the API on
cancel), taking them from `runs_for_free_slots`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from aipo_core.config import RunConfig, with_overrides
from backend.store.models import Run, Sweep
from backend.store.runs import create_run

MAX_GRID_POINTS = 256
MAX_VALUES_PER_KEY = 64  # also the request schema's bound (backend.schemas.SweepCreate)


class GridPointError(ValueError):
    """A grid point that does not give a valid config; `errors` are pydantic-style dicts."""

    def __init__(self, point: dict[str, Any], errors: list[dict[str, Any]]) -> None:
        super().__init__(f"grid point {point}: {errors}")
        self.point = point
        self.errors = errors


def grid_size(grid: dict[str, Sequence[Any]]) -> int:
    """Number of grid points, by arithmetic: the product is never built to be counted.

    ValueError (naming the key) for an empty or over-long value list, or more than
    MAX_GRID_POINTS points: 8 keys × 64 values would otherwise be 2.8e14 points.
    """
    for key, values in grid.items():
        if not values:
            raise ValueError(f"grid.{key}: needs at least one value")
        if len(values) > MAX_VALUES_PER_KEY:
            raise ValueError(f"grid.{key}: {len(values)} values exceed the limit of {MAX_VALUES_PER_KEY}")
    size = math.prod(len(values) for values in grid.values())
    if size > MAX_GRID_POINTS:
        shape = " × ".join(str(len(values)) for values in grid.values())
        raise ValueError(f"grid: {shape} = {size} points exceed the limit of {MAX_GRID_POINTS}")
    return size


def expand_grid(grid: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product in the grid's key order: {"a": [1, 2], "b": [3]} → [{a:1,b:3}, {a:2,b:3}].

    The size is checked first (`grid_size`), so a refused grid costs no memory.
    """
    grid_size(grid)
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _child_name(base_name: str, point: dict[str, Any]) -> str:
    label = ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())
    return f"{base_name} [{label}]"[:200]


def child_configs(base: RunConfig, grid: dict[str, Sequence[Any]]) -> list[tuple[dict[str, Any], RunConfig]]:
    """(point, validated config) per grid point; GridPointError on the first invalid point."""
    children = []
    for point in expand_grid(grid):
        try:
            config = with_overrides(base, {**point, "name": _child_name(base.name, point)})
        except ValidationError as exc:
            raise GridPointError(point, exc.errors(include_url=False)) from exc
        except ValueError as exc:
            raise GridPointError(point, [{"loc": (), "msg": str(exc), "type": "value_error"}]) from exc
        children.append((point, config))
    return children


def create_sweep(
    session: Session,
    name: str,
    base_config: RunConfig,
    grid: dict[str, Sequence[Any]],
    max_concurrent: int,
    *,
    created_by: str | None = None,
) -> Sweep:
    """Store the sweep and one queued child run per grid point; launches none (flushes only).

    The children are recorded as created by whoever created the sweep."""
    children = child_configs(base_config, grid)
    sweep = Sweep(
        name=name,
        base_config=base_config.model_dump(mode="json"),
        grid={k: list(v) for k, v in grid.items()},
        max_concurrent=max_concurrent,
        created_by=created_by,
    )
    session.add(sweep)
    session.flush()
    for point, config in children:
        create_run(session, config, sweep_id=sweep.id, sweep_point=point, created_by=created_by)
    return sweep


def _is_active_child() -> Any:
    """Running, or queued and already launched: the runs that occupy a concurrency slot."""
    return or_(Run.status == "running", and_(Run.status == "queued", Run.launched_at.is_not(None)))


def runs_for_free_slots(session: Session, sweep_id: int) -> list[Run]:
    """The never-launched children that fit into the sweep's free slots, oldest first.

    Locks the sweep row (PostgreSQL) / takes the write lock (SQLite) while counting, so two
    workers finishing children at once cannot overshoot `max_concurrent`; the caller
    (`backend.lifecycle.launch_waiting_sweep_runs`) launches them and commits, which releases it.
    """
    sweep = session.scalars(select(Sweep).where(Sweep.id == sweep_id).with_for_update()).first()
    if sweep is None:
        return []
    active = session.scalar(select(func.count()).where(Run.sweep_id == sweep_id, _is_active_child())) or 0
    free = sweep.max_concurrent - active
    if free <= 0:
        return []
    return list(
        session.scalars(
            select(Run)
            .where(Run.sweep_id == sweep_id, Run.status == "queued", Run.launched_at.is_(None))
            .order_by(Run.id)
            .limit(free)
        ).all()
    )


def sweeps_with_waiting_runs(session: Session) -> list[int]:
    """Sweeps that still have never-launched queued children (for the reconciler)."""
    rows = session.scalars(
        select(Run.sweep_id)
        .where(Run.sweep_id.is_not(None), Run.status == "queued", Run.launched_at.is_(None))
        .distinct()
        .order_by(Run.sweep_id)
    ).all()
    return [int(r) for r in rows if r is not None]


def get_sweep(session: Session, sweep_id: int) -> Sweep | None:
    return session.get(Sweep, sweep_id)


def sweep_status_counts(session: Session, sweep_id: int) -> dict[str, int]:
    """Number of child runs per status."""
    rows = session.execute(
        select(Run.status, func.count()).where(Run.sweep_id == sweep_id).group_by(Run.status)
    ).all()
    return {status: count for status, count in rows}
