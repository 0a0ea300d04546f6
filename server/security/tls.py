"""Optional TLS and mutual TLS for the gRPC port, from CONCERT_TLS_* PEM files.

CONCERT_TLS_CERT + CONCERT_TLS_KEY: the port speaks TLS only (plaintext
clients cannot connect). CONCERT_TLS_CLIENT_CA in addition: the handshake
requires a client certificate signed by that CA (mutual TLS), so only
holders of such a certificate reach any method at all. Neither: plaintext,
for a loopback or a mesh that terminates TLS in front of the server.
"""

from __future__ import annotations

import grpc

from server.config import Settings


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The port's credentials, or None for plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
