"""Watch streams and connections that abuse cannot stretch.

- At most two open WatchQueueStatus streams per token: the third is refused.
- Opening a stream does not write the token's row every time.
- A per-process cap on calls in progress answers SERVER_BUSY beyond it.
- A client that pings every 10 s keeps its waiting stream (grpc's default cut
  such clients after ~30 s with "too many pings"), and a waiting stream sends
  its status at least every 30 s, changed or not.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from concert.v1 import queue_pb2
from server.app import App
from server.clock import FakeClock
from server.config import Settings
from server.queue.presence import (
    MAX_STREAMS_PER_TOKEN,
    WATCH_HEARTBEAT_SECONDS,
    WATCH_SILENCE_LIMIT_SECONDS,
)
from server.queue.tokens import read_queue_token
from tests.queue.helpers import fetch_one, issue_all
from tests.support import Stubs, bearer, error_details, eventually, running_app


def _watch(stubs: Stubs, token: str) -> grpc.aio.UnaryStreamCall:
    return stubs.queue.WatchQueueStatus(queue_pb2.WatchQueueStatusRequest(), metadata=bearer(token))


async def test_a_token_holds_at_most_two_streams(app: App, stubs: Stubs) -> None:
    fans = await issue_all(app, stubs, 3)  # capacity 2: fan 3 waits
    token = fans[2][1]
    row_version = await fetch_one(app, "SELECT xmin::text FROM queue_tokens WHERE queue_number = 3")
    streams = [_watch(stubs, token) for _ in range(MAX_STREAMS_PER_TOKEN)]
    for stream in streams:
        first = await stream.read()
        assert first.status.state == queue_pb2.QUEUE_TOKEN_STATE_WAITING
    # Opening them read the row; it wrote nothing (the expiry had no reason to move).
    assert (
        await fetch_one(app, "SELECT xmin::text FROM queue_tokens WHERE queue_number = 3")
        == row_version
    )
    third = _watch(stubs, token)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await third.read()
    details = error_details(err.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_MANY_STREAMS",
    )
    # Closing one frees its place.
    streams[0].cancel()
    claims = read_queue_token(app.ctx.signer, token)
    assert claims is not None
    await eventually(
        lambda: app.queue.stream_count(claims.token_id) < MAX_STREAMS_PER_TOKEN,
        "the cancelled stream's place freed",
        within=5.0,
    )
    again = _watch(stubs, token)
    assert (await again.read()).status.state == queue_pb2.QUEUE_TOKEN_STATE_WAITING
    for stream in (streams[1], again):
        stream.cancel()


async def test_calls_beyond_the_process_cap_are_server_busy(
    settings: Settings, database_url: str, clock: FakeClock
) -> None:
    from tests.conftest import empty_tables

    await empty_tables(database_url)
    async with running_app(settings.replace(max_concurrent_calls=2), database_url, clock) as app:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stubs = Stubs.on(channel)
            fans = await issue_all(app, stubs, 4)
            streams = [_watch(stubs, token) for _, token in fans[2:]]  # two in progress
            for stream in streams:
                await stream.read()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stubs.queue.GetQueueStatus(
                    queue_pb2.GetQueueStatusRequest(), metadata=bearer(fans[0][1])
                )
            details = error_details(err.value)
            assert (details.code, details.reason) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "SERVER_BUSY",
            )
            assert details.retry is not None
            for stream in streams:
                stream.cancel()


@pytest.mark.slow
async def test_a_client_pinging_every_ten_seconds_keeps_its_waiting_stream(
    app: App, database_url: str
) -> None:
    """Real time, bounded: the stream stays open past 30 s with the client's
    keepalive pings, and the heartbeat message arrives with nothing changed."""
    options = [
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(app.address, options=options) as channel:
        stubs = Stubs.on(channel)
        fans = await issue_all(app, stubs, 3)
        stream = _watch(stubs, fans[2][1])
        first = await stream.read()
        assert first.status.state == queue_pb2.QUEUE_TOKEN_STATE_WAITING
        loop = asyncio.get_running_loop()
        started = loop.time()
        heartbeat = await asyncio.wait_for(stream.read(), WATCH_SILENCE_LIMIT_SECONDS + 10)
        waited = loop.time() - started
        assert heartbeat != grpc.aio.EOF, "the stream ended"
        assert heartbeat.status.people_ahead == first.status.people_ahead  # nothing changed
        # Never silent past the limit (1 s of slack for a loaded machine's scheduling).
        assert WATCH_HEARTBEAT_SECONDS - 1 <= waited <= WATCH_SILENCE_LIMIT_SECONDS + 1
        stream.cancel()


# HTTP/2's connection preface and an empty SETTINGS frame, a SETTINGS ACK, and
# the frame types read here (RFC 9113 §3.4, §6.5, §6.7, §6.8).
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
_SETTINGS, _PING, _GOAWAY = 4, 6, 7


async def _idle_connection(
    address: str, *, answer_pings: bool
) -> tuple[list[tuple[float, int]], float]:
    """A raw HTTP/2 client that opens a connection, acknowledges the server's
    settings, makes no call and (if told to) answers pings, until the server
    closes it: the frames it got (seconds after opening, type), and when it closed."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(_PREFACE)
    await writer.drain()
    loop = asyncio.get_running_loop()
    opened = loop.time()
    received, frames = b"", []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout=120):
            received += chunk
            while len(received) >= 9:  # whole frames: 9-byte header, then the payload
                length = int.from_bytes(received[:3], "big")
                if len(received) < 9 + length:
                    break
                kind, flags, payload = received[3], received[4], received[9 : 9 + length]
                received = received[9 + length :]
                frames.append((loop.time() - opened, kind))
                if kind == _SETTINGS and not flags & 1:
                    writer.write(_SETTINGS_ACK)
                elif kind == _PING and not flags & 1 and answer_pings:
                    writer.write(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + payload)
                await writer.drain()
    except ConnectionResetError:
        pass  # closed, the abrupt way
    finally:
        writer.close()
    return frames, loop.time() - opened


