"""Optional TLS and mutual TLS (CONCERT_TLS_*), with a CA these tests make and throw away."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from concert.v1 import account_pb2
from server.app import App, build_app
from server.clock import FakeClock
from server.config import ConfigError, Settings
from tests.support import Stubs


@dataclass
class Issued:
    cert: bytes
    key: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class ThrowawayCA:
    """A certificate authority that lives for one test."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass
class Pki:
    ca: ThrowawayCA
    server: Issued
    client: Issued
    stranger: Issued  # a client certificate from another CA
    directory: Path

    def write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = ThrowawayCA("concert test CA")
    return Pki(
        ca,
        ca.issue("localhost", server=True),
        ca.issue("bench client", server=False),
        ThrowawayCA("someone else's CA").issue("intruder", server=False),
        tmp_path,
    )


async def _serve(settings: Settings, database_url: str) -> AsyncIterator[App]:
    app = await build_app(
        settings,
        database_url=database_url,
        clock=FakeClock(dt.datetime.now(dt.UTC)),
        start_jobs=False,
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=0.5)


async def _sign_up(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        try:
            await Stubs.on(channel).account.SignUp(
                account_pb2.SignUpRequest(email="tls@example.com", password="short"), timeout=10
            )
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


# The server answered (INVALID_ARGUMENT for the short password): the channel works.
REACHED = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def tls_settings(settings: Settings, pki: Pki) -> Settings:
    return settings.replace(
        tls_cert=pki.write("server.pem", pki.server.cert),
        tls_key=pki.write("server.key", pki.server.key),
    )


async def test_tls_serves_trusting_clients_and_refuses_plaintext(
    tls_settings: Settings, pki: Pki, database_url: str
) -> None:
    async for app in _serve(tls_settings, database_url):
        trusting = grpc.ssl_channel_credentials(root_certificates=pki.ca.pem)
        assert await _sign_up(app.address, trusting) == REACHED
        assert await _sign_up(app.address, None) == grpc.StatusCode.UNAVAILABLE
        # A client that does not trust the server's CA does not talk to it.
        other = ThrowawayCA("not ours").pem
        untrusting = grpc.ssl_channel_credentials(root_certificates=other)
        assert await _sign_up(app.address, untrusting) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_ca(
    tls_settings: Settings, pki: Pki, database_url: str
) -> None:
    settings = tls_settings.replace(tls_client_ca=pki.write("client-ca.pem", pki.ca.pem))
    async for app in _serve(settings, database_url):
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.pem,
            private_key=pki.client.key,
            certificate_chain=pki.client.cert,
        )
        assert await _sign_up(app.address, with_cert) == REACHED
        without_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca.pem)
        assert await _sign_up(app.address, without_cert) == grpc.StatusCode.UNAVAILABLE
        stranger = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.pem,
            private_key=pki.stranger.key,
            certificate_chain=pki.stranger.cert,
        )
        assert await _sign_up(app.address, stranger) == grpc.StatusCode.UNAVAILABLE
        assert await _sign_up(app.address, None) == grpc.StatusCode.UNAVAILABLE


def test_tls_settings_are_read_and_checked_from_the_environment(pki: Pki) -> None:
    cert = pki.write("server.pem", pki.server.cert)
    key = pki.write("server.key", pki.server.key)
    ca = pki.write("ca.pem", pki.ca.pem)
    settings = Settings.from_env(
        {
            "CONCERT_TLS_CERT": str(cert),
            "CONCERT_TLS_KEY": str(key),
            "CONCERT_TLS_CLIENT_CA": str(ca),
        }
    )
    assert (settings.tls_cert, settings.tls_key, settings.tls_client_ca) == (cert, key, ca)
    with pytest.raises(ConfigError, match="CONCERT_TLS_CERT, CONCERT_TLS_KEY"):
        Settings.from_env({"CONCERT_TLS_CERT": str(cert)})
    with pytest.raises(ConfigError, match="CONCERT_TLS_CLIENT_CA"):
        Settings.from_env({"CONCERT_TLS_CLIENT_CA": str(ca)})
    with pytest.raises(ConfigError, match=r"^CONCERT_TLS_KEY: must be the path of a readable file"):
        Settings.from_env({"CONCERT_TLS_CERT": str(cert), "CONCERT_TLS_KEY": "/no/such.key"})


async def test_probes_work_with_mutual_tls_through_the_plaintext_health_port(
    tls_settings: Settings, pki: Pki, database_url: str
) -> None:
    """With mutual TLS on the service port, the manifests' probes (`python -m
    server healthcheck` against CONCERT_HEALTH_LISTEN) still answer: the health
    port speaks plaintext and serves health only."""
    settings = tls_settings.replace(
        tls_client_ca=pki.write("client-ca.pem", pki.ca.pem), health_listen="127.0.0.1:0"
    )
    async for app in _serve(settings, database_url):
        health = f"127.0.0.1:{app.health_port}"
        for service in ("liveness", "readiness"):
            env = {
                **os.environ,
                "CONCERT_LISTEN": app.address,
                "CONCERT_HEALTH_LISTEN": health,
            }
            env.pop("CONCERT_DATABASE_URL", None)
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server", "healthcheck", "--service", service,
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await asyncio.wait_for(child.communicate(), timeout=60)
            assert (child.returncode, b"SERVING" in output) == (0, True), output
        # The health port serves nothing else: no concert.v1 over plaintext.
        assert await _sign_up(health, None) == grpc.StatusCode.UNIMPLEMENTED
