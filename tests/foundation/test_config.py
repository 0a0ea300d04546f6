"""Configuration: defaults, and every bad value refused with its name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import VARIABLES, ConfigError, Settings


def test_defaults_match_the_documented_values() -> None:
    settings = Settings.from_env({})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.database_url is None
    assert settings.data_dir == Path(".data")
    assert settings.hold_ttl_seconds == 300
    assert settings.expiry_interval_seconds == 60
    assert settings.workers == 1
    assert settings.admin_key is None


def test_values_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CONCERT_LISTEN": "0.0.0.0:6000",
            "CONCERT_HOLD_TTL_SECONDS": "120",
            "CONCERT_ADMISSION_CAPACITY": "50",
            "CONCERT_ADMIN_KEY": "k" * 20,
            "CONCERT_WORKERS": "2",
        }
    )
    assert settings.listen == "0.0.0.0:6000"
    assert settings.hold_ttl_seconds == 120
    assert settings.admission_capacity == 50
    assert settings.admin_key == "k" * 20
    assert settings.workers == 2


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONCERT_LISTEN", "no-port"),
        ("CONCERT_LISTEN", "host:99999"),
        ("CONCERT_DATABASE_URL", "mysql://x"),
        ("CONCERT_HOLD_TTL_SECONDS", "abc"),
        ("CONCERT_HOLD_TTL_SECONDS", "0"),
        ("CONCERT_TOKEN_TTL_SECONDS", "-5"),
        ("CONCERT_ADMISSION_CAPACITY", "1.5"),
        ("CONCERT_EXPIRY_INTERVAL_SECONDS", "0"),
        ("CONCERT_ADMIN_KEY", "short"),
        ("CONCERT_WORKERS", "0"),
        ("CONCERT_SEED_DEMO", "maybe"),
        ("CONCERT_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_is_refused_with_its_name(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    assert str(raised.value).startswith(f"{variable}:")
    assert "\n" not in str(raised.value)


def test_every_documented_variable_is_known() -> None:
    for name in (
        "CONCERT_LISTEN",
        "CONCERT_DATABASE_URL",
        "CONCERT_DATA_DIR",
        "CONCERT_HOLD_TTL_SECONDS",
        "CONCERT_TOKEN_TTL_SECONDS",
        "CONCERT_ADMISSION_CAPACITY",
        "CONCERT_EXPIRY_INTERVAL_SECONDS",
        "CONCERT_ADMIN_KEY",
        "CONCERT_WORKERS",
    ):
        assert name in VARIABLES


def test_the_server_exits_non_zero_with_a_one_line_error() -> None:
    env = {**os.environ, "CONCERT_HOLD_TTL_SECONDS": "five minutes"}
    result = subprocess.run(
        [sys.executable, "-m", "server"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: CONCERT_HOLD_TTL_SECONDS:")
