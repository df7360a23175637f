"""The loading policy: spec grammar, path resolution without existence tests, denied internals,
hub allow-list, annotators, whole-config checks."""

import pytest

from aipo_core.access import (
    AccessError,
    ConfigRefused,
    ModelAccess,
    check_run_config,
    config_problems,
    is_hub_id,
    model_spec_kind,
)
from aipo_core.config import RunConfig


@pytest.fixture
def home(tmp_path):
    """A server home: data root inside, token/database/logs beside it."""
    (tmp_path / "data").mkdir()
    (tmp_path / "token").write_text("secret\n")
    (tmp_path / "aipo.db").write_text("")
    (tmp_path / "logs").mkdir()
    return tmp_path


def server_access(home, *roots, hub=("llm-blender/PairRM",)):
    internals = [home / "token", home / "aipo.db", home / "logs"]
    return ModelAccess(
        hub_models=hub,
        data_roots=tuple(r.resolve() for r in (roots or (home / "data",))),
        denied=ModelAccess.deny_paths(internals),
    )


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("tiny-random-llama", "builtin"),
        ("policy", "alias"),
        ("HuggingFaceTB/SmolLM2-135M", "hub"),
        ("gpt2", "hub"),
        ("nosuchdir/../../../../etc/passwd", "path"),
        ("a/b/c", "path"),
        ("./models/x", "path"),
        ("~/models", "path"),
        ("/abs/model", "path"),
        ("..", "path"),
        ("C:\\models\\x", "path"),
        ("bad--id/x", "path"),
        ("has space", None),
    ],
)
def test_spec_kind_is_decided_by_spelling(value, kind):
    assert model_spec_kind(value, aliases=("policy",)) == kind


def test_hub_id_grammar():
    assert is_hub_id("llm-blender/PairRM") and is_hub_id("microsoft/deberta-v3-large")
    assert (
        not is_hub_id("a/../b")
        and not is_hub_id("-x/y")
        and not is_hub_id("a/b/c")
        and not is_hub_id("x" * 97)
    )


def test_traversal_through_a_missing_folder_is_resolved_and_refused(home):
    access = server_access(home)
    with pytest.raises(AccessError, match=r"resolved: /etc/passwd\) is outside the allowed data roots"):
        access.check_path("nosuchdir/../../../../../../../../etc/passwd", "prompt_pool")
    # Relative paths start at the first data root, existing or not.
    assert access.check_path("pools/mine.jsonl", "prompt_pool") == (home / "data/pools/mine.jsonl").resolve()


@pytest.mark.parametrize("internal", ["token", "aipo.db", "logs/api.log"])
def test_server_internals_are_refused_even_when_the_home_is_a_data_root(home, internal):
    access = server_access(home, home)
    with pytest.raises(AccessError, match="holds server internals"):
        access.check_path(str(home / internal), "prompt_pool")
    assert access.check_path(str(home / "data" / "pool.jsonl"), "prompt_pool")


def test_symlinks_are_followed_before_the_check(home, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "pool.jsonl"
    outside.write_text("{}\n")
    (home / "data" / "escape.jsonl").symlink_to(outside)
    (home / "data" / "token-link").symlink_to(home / "token")
    access = server_access(home, home)
    with pytest.raises(AccessError, match="outside the allowed data roots"):
        server_access(home).check_path(str(home / "data" / "escape.jsonl"), "prompt_pool")
    with pytest.raises(AccessError, match="holds server internals"):
        access.check_path(str(home / "data" / "token-link"), "prompt_pool")


def test_hub_allow_list_is_a_set_of_case_insensitive_globs():
    access = ModelAccess(hub_models=("Qwen/*", "llm-blender/PairRM"))
    assert access.check_hub_id("qwen/Qwen2.5-0.5B", "model") == "qwen/Qwen2.5-0.5B"
    assert access.hub_allowed("LLM-Blender/pairrm")
    with pytest.raises(AccessError, match="not on this server's allow-list") as refused:
        access.check_hub_id("evil/phi-2", "ranker.model")
    assert refused.value.field == "ranker.model" and refused.value.kind == "hub_model_not_allowed"


def test_annotators_are_names_unless_they_are_checked_paths(home):
    access = server_access(home)
    assert access.check_annotator("weighted_alpaca_eval_gpt4_turbo") == "weighted_alpaca_eval_gpt4_turbo"
    for value in ("../../etc", "/etc/passwd", "~/x", str(home / "token")):
        with pytest.raises(AccessError, match="evaluation.judge.annotator"):
            access.check_annotator(value)
    # A config-file name is a path, hence taken from the data root, not from alpaca_eval's folder.
    assert access.check_annotator("mine.yaml") == str((home / "data" / "mine.yaml").resolve())
    mine = home / "data" / "my_annotator" / "configs.yaml"
    assert access.check_annotator(str(mine)) == str(mine.resolve())


def test_remote_code_needs_both_operator_and_config():
    assert ModelAccess().remote_code(False) is False
    with pytest.raises(AccessError, match="AIPO_ALLOW_TRUST_REMOTE_CODE"):
        ModelAccess().remote_code(True)
    assert ModelAccess(allow_remote_code=True).remote_code(True) is True
    assert ModelAccess(allow_remote_code=True).remote_code(False) is False


def test_round_trips_through_json_for_the_stage_spec(home):
    access = server_access(home)
    assert ModelAccess.from_dict(access.to_dict()) == access


def config(**overrides) -> RunConfig:
    return RunConfig.model_validate({"name": "x", "model": "tiny-random-llama", **overrides})


def test_config_problems_name_every_refused_field(home):
    bad = config(
        model="evil/model",
        prompt_pool=str(home / "token"),
        initial_pairs="nosuchdir/../../../../etc/passwd",
        trust_remote_code=True,
        ranker={"kind": "reward_model", "model": "/etc"},
        evaluation={"judge": {"kind": "alpaca_eval", "annotator": "../../x"}},
    )
    problems = {".".join(p.loc): p.kind for p in config_problems(bad, server_access(home))}
    assert problems == {
        "model": "hub_model_not_allowed",
        "prompt_pool": "path_not_allowed",
        "initial_pairs": "path_not_allowed",
        "trust_remote_code": "trust_remote_code_refused",
        "ranker.model": "path_not_allowed",
        "evaluation.judge.annotator": "path_not_allowed",
    }
    with pytest.raises(
        ConfigRefused, match=r"this server refuses the run config: .*; model: hub model 'evil/model'"
    ):
        check_run_config(bad, server_access(home))


def test_pairrm_policy_means_the_published_checkpoint_which_must_be_allowed(home):
    cfg = config(ranker={"kind": "pairrm", "model": "policy"}, evaluation={"judge": {"kind": "pairrm"}})
    assert config_problems(cfg, server_access(home)) == []
    problems = config_problems(cfg, server_access(home, hub=()))
    assert [".".join(p.loc) for p in problems] == ["ranker.model", "evaluation.judge.model"]


def test_the_default_policy_accepts_built_ins_and_bundled_data_only(home):
    assert config_problems(config(), ModelAccess()) == []
    assert config_problems(config(model="gpt2"), ModelAccess())[0].kind == "hub_model_not_allowed"
