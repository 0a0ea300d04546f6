from __future__ import annotations

from pathlib import Path

import pytest

from server.config import Settings
from tests.payment_modules import secrets_file


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    # Hashing is not what these tests test: the lowest scrypt cost. The sandbox
    # payment module may call back, so its service is reached too.
    return settings.replace(
        password_hash_cost=10,
        admission_capacity=1000,
        payment_module_secrets_file=secrets_file(tmp_path),
    )
