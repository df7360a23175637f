"""ResidentModels: one model held at a time, a released model really gone (weakrefs), leaks reported."""

from __future__ import annotations

import weakref

import pytest

from aipo_core.models import load_model_and_tokenizer
from aipo_core.resident import ResidentModels


@pytest.fixture
def load_tiny(tmp_path):
    return lambda: load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path)


def test_holding_another_model_frees_the_held_one_before_loading(load_tiny) -> None:
    models: ResidentModels = ResidentModels()
    first = weakref.ref(models.hold("a", "answers", load_tiny)[0])
    assert models.hold("a", "judge", lambda: pytest.fail("a is held: no second load")) is not None
    second = weakref.ref(models.hold("b", "judge", load_tiny)[0])
    assert first() is None and second() is not None
    models.release()
    assert second() is None and models.held is None
    assert [(t.model, t.role, t.alive_at_load) for t in models.lifetimes] == [
        ("a", "answers", []),
        ("b", "judge", []),
    ]


def test_a_model_kept_alive_elsewhere_is_reported_at_the_next_load(load_tiny) -> None:
    models: ResidentModels = ResidentModels()
    leaked, _ = models.hold("a", "answers", load_tiny)  # a caller that keeps its reference
    models.hold("b", "judge", load_tiny)
    assert models.lifetimes[-1].alive_at_load == ["a"]
    del leaked
    models.hold("c", "pair analysis", load_tiny)
    assert models.describe()[-1] == {"model": "c", "role": "pair analysis", "alive_at_load": []}
