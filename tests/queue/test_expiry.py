"""The expiry job: counts each lapsed token once, even when runs race."""

from __future__ import annotations

import asyncio

import psycopg

from server.app import App
from server.clock import FakeClock
from server.queue.expiry import JOB_NAME, expire_and_count
from tests.queue.helpers import complete, fetch_one, issue_all


async def test_the_job_expires_lapsed_tokens_and_advances_the_counter(
    app: App, stubs: object, clock: FakeClock
) -> None:
    await issue_all(app, stubs, 5)
    ttl = app.ctx.settings.token_ttl_seconds
    clock.advance(ttl - 1)
    assert (await app.ctx.jobs.run_now(JOB_NAME)).result == 0
    clock.advance(1)
    run = await app.ctx.jobs.run_now(JOB_NAME)
    assert run.ran and run.result == 5
    assert await fetch_one(app, "SELECT completed_count FROM queue_state") == (5,)
    assert await fetch_one(
        app,
        "SELECT count(*) FROM queue_tokens WHERE state = 'expired' AND ended_at = %s",
        clock.now(),
    ) == (5,)
    assert app.queue.state.completed_count == 5  # applied at once in this process
    assert (await app.ctx.jobs.run_now(JOB_NAME)).result == 0  # nothing counted twice


async def test_two_runners_racing_on_one_database_count_each_token_once(
    app: App, stubs: object, clock: FakeClock, database_url: str
) -> None:
    """The job's SQL alone is safe: two connections run it at once, bypassing the job lock."""
    for round_ in range(5):
        await issue_all(app, stubs, 40)
        clock.advance(app.ctx.settings.token_ttl_seconds)
        connections = [
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) for _ in range(3)
        ]
        try:
            results = await asyncio.gather(*(expire_and_count(conn, clock) for conn in connections))
        finally:
            for conn in connections:
                await conn.close()
        assert sum(expired for expired, _ in results) == 40, round_
    expired, completed = await fetch_one(
        app,
        "SELECT (SELECT count(*) FROM queue_tokens WHERE state = 'expired'),"
        " (SELECT completed_count FROM queue_state)",
    )
    assert expired == completed == 200


async def test_a_payment_and_the_job_racing_count_a_token_once(
    app: App, stubs: object, clock: FakeClock
) -> None:
    tokens = await issue_all(app, stubs, 30)
    clock.advance(app.ctx.settings.token_ttl_seconds)
    outcomes = await asyncio.gather(
        app.ctx.jobs.run_now(JOB_NAME), *(complete(app, token) for _, token in tokens)
    )
    job_count = outcomes[0].result
    completed_by_payment = sum(1 for done in outcomes[1:] if done)
    assert job_count + completed_by_payment == 30
    assert await fetch_one(app, "SELECT completed_count FROM queue_state") == (30,)
    # And a second completion of any token changes nothing.
    assert not await complete(app, tokens[0][1])
    assert await fetch_one(app, "SELECT completed_count FROM queue_state") == (30,)


async def test_the_job_is_scheduled_at_the_configured_interval(app: App) -> None:
    assert JOB_NAME in app.ctx.jobs.names
    job = app.ctx.jobs._jobs[JOB_NAME]
    assert job.interval_seconds == app.ctx.settings.expiry_interval_seconds
