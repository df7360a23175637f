"""PairRM loading: a booby-trapped PairRM-shaped checkpoint never runs its code, as a ranker or a judge.

llm-blender loads with `trust_remote_code=True` when a checkpoint's backbone name contains "phi"
(or its model type starts with "phi"). The control test shows that path really runs the planted
code; every other test shows ours refuses the same folder with a clear error and the marker file
never appears.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aipo_core import artifacts
from aipo_core.access import AccessError, ModelAccess
from aipo_core.config import JudgeConfig, RunConfig
from aipo_core.evaluation import make_judge
from aipo_core.pairrm_compat import load_pairrm
from aipo_core.pipeline import run_stage
from aipo_core.ranking import PairRMRanker, make_ranker
from tests.aipo_core.checkpoints import build_tiny_pairrm, plant_code

PROMPT = "Name a fruit that is rich in vitamin C."


@pytest.fixture(scope="module")
def clean_pairrm(tmp_path_factory) -> Path:
    """A genuine tiny PairRM checkpoint whose backbone folder is named like a Phi model."""
    return build_tiny_pairrm(tmp_path_factory.mktemp("clean"), backbone_name="phi-backbone")


@pytest.fixture
def trap(clean_pairrm, tmp_path):
    """A copy of the checkpoint (in a data root) whose phi-named backbone ships import-time code."""
    root = tmp_path / "data"
    shutil.copytree(clean_pairrm.parent, root)
    ranker = root / "ranker"
    config = json.loads((ranker / "config.json").read_text())
    config["model_name"] = str(root / "phi-backbone")
    (ranker / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "MARKER"
    plant_code(root / "phi-backbone", marker, model=False)
    return ranker, marker, ModelAccess(data_roots=(root.resolve(),))


def test_the_clean_checkpoint_loads_and_ranks(clean_pairrm):
    access = ModelAccess(data_roots=(clean_pairrm.parent.resolve(),))
    ranker = PairRMRanker(str(clean_pairrm), access=access, batch_size=2, device="cpu")
    scores = ranker.score(PROMPT, ["An orange.", "I like cars.", "Lemon"])
    assert len(set(scores)) == 3 and sum(scores) == pytest.approx(0.0, abs=1e-6)


def test_our_loader_scores_exactly_like_llm_blenders_own(tmp_path):
    """Same checkpoint (backbone not phi-named, so llm-blender takes its plain path), same scores."""
    from aipo_core.pairrm_compat import import_llm_blender

    folder = build_tiny_pairrm(tmp_path)
    llm_blender = import_llm_blender()
    theirs = llm_blender.Blender(llm_blender.BlenderConfig(device="cpu", use_tqdm=False))
    theirs.loadranker(str(folder), device="cpu")
    ours = load_pairrm(str(folder), access=ModelAccess(data_roots=(tmp_path.resolve(),)))
    candidates = [["An orange.", "I like cars.", "Lemon"], ["hello", "bye", "good answer"]]
    prompts = [PROMPT, "Say hello."]
    kwargs = {"return_scores": True, "batch_size": 2, "disable_tqdm": True}
    expected = theirs.rank(prompts, candidates, **kwargs)  # [2 prompts, 3 candidates]
    assert ours.rank(prompts, candidates, **kwargs).ravel().tolist() == pytest.approx(
        expected.ravel().tolist(), abs=1e-6
    )


def test_control_llm_blender_itself_runs_the_planted_code(trap, tmp_path):
    """Without our loader the attack works: Blender.loadranker imports the backbone's tokenizer code."""
    ranker, marker, _ = trap
    script = textwrap.dedent(
        f"""
        from aipo_core.pairrm_compat import import_llm_blender
        llm_blender = import_llm_blender()
        blender = llm_blender.Blender(llm_blender.BlenderConfig(device="cpu"))
        try:
            blender.loadranker({str(ranker)!r}, device="cpu")
        except Exception as exc:
            print("load failed after import:", exc)
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=Path(__file__).parents[2], timeout=300, check=True
    )
    assert marker.exists()


def test_ranker_refuses_the_trapped_checkpoint(trap):
    ranker, marker, access = trap
    with pytest.raises(
        AccessError, match=r"ranker.model \(the PairRM backbone.*ships Python code"
    ) as refused:
        make_ranker("pairrm", str(ranker), access=access, device="cpu")
    assert refused.value.kind == "remote_code_refused"
    assert not marker.exists()


def test_judge_refuses_the_trapped_checkpoint(trap):
    ranker, marker, access = trap
    with pytest.raises(AccessError, match=r"evaluation.judge.model \(the PairRM backbone.*ships Python code"):
        make_judge(JudgeConfig(kind="pairrm", model=str(ranker)), access=access, device="cpu")
    assert not marker.exists()


def test_auto_map_without_code_files_is_refused_too(trap):
    ranker, marker, access = trap
    for module in ranker.parent.glob("phi-backbone/*.py"):
        module.unlink()
    with pytest.raises(AccessError, match="tokenizer_config.json has 'auto_map'"):
        load_pairrm(str(ranker), access=access)
    assert not marker.exists()


def test_code_in_the_checkpoint_folder_itself_is_refused(trap):
    ranker, marker, access = trap
    (ranker / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    with pytest.raises(AccessError, match="ranker.model: .*ships Python code"):
        load_pairrm(str(ranker), access=access)
    assert not marker.exists()


def test_a_phi_model_type_is_not_a_pairrm_checkpoint(clean_pairrm, tmp_path):
    """llm-blender's other remote-code branch: model_type 'phi…' builds a causal LM with remote code."""
    folder = shutil.copytree(clean_pairrm, tmp_path / "ranker")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "phi-2"}))
    access = ModelAccess(data_roots=(tmp_path.resolve(), clean_pairrm.parent.resolve()))
    with pytest.raises(AccessError, match="not a PairRM checkpoint: .* got 'pairranker' and 'phi-2'"):
        load_pairrm(str(folder), access=access)


