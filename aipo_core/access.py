"""What a run config may make a worker load or read: the one policy every model and data load obeys.

A run config is untrusted input. `ModelAccess` is the operator's answer to three questions, built
by the service from its settings (`backend.settings.Settings.model_access`) and passed down as a
plain value (aipo_core reads no environment):

* may code shipped with a model run? Only when the operator allowed remote code AND the config
  asks for it (`trust_remote_code: true`); otherwise a checkpoint carrying `*.py` files or an
  `auto_map` is refused before transformers (or llm-blender) sees it;
* which hub models may be loaded (glob patterns on `owner/name`); a hub id outside them is refused
  before anything is fetched;
* which local paths may be read: a value is resolved as a string (`~` expanded, relative paths
  taken from the first data root, `..` and symlinks followed; existence decides nothing) and must
  lie inside a data root and outside every denied path (the server's token, database, logs…).

Spec grammar (`model_spec_kind`): built-in model names and per-field aliases (`policy`) first;
then anything starting with `/`, `~` or `.`, containing a backslash, or containing `/` without
being a well-formed hub id (`owner/name`) is a path; a well-formed hub id is a hub id. A relative
local folder is therefore written `./models/x`, never `models/x` (that is a hub id).

`config_problems` applies the policy to every model, path and annotator field of a `RunConfig`:
the API turns the problems into a 422 and the worker raises them before it loads anything; the
loaders (`aipo_core.models`, `aipo_core.pairrm_compat`) check again at the moment they load.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from aipo_core.config import RunConfig

BUILTIN_MODELS = frozenset({"tiny-random-llama", "smollm2-135m-instruct"})
POLICY_ALIAS = "policy"
PAIRRM_HUB_ID = "llm-blender/PairRM"
PAIRRM_BACKBONE_HUB_ID = "microsoft/deberta-v3-large"
#: The hub models the default configuration can name: `ranker.kind: pairrm` with `model: policy`
#: loads PairRM, whose checkpoint names its DeBERTa backbone.
DEFAULT_HUB_MODELS = (PAIRRM_HUB_ID, PAIRRM_BACKBONE_HUB_ID)

# Hugging Face repo ids: `name` or `owner/name`, each part alphanumeric with . _ - inside, no
# "--" or ".." (the hub's own rules), at most 96 characters.
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"{_HUB_PART}(?:/{_HUB_PART})?")
# An alpaca_eval annotator config name (a folder name inside alpaca_eval's evaluators_configs).
_ANNOTATOR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# Files transformers reads that may carry an `auto_map` (which names Python code to import).
_CONFIG_FILES = (
    "config.json",
    "tokenizer_config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "feature_extractor_config.json",
    "image_processor_config.json",
)
_CODE_KEYS = ("auto_map", "custom_pipelines")
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_MAX_CHECKPOINT_ENTRIES = 10_000
_MAX_CONFIG_BYTES = 16 * 1024 * 1024

SpecKind = Literal["alias", "builtin", "hub", "path"]


class AccessError(ValueError):
    """A load or read the operator's policy refuses; `field` names the config field."""

    def __init__(self, field: str, message: str, kind: str = "access_refused") -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.kind = field, message, kind


@dataclass(frozen=True)
class Problem:
    """One refused config field: where (`loc`), why (`kind`, `message`) and the value."""

    loc: tuple[str, ...]
    kind: str
    message: str
    value: Any


def is_hub_id(value: str) -> bool:
    """Whether `value` is a well-formed Hugging Face repo id (`name` or `owner/name`)."""
    return _HUB_ID.fullmatch(value) is not None and ".." not in value and "--" not in value


def is_path_like(value: str) -> bool:
    """Whether `value` names a local path by its spelling alone (never by what exists on disk)."""
    if value.startswith(("/", "~", ".")) or "\\" in value or "\x00" in value:
        return True
    return "/" in value and not is_hub_id(value)


def model_spec_kind(value: str, aliases: Iterable[str] = ()) -> SpecKind | None:
    """How a model field's value is read: alias, built-in, path or hub id (None: none of them)."""
    if value in aliases:
        return "alias"
    if value in BUILTIN_MODELS:
        return "builtin"
    if is_path_like(value):
        return "path"
    if is_hub_id(value):
        return "hub"
    return None


