"""Atomic, durable artifact writes and the publication of a stage attempt's scratch folder.

Durability is checked by recording the fsync and rename calls in order: the data must be
fsync'd before its rename, and the directory after it, before any completion marker. os.fsync
is wrapped (and still called): what the disk does after it is outside our control.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aipo_core import artifacts
from aipo_core.access import ModelAccess
from aipo_core.config import RunConfig
from aipo_core.pipeline import run_stage


class Recorder:
    """Records ("fsync", path) and ("rename", source, target) in call order, then calls through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, ...]] = []
        fsync, replace, rename = os.fsync, os.replace, os.rename

        def recording_fsync(fd: int) -> None:
            self.calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            fsync(fd)

        def recording_replace(src, dst, *args, **kwargs) -> None:
            self.calls.append(("rename", str(src), str(dst)))
            replace(src, dst, *args, **kwargs)

        def recording_rename(src, dst, *args, **kwargs) -> None:
            self.calls.append(("rename", str(src), str(dst)))
            rename(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "fsync", recording_fsync)
        monkeypatch.setattr(os, "replace", recording_replace)
        monkeypatch.setattr(os, "rename", recording_rename)

    def index(self, *call: str) -> int:
        return self.calls.index(tuple(call))

    def renames_to(self, target: Path) -> int:
        """Position of the (last) rename whose target is `target`."""
        found = [i for i, call in enumerate(self.calls) if call[0] == "rename" and call[2] == str(target)]
        assert found, f"no rename to {target} in {self.calls}"
        return found[-1]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    return Recorder(monkeypatch)


def test_write_json_atomic_fsyncs_file_before_rename_and_directory_after(tmp_path, recorder) -> None:
    path = artifacts.write_json_atomic(tmp_path / "stage_train.json", {"loss": 0.5})
    (rename,) = [c for c in recorder.calls if c[0] == "rename"]
    temp = rename[1]
    assert recorder.calls == [("fsync", temp), ("rename", temp, str(path)), ("fsync", str(tmp_path))]
    assert json.loads(path.read_text()) == {"loss": 0.5}


def test_write_jsonl_atomic_fsyncs_file_before_rename_and_directory_after(tmp_path, recorder) -> None:
    path = artifacts.write_jsonl_atomic(tmp_path / "pairs.jsonl", [{"i": 1}, {"i": 2}])
    temp = recorder.calls[1][1]
    assert recorder.calls == [("fsync", temp), ("rename", temp, str(path)), ("fsync", str(tmp_path))]
    assert artifacts.read_jsonl(path) == [{"i": 1}, {"i": 2}]


def test_atomic_dir_fsyncs_every_file_and_folder_before_the_rename(tmp_path, recorder) -> None:
    target = tmp_path / "policy"
    with artifacts.atomic_dir(target) as staging:
        (staging / "model.safetensors").write_bytes(b"w" * 100)
        (staging / "sub").mkdir()
        (staging / "sub" / "tokenizer.json").write_text("{}")
    rename = recorder.renames_to(target)
    staged = recorder.calls[rename][1]
    synced_before = {c[1] for c in recorder.calls[:rename] if c[0] == "fsync"}
    expected = {f"{staged}/model.safetensors", f"{staged}/sub/tokenizer.json", f"{staged}/sub", staged}
    assert synced_before == expected
    assert recorder.calls.index(("fsync", staged)) == rename - 1, "the folder itself last"
    assert recorder.calls[rename + 1 :] == [("fsync", str(tmp_path))]
    assert (target / "sub" / "tokenizer.json").read_text() == "{}"


def test_atomic_dir_replaces_an_existing_folder_and_cleans_up_on_error(tmp_path) -> None:
    target = tmp_path / "policy"
    with artifacts.atomic_dir(target) as staging:
        (staging / "old.bin").write_text("old")
    with artifacts.atomic_dir(target) as staging:
        (staging / "new.bin").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    with pytest.raises(RuntimeError), artifacts.atomic_dir(target) as staging:
        (staging / "half.bin").write_text("half")
        raise RuntimeError("crash while saving")
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"], "no staging or trash left"


