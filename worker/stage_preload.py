"""Modules the stage forkserver imports once, so that every stage child starts warm.

Imported only in the forkserver process (see `worker.stage_process.PRELOAD`). Importing these
initialises no CUDA context, so forking after them is safe. A module that fails to import is
skipped (the stage that needs it reports the error itself): the forkserver must never die here.
"""

import importlib
import logging

WARM_MODULES = (
    "torch",
    "transformers",
    "trl",
    "aipo_core.pipeline",
    "aipo_core.models",
    "aipo_core.self_instruct",
    "aipo_core.generation",
    "aipo_core.ranking",
    "aipo_core.training",
    "aipo_core.evaluation",
    "aipo_core.analysis",
    "worker.stage_runner",
)

for _name in WARM_MODULES:
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001 - see the module docstring
        logging.getLogger(__name__).warning("stage forkserver: could not preload %s", _name, exc_info=True)
