"""Read the stage child's events file incrementally (like `tail -f`, one JSON object a line)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EventTail:
    """Returns the complete lines appended to `path` since the previous call.

    A line without its trailing newline is still being written: it stays for the next call.
    A malformed line is logged and dropped rather than stopping the forwarding of the others.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: dropping malformed event line %r", self.path, line[:200])
                continue
            if isinstance(event, dict):
                events.append(event)
        return events