def _scratch_with_outputs(root: Path) -> Path:
    scratch = artifacts.scratch_dir(root, "r", 0, "evaluate", 2)
    artifacts.write_jsonl_atomic(scratch / "eval" / "alpaca_eval.jsonl", [{"id": "new"}])
    artifacts.write_json_atomic(scratch / "analysis.json", {"version": "new"})
    artifacts.write_json_atomic(scratch / "stage_evaluate.json", {"win_rate": 50.0})
    return scratch


def test_publish_moves_outputs_then_marker_last_with_fsyncs_between(tmp_path, monkeypatch) -> None:
    target = artifacts.iteration_dir(tmp_path, "r", 0)
    artifacts.write_jsonl_atomic(target / "eval" / "alpaca_eval.jsonl", [{"id": "stale"}])
    artifacts.write_json_atomic(target / "analysis.json", {"version": "stale"})
    scratch = _scratch_with_outputs(tmp_path)
    recorder = Recorder(monkeypatch)
    names = artifacts.publish(scratch, target, marker="stage_evaluate.json")
    assert names == ["analysis.json", "eval", "stage_evaluate.json"]
    marker = recorder.renames_to(target / "stage_evaluate.json")
    assert marker > max(recorder.renames_to(target / "eval"), recorder.renames_to(target / "analysis.json"))
    # Scratch contents are synced before the first rename; the target folder between the
    # artifacts' renames and the marker's, and again after the marker.
    first_rename = next(i for i, c in enumerate(recorder.calls) if c[0] == "rename")
    assert ("fsync", str(scratch / "eval" / "alpaca_eval.jsonl")) in recorder.calls[:first_rename]
    assert recorder.calls[marker - 1] == ("fsync", str(target))
    assert recorder.calls[marker + 1 :] == [("fsync", str(target))]
    assert artifacts.read_jsonl(target / "eval" / "alpaca_eval.jsonl") == [{"id": "new"}]
    assert artifacts.read_json(target / "analysis.json") == {"version": "new"}
    assert list(scratch.iterdir()) == []
    artifacts.discard_scratch(scratch)
    assert not (target / artifacts.ATTEMPTS_DIR).exists()
    assert sorted(p.name for p in target.iterdir()) == ["analysis.json", "eval", "stage_evaluate.json"]


def test_publish_without_a_marker_publishes_no_marker(tmp_path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    target = tmp_path / "iter_0"
    assert artifacts.publish(scratch, target, marker="stage_train.json") == []
    assert list(target.iterdir()) == []


def test_run_stage_with_a_scratch_folder_leaves_publishing_to_the_caller(tmp_path) -> None:
    """The worker's mode: outputs and marker stay in the attempt's folder until it publishes."""
    pairs = tmp_path / "prefs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    config = RunConfig.model_validate(
        {"name": "t", "model": "tiny-random-llama", "iterations": 1, "initial_pairs": str(pairs)}
    )
    access = ModelAccess(data_roots=(tmp_path,))
    scratch = artifacts.scratch_dir(tmp_path, "r", 0, "self_instruct", 1)
    summary = run_stage("self_instruct", config, artifact_root=tmp_path, run_id="r", iteration=0,
                        scratch_dir=scratch, access=access)  # fmt: skip
    assert summary["skipped"] == "initial_pairs"
    published = artifacts.iteration_dir(tmp_path, "r", 0)
    assert sorted(p.name for p in published.iterdir()) == [artifacts.ATTEMPTS_DIR]
    assert sorted(p.name for p in scratch.iterdir()) == ["instructions.jsonl", "stage_self_instruct.json"]
    artifacts.publish(scratch, published, marker="stage_self_instruct.json")
    # Published: the next call returns the stored summary and writes nothing new.
    again = artifacts.scratch_dir(tmp_path, "r", 0, "self_instruct", 2)
    assert run_stage("self_instruct", config, artifact_root=tmp_path, run_id="r", iteration=0,
                     scratch_dir=again, access=access) == summary  # fmt: skip
    assert not again.exists()
