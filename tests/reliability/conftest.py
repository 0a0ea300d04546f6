from __future__ import annotations

import pytest

from server.config import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Hashing is not what these tests test: the lowest scrypt cost.
    return settings.replace(password_hash_cost=10, admission_capacity=1000)
