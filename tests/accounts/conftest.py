from __future__ import annotations

import pytest

from server.config import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The lowest scrypt cost: these tests are about accounts, not KDF strength
    # (test_passwords checks the production cost separately).
    return settings.replace(password_hash_cost=10)
