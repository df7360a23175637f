"""What one stage attempt holds once it has claimed its stage row.

Its own module because both sides of an attempt use it: `worker.execution` creates it when the
claim succeeds, `worker.finalize` records the attempt's outcome with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ClaimedStage:
    """What an attempt needs from the rows, copied out so that no session stays open."""

    stage_id: int
    run_id: int
    iteration: int
    name: str
    attempt: int
    config: dict[str, Any]
    log_path: Path
