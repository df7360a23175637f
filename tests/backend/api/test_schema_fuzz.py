"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis strategies driven
by hypothesis): no input may produce a 5xx, and every response must match its documented
schema. Runs against SQLite and PostgreSQL."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.backend.conftest import TOKEN, Api

EXAMPLES_PER_OPERATION = 12
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@schemathesis.serializer("application/x-ndjson")
def _jsonl(_ctx, value) -> bytes:  # noqa: ANN001 - the upload route's raw body: bytes or text as generated
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def test_no_server_errors_and_documented_responses(api: Api) -> None:
    api.create_run()  # a run exists, so some path-parameter cases reach the handlers' happy path
    # Outside embedded mode (PostgreSQL) /openapi.json is behind the token too.
    schema = schemathesis.openapi.from_dict(api.client.get("/openapi.json").json())
    schema.app = api.client.app
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 17
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case) -> None:  # noqa: ANN001 - a schemathesis Case
            case.call_and_validate(
                headers=AUTH,
                checks=[not_a_server_error, response_schema_conformance],
            )

        check()