def test_a_backbone_on_the_hub_must_be_allowed_and_nothing_is_fetched_otherwise(
    clean_pairrm, tmp_path, monkeypatch
):
    import huggingface_hub

    fetched = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: fetched.append(a))
    folder = shutil.copytree(clean_pairrm, tmp_path / "ranker")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_name": "evil/phi-3-tokenizer"}))
    access = ModelAccess(data_roots=(tmp_path.resolve(),), hub_models=("llm-blender/PairRM",))
    with pytest.raises(AccessError, match="'evil/phi-3-tokenizer' is not on this server's allow-list"):
        load_pairrm(str(folder), access=access)
    with pytest.raises(AccessError, match="'evil/phi-ranker' is not on this server's allow-list"):
        make_ranker("pairrm", "evil/phi-ranker", access=access)
    assert fetched == []


def test_missing_weights_are_an_error_not_a_random_judge(clean_pairrm, tmp_path):
    folder = shutil.copytree(clean_pairrm, tmp_path / "ranker")
    (folder / "model.safetensors").unlink()
    access = ModelAccess(data_roots=(tmp_path.resolve(), clean_pairrm.parent.resolve()))
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        load_pairrm(str(folder), access=access)


def test_the_rank_stage_refuses_the_trapped_ranker(trap, tmp_path):
    """End to end through the pipeline's rank stage, as the worker runs it."""
    ranker, marker, access = trap
    config = RunConfig.model_validate(
        {
            "name": "trap",
            "model": "tiny-random-llama",
            "iterations": 1,
            "ranker": {"kind": "pairrm", "model": str(ranker)},
            "training": {"max_prompt_length": 64, "max_length": 128},
        }
    )
    candidates = [
        {
            "id": "a",
            "instruction": PROMPT,
            "prompt": [{"role": "user", "content": PROMPT}],
            "candidates": ["An orange.", "Lemon"],
        }
    ]
    artifacts.write_jsonl_atomic(
        artifacts.iteration_dir(tmp_path / "art", "r", 0) / "candidates.jsonl", candidates
    )
    with pytest.raises(AccessError, match="ships Python code"):
        run_stage(
            "rank",
            config,
            artifact_root=tmp_path / "art",
            run_id="r",
            iteration=0,
            model_cache_dir=tmp_path / "models",
            access=access,
        )
    assert not marker.exists()
    assert not (artifacts.iteration_dir(tmp_path / "art", "r", 0) / "stage_rank.json").exists()
