"""One model in memory at a time, and a check that a released model is really gone.

A stage that uses several models in turn (evaluate: θ_0, θ_{k+1}, a judge, θ_{k+1} again for the
pair analysis) holds them in a `ResidentModels`: asking for a model other than the one held
releases the held one first: the reference is dropped, `gc.collect()` breaks the cycles a model
and its hooks form, and `torch.cuda.empty_cache()` hands the caching allocator's blocks back to the
device, so the next model (or vLLM's child processes, which see only what the driver reports as
free) has the memory. A 7B policy in bf16 (14 GiB), θ_0 and a judge of the same size would
otherwise sit side by side on one GPU.

Dropping our reference frees nothing while another object still holds the model (a judge that
wraps it, a generator, a closure). So every held object is watched through a weak reference, and
each load records which earlier models were still alive when it started (`lifetimes`): an empty
`alive_at_load` is the proof that the load did not stack on top of a leaked model.
"""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Lifetime:
    """One load: the model's name, what it was loaded for, and earlier models still alive then."""

    model: str
    role: str
    alive_at_load: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "role": self.role, "alive_at_load": self.alive_at_load}


def free_memory() -> None:
    """Collect garbage and return cached CUDA blocks to the device (a no-op without CUDA)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _watchable(value: Any) -> Any:
    """The object whose death means the model is gone: the model of a (model, tokenizer) pair."""
    return value[0] if isinstance(value, tuple) else value


class ResidentModels(Generic[T]):
    """Holds at most one loaded model (or judge) by name; see the module docstring."""

    def __init__(self) -> None:
        self._name: str | None = None
        self._value: T | None = None
        self._watched: list[tuple[str, weakref.ref[Any]]] = []
        self.lifetimes: list[Lifetime] = []

    @property
    def held(self) -> str | None:
        return self._name

    def hold(self, name: str, role: str, load: Callable[[], T]) -> T:
        """The model called `name`: the one held if it is that one, else `load()`'s after releasing
        the held one. `role` says what it is loaded for (recorded in `lifetimes`)."""
        if self._name == name and self._value is not None:
            return self._value
        self.release()
        alive = [watched for watched, ref in self._watched if ref() is not None]
        if alive:
            log.warning("loading %s for %s while %s is still alive (a reference leaked)", name, role, alive)
        self.lifetimes.append(Lifetime(name, role, alive))
        value = load()
        self._name, self._value = name, value
        self._watched.append((name, weakref.ref(_watchable(value))))
        return value

    def release(self) -> None:
        """Drop the held model and free its memory (`free_memory`)."""
        self._name, self._value = None, None
        free_memory()

    def describe(self) -> list[dict[str, Any]]:
        return [lifetime.describe() for lifetime in self.lifetimes]
