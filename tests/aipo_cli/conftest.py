"""The backend's database and API fixtures, for CLI verbs that work on the same store."""

from tests.backend.conftest import api, db_url, launcher, postgres_url  # noqa: F401
