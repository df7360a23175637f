"""Store-level errors; the API maps them to HTTP status codes (404, 409)."""


class StoreError(Exception):
    """Base class of errors raised by `backend.store`."""


class NotFoundError(StoreError):
    """The addressed row does not exist."""


class ConflictError(StoreError):
    """The requested transition is not allowed from the row's current state."""
