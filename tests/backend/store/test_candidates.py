"""Reading one prompt's candidates from a run's artifact folder (backend.store.candidates)."""

from __future__ import annotations

import pytest

from aipo_core import artifacts
from backend.store.candidates import ArtifactOutsideRun, read_prompt_candidates


def test_only_the_record_with_that_id_is_read_even_when_its_id_appears_in_other_texts(tmp_path) -> None:
    folder = artifacts.iteration_dir(tmp_path, "3", 0)
    records = [
        {"id": 7, "instruction": "mentions 17", "candidates": ["a", "b"], "lengths": [1, 1]},
        {"id": 17, "instruction": "the one", "candidates": ["c", "d", "e"]},  # no lengths/finished: legacy
    ]
    artifacts.write_jsonl_atomic(folder / "candidates.jsonl", records)
    found = read_prompt_candidates(tmp_path, 3, 0, "17")
    assert found is not None and found.instruction == "the one" and found.texts == ["c", "d", "e"]
    assert found.finished == [True] * 3 and found.lengths == [None] * 3 and found.scores is None
    assert read_prompt_candidates(tmp_path, 3, 0, "1") is None
    assert read_prompt_candidates(tmp_path, 3, 1, "17") is None  # no such iteration folder


def test_links_may_move_a_run_folder_but_not_leave_it(tmp_path) -> None:
    """An operator may link a whole run folder to another disk; a link inside a run folder to a
    file outside it (here an iteration folder) is refused."""
    elsewhere = tmp_path / "elsewhere"
    artifacts.write_jsonl_atomic(
        elsewhere / "iter_0" / "candidates.jsonl", [{"id": "x", "candidates": ["a"]}]
    )
    (tmp_path / "root" / "runs").mkdir(parents=True)
    (tmp_path / "root" / "runs" / "5").symlink_to(elsewhere)
    assert read_prompt_candidates(tmp_path / "root", 5, 0, "x").texts == ["a"]
    (tmp_path / "root" / "runs" / "6").mkdir()
    (tmp_path / "root" / "runs" / "6" / "iter_0").symlink_to(elsewhere / "iter_0")
    with pytest.raises(ArtifactOutsideRun):
        read_prompt_candidates(tmp_path / "root", 6, 0, "x")