def _read_json(path: Path) -> Any:
    if not path.is_file() or path.stat().st_size > _MAX_CONFIG_BYTES:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None


def check_config_files(folder: Path, *, field: str, remote_code: bool) -> dict[str, Any]:
    """Refuse configs that name code (`auto_map`) unless remote code is on; return config.json."""
    config = _read_json(folder / "config.json")
    if not isinstance(config, dict):
        raise AccessError(
            field, f"{folder} has no readable config.json (not a checkpoint folder)", "not_a_checkpoint"
        )
    if not remote_code:
        for name in _CONFIG_FILES:
            data = _read_json(folder / name)
            keys = [key for key in _CODE_KEYS if isinstance(data, dict) and key in data]
            if keys:
                raise AccessError(
                    field,
                    f"{folder / name} has {keys[0]!r}, which makes transformers import code shipped with "
                    "the model; remote code is disabled (operator: AIPO_ALLOW_TRUST_REMOTE_CODE, config: "
                    "trust_remote_code)",
                    "remote_code_refused",
                )
    return config


@dataclass(frozen=True)
class ModelAccess:
    """The operator's loading policy (see the module docstring). The default loads built-ins only.

    `denied` holds glob patterns (fnmatch, `*` crosses `/`) on resolved paths; `deny_paths`
    turns folders and files into them. `any_local_path` lifts the data-root restriction (a local
    `aipo run --local`, where the config's author is the operator).
    """

    allow_remote_code: bool = False
    hub_models: tuple[str, ...] = ()
    data_roots: tuple[Path, ...] = ()
    denied: tuple[str, ...] = ()
    offline: bool = False
    any_local_path: bool = False
    _trusted: tuple[Path, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        # Roots are compared with resolved paths, so they are resolved too (/tmp may be a link).
        object.__setattr__(self, "data_roots", tuple(Path(os.path.realpath(r)) for r in self.data_roots))

    @classmethod
    def for_local_run(cls, *, allow_remote_code: bool = False, denied: Iterable[str] = ()) -> ModelAccess:
        """Any hub model and any local path (the user runs their own config on their own machine);
        remote code still only with the operator's consent."""
        return cls(
            allow_remote_code=allow_remote_code, hub_models=("*",), any_local_path=True, denied=tuple(denied)
        )

    @staticmethod
    def deny_paths(paths: Iterable[Path | str]) -> tuple[str, ...]:
        """Deny patterns for files/folders: each path itself and everything below it."""
        patterns: list[str] = []
        for path in paths:
            text = glob.escape(os.path.realpath(Path(path).expanduser()))
            patterns += [text, f"{text}/*"]
        return tuple(patterns)

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the worker hands it to the stage child in the stage spec)."""
        return {
            "allow_remote_code": self.allow_remote_code,
            "hub_models": list(self.hub_models),
            "data_roots": [str(root) for root in self.data_roots],
            "denied": list(self.denied),
            "offline": self.offline,
            "any_local_path": self.any_local_path,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelAccess:
        return cls(
            allow_remote_code=bool(data.get("allow_remote_code", False)),
            hub_models=tuple(data.get("hub_models", ())),
            data_roots=tuple(Path(root) for root in data.get("data_roots", ())),
            denied=tuple(data.get("denied", ())),
            offline=bool(data.get("offline", False)),
            any_local_path=bool(data.get("any_local_path", False)),
        )

    def trusting(self, *folders: Path) -> ModelAccess:
        """A copy that may also read `folders` (the run's own artifacts: policies it trained)."""
        resolved = tuple(Path(os.path.realpath(folder)) for folder in folders)
        return replace(self, _trusted=self._trusted + resolved)

    # ------------------------------------------------------------------ single checks

    def remote_code(self, requested: bool, field: str = "trust_remote_code") -> bool:
        """True only when the config asks for remote code and the operator allowed it."""
        if requested and not self.allow_remote_code:
            raise AccessError(
                field,
                "trust_remote_code is disabled on this server (operator: set AIPO_ALLOW_TRUST_REMOTE_CODE=1)",
                "trust_remote_code_refused",
            )
        return requested

    def hub_allowed(self, repo_id: str) -> bool:
        """Whether `repo_id` matches an allowed pattern (hub ids are case-insensitive)."""
        return is_hub_id(repo_id) and any(
            fnmatchcase(repo_id.lower(), pattern.lower()) for pattern in self.hub_models
        )

    def check_hub_id(self, repo_id: str, field: str) -> str:
        if not is_hub_id(repo_id):
            raise AccessError(field, f"{repo_id!r} is not a hub id (owner/name)", "invalid_model_spec")
        if not self.hub_allowed(repo_id):
            allowed = ", ".join(self.hub_models) or "none"
            raise AccessError(
                field,
                f"hub model {repo_id!r} is not on this server's allow-list ({allowed}; "
                "operator: AIPO_ALLOWED_HUB_MODELS)",
                "hub_model_not_allowed",
            )
        return repo_id

    def resolve(self, value: str) -> Path:
        """The absolute, symlink-free path `value` names; decided by its spelling, not by existence."""
        path = Path(value).expanduser()
        if not path.is_absolute():
            base = self.data_roots[0] if self.data_roots and not self.any_local_path else Path.cwd()
            path = base / path
        return Path(os.path.realpath(path))

    def is_denied(self, resolved: Path) -> bool:
        text = str(resolved)
        return any(fnmatchcase(text, pattern) for pattern in self.denied)

    def check_path(self, value: str | Path, field: str) -> Path:
        """The resolved path if it may be read, else AccessError naming `field`."""
        text = str(value)
        if "\x00" in text:
            raise AccessError(field, "a path must not contain NUL characters", "path_not_allowed")
        try:
            resolved = self.resolve(text)
        except (OSError, RuntimeError, ValueError) as exc:
            raise AccessError(field, f"cannot resolve {text!r}: {exc}", "path_not_allowed") from None
        if self.is_denied(resolved):
            raise AccessError(
                field, f"{text} resolves to {resolved}, which holds server internals", "path_not_allowed"
            )
        inside = self.any_local_path or any(
            resolved.is_relative_to(root) for root in (*self.data_roots, *self._trusted)
        )
        if not inside:
            roots = ", ".join(str(root) for root in self.data_roots) or "none"
            raise AccessError(
                field,
                f"local path {text} (resolved: {resolved}) is outside the allowed data roots: {roots}",
                "path_not_allowed",
            )
        return resolved

    def check_data_spec(self, value: str, field: str, bundled: Iterable[str] = ()) -> str:
        """A bundled data set name unchanged, else the checked path (as a string)."""
        if value in set(bundled):
            return value
        return str(self.check_path(value, field))

    def check_annotator(self, value: str, field: str = "evaluation.judge.annotator") -> str:
        """An alpaca_eval annotator config name unchanged; anything path-like must be a checked path."""
        named = _ANNOTATOR_NAME.fullmatch(value) and not value.lower().endswith(_CONFIG_SUFFIXES)
        if named and not is_path_like(value):
            return value
        return str(self.check_path(value, field))

    def check_model_spec(self, value: str, field: str, aliases: Iterable[str] = ()) -> SpecKind:
        """The kind of a model field's value after checking it against this policy."""
        kind = model_spec_kind(value, aliases)
        if kind == "path":
            self.check_path(value, field)
        elif kind == "hub":
            self.check_hub_id(value, field)
        elif kind is None:
            raise AccessError(
                field,
                f"{value!r} is neither a built-in model ({', '.join(sorted(BUILTIN_MODELS))}), "
                "a hub id (owner/name) nor a path",
                "invalid_model_spec",
            )
        return kind

    # ------------------------------------------------------------------ checkpoint folders

    def check_checkpoint(self, folder: Path, *, field: str, remote_code: bool, trusted: bool = False) -> dict:
        """Inspect a local checkpoint before anything loads it; return its config.json.

        Refused: no config.json; `*.py` files or an `auto_map` without remote code; unless
        `trusted` (a built-in or hub-cache folder, whose files are symlinks into the cache), any
        entry that resolves outside the data roots or onto a denied path (a symlink to the
        server's token inside an allowed folder).
        """
        if not folder.is_dir():
            raise AccessError(
                field,
                f"{folder} is not a folder (a checkpoint is a save_pretrained folder)",
                "not_a_checkpoint",
            )
        count = 0
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in (*dirnames, *filenames):
                count += 1
                if count > _MAX_CHECKPOINT_ENTRIES:
                    raise AccessError(
                        field, f"{folder} has more than {_MAX_CHECKPOINT_ENTRIES} entries", "not_a_checkpoint"
                    )
                entry = Path(dirpath) / name
                if not trusted:
                    self.check_path(entry, field)
                if name.endswith(".py") and not remote_code:
                    raise AccessError(
                        field,
                        f"{folder} ships Python code ({entry.relative_to(folder)}); remote code is disabled "
                        "(operator: AIPO_ALLOW_TRUST_REMOTE_CODE, config: trust_remote_code)",
                        "remote_code_refused",
                    )
        return check_config_files(folder, field=field, remote_code=remote_code)


# --------------------------------------------------------------------------- whole configs


class ConfigRefused(AccessError):
    """Every field of a run config that the policy refuses (raised by the worker before loading)."""

    def __init__(self, problems: list[Problem]) -> None:
        detail = "; ".join(f"{'.'.join(p.loc)}: {p.message}" for p in problems)
        super().__init__(".".join(problems[0].loc), detail, problems[0].kind)
        self.problems = problems

    def __str__(self) -> str:
        return f"this server refuses the run config: {self.message}"


def _field_checks(
    config: RunConfig, access: ModelAccess
) -> list[tuple[tuple[str, ...], Any, Callable[[], Any]]]:
    """(loc, value, check) for every field of `config` that the policy governs."""
    from aipo_core.config import BASE_JUDGE
    from aipo_core.data.pools import BUNDLED_POOLS

    checks: list[tuple[tuple[str, ...], Any, Callable[[], Any]]] = []
    if config.trust_remote_code:
        checks.append((("trust_remote_code",), True, lambda: access.remote_code(True)))
    checks.append((("model",), config.model, lambda: access.check_model_spec(config.model, "model")))
    # (loc, kind, value, aliases): `base` (the frozen initial model) is an evaluation-judge alias only.
    judges = [(("ranker", "model"), config.ranker.judge_kind, config.ranker.model, (POLICY_ALIAS,))]
    if config.evaluation.judge.kind != "alpaca_eval":
        judge = config.evaluation.judge
        judges.append((("evaluation", "judge", "model"), judge.kind, judge.model, (POLICY_ALIAS, BASE_JUDGE)))
    for loc, kind, value, aliases in judges:
        dotted = ".".join(loc)
        if kind == "pairrm" and value in aliases:
            # The aliases name the published PairRM checkpoint for a PairRM ranker or judge.
            checks.append((loc, value, lambda d=dotted: access.check_hub_id(PAIRRM_HUB_ID, d)))
        else:
            checks.append((loc, value, lambda v=value, d=dotted, a=aliases: access.check_model_spec(v, d, a)))
    pool = config.prompt_pool
    checks.append(
        (("prompt_pool",), pool, lambda: access.check_data_spec(pool, "prompt_pool", BUNDLED_POOLS))
    )
    pairs = config.initial_pairs
    if pairs is not None:
        checks.append((("initial_pairs",), pairs, lambda: access.check_path(pairs, "initial_pairs")))
    annotator = config.evaluation.judge.annotator
    if annotator is not None:
        checks.append(
            (("evaluation", "judge", "annotator"), annotator, lambda: access.check_annotator(annotator))
        )
    return checks


def config_problems(config: RunConfig, access: ModelAccess) -> list[Problem]:
    """Everything in `config` that `access` refuses, one `Problem` per field (API: a 422 each)."""
    problems = []
    for loc, value, check in _field_checks(config, access):
        try:
            check()
        except AccessError as exc:
            problems.append(Problem(loc, exc.kind, exc.message, value))
    return problems


def check_run_config(config: RunConfig, access: ModelAccess) -> None:
    """Raise `ConfigRefused` if `access` refuses any field of `config` (the worker's re-check)."""
    problems = config_problems(config, access)
    if problems:
        raise ConfigRefused(problems)
