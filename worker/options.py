"""The worker's timing and retry knobs, copied out of the one settings object."""

from __future__ import annotations

from dataclasses import dataclass

from backend.settings import Settings
from worker.lease import lease_seconds


@dataclass(frozen=True)
class WorkerOptions:
    """See the matching `stage_*` / `reconcile_interval_s` fields of `backend.settings.Settings`."""

    heartbeat_interval_s: float = 10.0
    heartbeat_timeout_s: float = 120.0
    queued_timeout_s: float = 60.0
    max_attempts: int = 3
    reconcile_interval_s: float = 15.0
    kill_grace_s: float = 5.0

    @property
    def lease_s(self) -> float:
        """How long a stage child may run after the last accepted heartbeat (see `worker.lease`)."""
        return lease_seconds(
            heartbeat_timeout_s=self.heartbeat_timeout_s,
            heartbeat_interval_s=self.heartbeat_interval_s,
            kill_grace_s=self.kill_grace_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerOptions:
        """The options of `settings`; ValueError when their timings allow two attempts at once."""
        options = cls(
            heartbeat_interval_s=settings.stage_heartbeat_interval_s,
            heartbeat_timeout_s=settings.stage_heartbeat_timeout_s,
            queued_timeout_s=settings.stage_queued_timeout_s,
            max_attempts=settings.stage_max_attempts,
            reconcile_interval_s=settings.reconcile_interval_s,
            kill_grace_s=settings.stage_kill_grace_s,
        )
        options.lease_s  # noqa: B018 - validates the timings here, not mid-stage
        return options
