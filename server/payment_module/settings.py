"""The payment module's configuration, from CONCERT_PAYMENT_MODULE_* variables.

Validated once at start like the server's (server/config.py, whose parsers
it reuses): a bad value stops the process with a one-line error naming it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.config import (
    ConfigError,
    Spec,
    _database_url,
    _integer,
    _listen_address,
    _log_level,
    _readable_file,
    read_env,
)
from server.module_signing import parse_module_lines

MODULE_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")


@dataclass(frozen=True)
class ModuleSettings:
    # Where the module serves paymentmodule.v1.
    listen: str = "127.0.0.1:50061"
    # The concert server it reports payments to (PaymentCallbackService).
    server_address: str = "127.0.0.1:50051"
    # Its id at the server: the `<module id>` of the server's secrets file.
    module_id: str = "sandbox"
    # A file of `<module id> <base64url secret> [HOST:PORT]` lines (the server's
    # CONCERT_PAYMENT_MODULE_SECRETS_FILE format); the line of module_id signs.
    secret_file: Path | None = None
    # Its own database; None: a database named `payment_module` on the
    # embedded cluster in data_dir (the server's, when both use ./.data).
    database_url: str | None = None
    data_dir: Path = Path(".data")
    # Sandbox knobs: the share of otherwise good payments declined at random
    # (SANDBOX_DECLINE), a delay before every decision, the slow card's delay.
    decline_percent: int = 0
    delay_ms: int = 0
    slow_card_ms: int = 5000
    # The callback's retry schedule (backoff.py) and each attempt's deadline.
    retry_base_ms: int = 500
    retry_max_ms: int = 60_000
    callback_timeout_ms: int = 5000
    pool_max_size: int = 10
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModuleSettings:
        settings = cls(**read_env(_SPECS, env))
        settings.validate()
        return settings

    def validate(self) -> None:
        if not MODULE_ID.fullmatch(self.module_id):
            raise ConfigError("CONCERT_PAYMENT_MODULE_ID: 1 to 16 of A-Z a-z 0-9 _ -")
        if self.secret_file is None:
            raise ConfigError(
                "CONCERT_PAYMENT_MODULE_SECRET_FILE: required (the secret shared with the server)"
            )
        self.secret()  # fails here, at start, rather than at the first callback
        if self.retry_base_ms > self.retry_max_ms:
            raise ConfigError(
                "CONCERT_PAYMENT_MODULE_RETRY_BASE_MS: must not exceed "
                "CONCERT_PAYMENT_MODULE_RETRY_MAX_MS"
            )

    def secret(self) -> bytes:
        """This module's shared secret, from its line of the secret file."""
        assert self.secret_file is not None
        try:
            entries = parse_module_lines(self.secret_file.read_text(), str(self.secret_file))
        except ValueError as exc:
            raise ConfigError(f"CONCERT_PAYMENT_MODULE_SECRET_FILE: {exc}") from None
        for entry in entries:
            if entry.module_id == self.module_id:
                return entry.secret
        raise ConfigError(
            f"CONCERT_PAYMENT_MODULE_SECRET_FILE: no line for module {self.module_id!r}"
        )

    def replace(self, **changes: Any) -> ModuleSettings:
        return dataclasses.replace(self, **changes)


def _module_id(raw: str) -> str:
    if not MODULE_ID.fullmatch(raw):
        raise ValueError("must be 1 to 16 of A-Z a-z 0-9 _ -")
    return raw


_SPECS = (
    Spec("CONCERT_PAYMENT_MODULE_LISTEN", "listen", _listen_address),
    Spec("CONCERT_PAYMENT_MODULE_SERVER", "server_address", _listen_address),
    Spec("CONCERT_PAYMENT_MODULE_ID", "module_id", _module_id),
    Spec("CONCERT_PAYMENT_MODULE_SECRET_FILE", "secret_file", _readable_file),
    Spec("CONCERT_PAYMENT_MODULE_DATABASE_URL", "database_url", _database_url),
    Spec("CONCERT_PAYMENT_MODULE_DATA_DIR", "data_dir", Path),
    Spec("CONCERT_PAYMENT_MODULE_DECLINE_PERCENT", "decline_percent", _integer(0, 100)),
    Spec("CONCERT_PAYMENT_MODULE_DELAY_MS", "delay_ms", _integer(0, 600_000)),
    Spec("CONCERT_PAYMENT_MODULE_SLOW_CARD_MS", "slow_card_ms", _integer(0, 600_000)),
    Spec("CONCERT_PAYMENT_MODULE_RETRY_BASE_MS", "retry_base_ms", _integer(10, 3_600_000)),
    Spec("CONCERT_PAYMENT_MODULE_RETRY_MAX_MS", "retry_max_ms", _integer(10, 3_600_000)),
    Spec(
        "CONCERT_PAYMENT_MODULE_CALLBACK_TIMEOUT_MS", "callback_timeout_ms", _integer(100, 600_000)
    ),
    Spec("CONCERT_PAYMENT_MODULE_POOL_MAX_SIZE", "pool_max_size", _integer(2, 200)),
    Spec("CONCERT_PAYMENT_MODULE_LOG_LEVEL", "log_level", _log_level),
)

VARIABLES = tuple(spec.variable for spec in _SPECS)
