"""Configuration from CONCERT_* environment variables, validated once at start.

Every setting has one spec row below; a bad value stops the process with a
one-line error that names the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.client_address import Network, parse_networks


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str | None = None
    # A read replica for the List methods; None: they read the primary.
    database_read_url: str | None = None
    data_dir: Path = Path(".data")
    hold_ttl_seconds: int = 300
    token_ttl_seconds: int = 600
    session_ttl_seconds: int = 86400
    admission_capacity: int = 100
    # scrypt cost as log2(n): 14 is n=2**14 (about 40 ms); tests lower it.
    password_hash_cost: int = 14
    expiry_interval_seconds: int = 60
    admin_key: str | None = None
    workers: int = 1
    max_holds_per_user: int = 4
    # How long a ListAvailableSeats page may be served from memory (0: never);
    # see server/booking/seat_list_cache.py for what that may get wrong.
    seat_list_max_age_ms: int = 1000
    pool_min_size: int = 2
    pool_max_size: int = 16
    statement_timeout_ms: int = 5000
    lock_timeout_ms: int = 2000
    shutdown_grace_seconds: float = 10.0
    # A connection's lifetime, then its calls' time to finish (server/app.py
    # connection_options): long-lived clients reconnect, and so rebalance.
    max_connection_age_seconds: int = 3600
    max_connection_age_grace_seconds: int = 600
    seed_demo: bool = True
    log_level: str = "INFO"
    log_format: str = "text"
    # HOST:PORT of a plaintext grpc.health.v1 server for probes; None: health on `listen` only.
    health_listen: str | None = None
    # HOST:PORT of the Prometheus /metrics endpoint; None: not served.
    metrics_listen: str | None = None
    # TLS (PEM files): cert and key together serve TLS only; a client CA also
    # requires every client to present a certificate it signed (mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # Calls one process serves at once; beyond, SERVER_BUSY (server/security/call_limit.py).
    max_concurrent_calls: int = 20_000
    # Password calls refused at once per second; beyond, a refusal waits its retry
    # delay on the server first, then tries once more (server/accounts/pacing.py).
    password_refusals_at_once_per_second: int = 50
    # How long AIP-155 request ids replay their first answer (server/idempotency.py).
    idempotency_ttl_hours: int = 24
    # Signing keys from a file (a mounted secret) or the environment instead of
    # the database (server/signing.py).
    signing_keys_file: Path | None = None
    signing_keys: str | None = None
    # Payment modules allowed to call PaymentCallbackService, with their shared
    # secrets: one "<module id> <base64url secret>" per line (a mounted secret).
    payment_module_secrets_file: Path | None = None
    # Proxies whose x-forwarded-for names the client (server/client_address.py).
    trusted_proxies: tuple[Network, ...] = ()

    @property
    def signing_keys_are_secret(self) -> bool:
        """The keys come from a secret (file or variable), not from the database."""
        return self.signing_keys_file is not None or self.signing_keys is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        settings = cls(**read_env(_SPECS, env))
        settings.validate()
        return settings

    def validate(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("CONCERT_TLS_CERT, CONCERT_TLS_KEY: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError(
                "CONCERT_TLS_CLIENT_CA: mutual TLS needs CONCERT_TLS_CERT and CONCERT_TLS_KEY too"
            )
        if self.signing_keys_file is not None and self.signing_keys is not None:
            raise ConfigError("CONCERT_SIGNING_KEYS, CONCERT_SIGNING_KEYS_FILE: set one or neither")
        if self.metrics_listen and self.workers > 1:
            raise ConfigError(
                "CONCERT_METRICS_LISTEN: one metrics port cannot serve several workers; "
                "run CONCERT_WORKERS=1 per container and scale containers instead"
            )
        if self.pool_min_size > self.pool_max_size:
            raise ConfigError(
                "CONCERT_POOL_MIN_SIZE: must not exceed CONCERT_POOL_MAX_SIZE "
                f"(got {self.pool_min_size} > {self.pool_max_size})"
            )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"must be an integer from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return value

    return parse


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number of seconds from 0 to 600") from None
    if not 0 <= value <= 600:
        raise ValueError("must be a number of seconds from 0 to 600")
    return value


def _listen_address(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, for example 127.0.0.1:50051")
    return raw


def _database_url(raw: str) -> str:
    if not raw.startswith(("postgresql://", "postgres://")) and "=" not in raw:
        raise ValueError("must be a postgresql:// URL or a libpq key=value string")
    return raw


def _secret(raw: str) -> str:
    if len(raw) < 16:
        raise ValueError("must be at least 16 characters")
    return raw


def _readable_file(raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise ValueError("must be the path of a readable file")
    return path


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


def _log_format(raw: str) -> str:
    kind = raw.strip().lower()
    if kind not in ("text", "json"):
        raise ValueError("must be text or json")
    return kind


@dataclass(frozen=True)
class Spec:
    """One environment variable: the settings field it sets and its parser."""

    variable: str
    field: str
    parse: Callable[[str], Any]


def read_env(specs: Iterable[Spec], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields the set variables give (unset or empty: the default), parsed;
    ConfigError naming the variable for a bad value."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for spec in specs:
        raw = env.get(spec.variable)
        if raw is None or raw == "":
            continue
        try:
            values[spec.field] = spec.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{spec.variable}: {exc} (got {raw!r})") from None
    return values


_SPECS = (
    Spec("CONCERT_LISTEN", "listen", _listen_address),
    Spec("CONCERT_DATABASE_URL", "database_url", _database_url),
    Spec("CONCERT_DATABASE_READ_URL", "database_read_url", _database_url),
    Spec("CONCERT_DATA_DIR", "data_dir", Path),
    Spec("CONCERT_HOLD_TTL_SECONDS", "hold_ttl_seconds", _integer(1, 86400)),
    Spec("CONCERT_TOKEN_TTL_SECONDS", "token_ttl_seconds", _integer(10, 86400)),
    Spec("CONCERT_SESSION_TTL_SECONDS", "session_ttl_seconds", _integer(60, 30 * 86400)),
    Spec("CONCERT_ADMISSION_CAPACITY", "admission_capacity", _integer(0, 1_000_000)),
    Spec("CONCERT_PASSWORD_HASH_COST", "password_hash_cost", _integer(10, 20)),
    Spec("CONCERT_EXPIRY_INTERVAL_SECONDS", "expiry_interval_seconds", _integer(1, 3600)),
    Spec("CONCERT_ADMIN_KEY", "admin_key", _secret),
    Spec("CONCERT_WORKERS", "workers", _integer(1, 64)),
    Spec("CONCERT_MAX_HOLDS_PER_USER", "max_holds_per_user", _integer(1, 100)),
    Spec("CONCERT_SEAT_LIST_MAX_AGE_MS", "seat_list_max_age_ms", _integer(0, 60_000)),
    Spec("CONCERT_POOL_MIN_SIZE", "pool_min_size", _integer(1, 100)),
    Spec("CONCERT_POOL_MAX_SIZE", "pool_max_size", _integer(1, 500)),
    Spec("CONCERT_STATEMENT_TIMEOUT_MS", "statement_timeout_ms", _integer(100, 600_000)),
    Spec("CONCERT_LOCK_TIMEOUT_MS", "lock_timeout_ms", _integer(10, 600_000)),
    Spec("CONCERT_SHUTDOWN_GRACE_SECONDS", "shutdown_grace_seconds", _seconds),
    Spec(
        "CONCERT_MAX_CONNECTION_AGE_SECONDS", "max_connection_age_seconds", _integer(1, 7 * 86400)
    ),
    Spec(
        "CONCERT_MAX_CONNECTION_AGE_GRACE_SECONDS",
        "max_connection_age_grace_seconds",
        _integer(0, 86400),
    ),
    Spec("CONCERT_SEED_DEMO", "seed_demo", _boolean),
    Spec("CONCERT_LOG_LEVEL", "log_level", _log_level),
    Spec("CONCERT_LOG_FORMAT", "log_format", _log_format),
    Spec("CONCERT_METRICS_LISTEN", "metrics_listen", _listen_address),
    Spec("CONCERT_HEALTH_LISTEN", "health_listen", _listen_address),
    Spec("CONCERT_SIGNING_KEYS_FILE", "signing_keys_file", _readable_file),
    Spec("CONCERT_SIGNING_KEYS", "signing_keys", str),  # parsed at start (server/signing.py)
    Spec("CONCERT_PAYMENT_MODULE_SECRETS_FILE", "payment_module_secrets_file", _readable_file),
    Spec("CONCERT_TLS_CERT", "tls_cert", _readable_file),
    Spec("CONCERT_TLS_KEY", "tls_key", _readable_file),
    Spec("CONCERT_TLS_CLIENT_CA", "tls_client_ca", _readable_file),
    Spec("CONCERT_TRUSTED_PROXIES", "trusted_proxies", parse_networks),
    Spec("CONCERT_IDEMPOTENCY_TTL_HOURS", "idempotency_ttl_hours", _integer(1, 720)),
    Spec("CONCERT_MAX_CONCURRENT_CALLS", "max_concurrent_calls", _integer(1, 1_000_000)),
    Spec(
        "CONCERT_PASSWORD_REFUSALS_AT_ONCE_PER_SECOND",
        "password_refusals_at_once_per_second",
        _integer(1, 1_000_000),
    ),
)

VARIABLES = tuple(spec.variable for spec in _SPECS)
