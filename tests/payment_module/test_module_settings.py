"""The payment module's settings: validated at start, one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import ConfigError
from server.payment_module.settings import ModuleSettings
from tests.payment_modules import MODULE, SECRET, secrets_file


def test_the_module_reads_its_own_line_of_the_secret_file(tmp_path: Path) -> None:
    settings = ModuleSettings.from_env(
        {
            "CONCERT_PAYMENT_MODULE_SECRET_FILE": str(secrets_file(tmp_path)),
            "CONCERT_PAYMENT_MODULE_DECLINE_PERCENT": "25",
        }
    )
    assert (settings.module_id, settings.secret(), settings.decline_percent) == (
        MODULE,
        SECRET,
        25,
    )


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("CONCERT_PAYMENT_MODULE_DECLINE_PERCENT", "101", "DECLINE_PERCENT"),
        ("CONCERT_PAYMENT_MODULE_SERVER", "no-port", "_SERVER"),
        ("CONCERT_PAYMENT_MODULE_ID", "other", "SECRET_FILE: no line for module 'other'"),
        ("CONCERT_PAYMENT_MODULE_RETRY_BASE_MS", "999999", "RETRY_BASE_MS: must not exceed"),
    ],
)
def test_a_bad_value_names_its_variable(
    tmp_path: Path, variable: str, value: str, named: str
) -> None:
    env = {"CONCERT_PAYMENT_MODULE_SECRET_FILE": str(secrets_file(tmp_path)), variable: value}
    with pytest.raises(ConfigError, match=named):
        ModuleSettings.from_env(env)


def test_the_command_exits_2_without_its_secret() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCERT_")}
    result = subprocess.run(
        [sys.executable, "-m", "server.payment_module"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: CONCERT_PAYMENT_MODULE_SECRET_FILE: required (the secret shared with the server)"
    ]
