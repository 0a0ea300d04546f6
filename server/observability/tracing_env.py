"""When to trace: what the standard OTEL_* variables ask for, checked at start.

On when OTEL_TRACES_EXPORTER says `otlp`, or is unset while an OTLP endpoint
is given (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
off when it says `none` or nothing asks; OTEL_SDK_DISABLED=true turns it off
whatever else says. Only OTLP over gRPC is installed: another exporter or
protocol is a configuration error (exit 2), not a silent "off". Kept apart
from tracing.py so that deciding costs no SDK import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.config import ConfigError

if TYPE_CHECKING:
    from server.observability.tracing import Tracing

_TRUE = ("true", "1", "yes", "on")


@dataclass(frozen=True)
class TracingConfig:
    """What the OTEL_* variables ask for, checked at start (a bad value exits 2)."""

    enabled: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TracingConfig:
        env = os.environ if environ is None else environ
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
            return cls(enabled=False)
        exporters = [
            name.strip().lower()
            for name in env.get("OTEL_TRACES_EXPORTER", "").split(",")
            if name.strip()
        ]
        if not exporters:
            endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            )
            exporters = ["otlp"] if endpoint else ["none"]
        if exporters == ["none"]:
            return cls(enabled=False)
        if exporters != ["otlp"]:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER: {','.join(exporters)!r} is not supported (otlp or none)"
            )
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
        )
        if protocol.strip().lower() != "grpc":
            raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported (grpc)")
        return cls(enabled=True)

    def start(self) -> Tracing | None:
        """The process's tracing, exporting over OTLP; None when off."""
        if not self.enabled:
            return None
        # Imported only now: with tracing off, no OpenTelemetry SDK is loaded.
        from server.observability.tracing import Tracing

        return Tracing.exporting_over_otlp()
