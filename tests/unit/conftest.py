"""tests/unit: the service's pure rules, with no PostgreSQL.

tests/conftest.py has no autouse fixture, so nothing there starts a database
unless a test asks for it; its session-scoped chain is postgres_server_url ->
create_database -> database_url -> app. This file overrides the root of that
chain so that a unit test that asks for any of them (directly or through
`app`, `channel`, `stubs`) fails at once instead of starting an embedded
PostgreSQL. Tests that need the database belong in the other folders.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    pytest.fail(
        "tests/unit must not use PostgreSQL: move this test next to the feature it tests",
        pytrace=False,
    )