@pytest.mark.slow
async def test_a_dead_client_is_dropped_within_about_a_minute(app: App) -> None:
    """Real time, bounded: a client that opened a connection, acknowledged the
    server's settings and then went silent (answers no ping, as a half-open
    client or a vanished phone) is pinged once the connection has been idle 30 s
    and dropped 20 s without an answer later, instead of holding its connection
    (and so its streams) until TCP notices."""
    frames, dropped_after = await _idle_connection(app.address, answer_pings=False)
    pings = [at for at, kind in frames if kind == _PING]
    assert pings, f"never pinged; frames {frames}"
    # The first ping after 30 s idle; the drop within about a minute of going silent.
    assert 29 <= pings[0] <= dropped_after <= 75, (pings[0], dropped_after)


async def test_a_connection_is_told_to_go_at_its_maximum_age(
    settings: Settings, database_url: str, clock: FakeClock
) -> None:
    """A connection lives CONCERT_MAX_CONNECTION_AGE_SECONDS (here 2 s; an hour by
    default): then the server sends GOAWAY, so the client reconnects (and may
    reach another replica), and closes it after the grace for its calls."""
    aged = settings.replace(max_connection_age_seconds=2, max_connection_age_grace_seconds=1)
    async with running_app(aged, database_url, clock) as app:
        frames, closed_after = await _idle_connection(app.address, answer_pings=True)
    goaways = [at for at, kind in frames if kind == _GOAWAY]
    assert goaways, f"no GOAWAY; frames {frames}"
    # The age, give or take grpc's 10 % jitter; closed after the grace, not long after.
    assert 1.7 <= goaways[0] <= 2.5 and goaways[0] <= closed_after <= goaways[0] + 5, (
        goaways,
        closed_after,
    )
