"""The typed TypeScript client pays through the sandbox payment module
(tests/e2e/node/src/module_walk.ts) against the server and the module as two
processes, and what it says it did is checked against both databases.

The walk stops once, printing `lapse <reservation id>`: this test then lets
that hold lapse in the server's database (the server's clock is its own) and
answers `lapsed` on the walk's stdin.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import psycopg

from tests.e2e.fan_walks import SEAT_PRICE, create_concert
from tests.e2e.module_pair import ModulePair
from tests.e2e.toolchains import NODE_CLIENT, SERVICE_CONFIG, build_typescript_client
from tests.payment_modules import MODULE

WALK_TIMEOUT_SECONDS = 180
WALK_STEPS = ("browse", "top-up", "module pay", "server paid", "decline", "refund")


def run_walk(pair: ModulePair, log_dir: Path) -> list[str]:
    """module_walk.js run to its end, lapsing the hold it names; its stdout lines."""
    node, walk = build_typescript_client()
    module_walk = walk.with_name("module_walk.js")
    assert module_walk.exists(), f"tsc wrote no {module_walk}"
    stderr_path = log_dir / "module_walk.stderr"
    with stderr_path.open("w") as stderr:
        walking = subprocess.Popen(
            [
                *node.node,
                str(module_walk),
                pair.server.address,
                pair.module.address,
                MODULE,
                str(SERVICE_CONFIG),
            ],
            cwd=NODE_CLIENT,
            env=node.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    # A walk that hangs is killed, which ends the reading below.
    watchdog = threading.Timer(WALK_TIMEOUT_SECONDS, walking.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        assert walking.stdin is not None and walking.stdout is not None
        for line in walking.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("lapse "):
                pair.lapse_hold(line.split()[1])
                walking.stdin.write("lapsed\n")
                walking.stdin.close()  # the one answer the walk waits for
        code = walking.wait()
    finally:
        watchdog.cancel()
        if walking.poll() is None:
            walking.kill()
            walking.wait()
    output = "\n".join(lines)
    assert code == 0, f"module_walk.js exit {code}:\n{output}\n{stderr_path.read_text()}"
    return lines


def test_typescript_client_pays_through_the_module(module_pair: ModulePair, tmp_path: Path) -> None:
    concert = create_concert(module_pair.server.address, "Module walk")
    lines = run_walk(module_pair, tmp_path)
    steps = [line.removeprefix("ok  ") for line in lines if line.startswith("ok  ")]
    assert tuple(steps) == WALK_STEPS, lines
    summary: dict[str, Any] = json.loads(lines[-1])
    paid, refunded = summary["paid"], summary["refunded"]
    assert summary["date_id"] == concert.dates[0].date_id
    assert int(paid["amount"]) == int(refunded["amount"]) == SEAT_PRICE
    check_server_book(module_pair.server_url, summary["date_id"], paid, refunded)
    check_module_book(module_pair.module_url, paid, refunded)
    module_pair.settled()


def check_server_book(
    url: str, date_id: str, paid: dict[str, Any], refunded: dict[str, Any]
) -> None:
    """One seat sold, to the buyer, by one payment the module reported; the
    lapsed fan's payment refused, with the refund asked for."""
    with psycopg.connect(url) as conn:
        sold = conn.execute(
            "SELECT seat_number, reservation_id::text FROM seats WHERE date_id = %s AND sold",
            (date_id,),
        ).fetchall()
        assert sold == [(paid["seat_number"], paid["reservation_id"])]
        payments = conn.execute(
            "SELECT id::text, reservation_id::text, user_id::text, amount, state, module_id,"
            " module_payment_id FROM payments WHERE reservation_id IN (%s, %s)",
            (paid["reservation_id"], refunded["reservation_id"]),
        ).fetchall()
        assert payments == [
            (
                paid["server_payment_id"],
                paid["reservation_id"],
                paid["user_id"],
                SEAT_PRICE,
                "completed",
                MODULE,
                paid["module_payment_id"],
            )
        ]
        states = dict(
            conn.execute(
                "SELECT id::text, state FROM reservations WHERE id IN (%s, %s)",
                (paid["reservation_id"], refunded["reservation_id"]),
            ).fetchall()
        )
        assert states[paid["reservation_id"]] == "paid"
        assert states[refunded["reservation_id"]] in {"held", "expired"}
        refund_requests = conn.execute(
            "SELECT module_payment_id, reservation_id::text, user_id::text, amount, reason"
            " FROM module_refund_requests WHERE module_id = %s",
            (MODULE,),
        ).fetchall()
        assert refund_requests == [
            (
                refunded["module_payment_id"],
                refunded["reservation_id"],
                refunded["user_id"],
                SEAT_PRICE,
                "RESERVATION_NOT_HELD",
            )
        ]


def check_module_book(url: str, paid: dict[str, Any], refunded: dict[str, Any]) -> None:
    """Three payments at the module: kept, declined, refunded; balances to match."""
    with psycopg.connect(url) as conn:
        payments = {
            str(row[0]): row[1:]
            for row in conn.execute(
                "SELECT payment_id, reservation_id::text, amount, state, server_answer,"
                " server_payment_id, coalesce(decline_reason, refund_reason)"
                " FROM payments"
            )
        }
        balances = dict(conn.execute("SELECT account_id, balance FROM accounts").fetchall())
    assert payments == {
        paid["module_payment_id"]: (
            paid["reservation_id"],
            SEAT_PRICE,
            "succeeded",
            "paid",
            paid["server_payment_id"],
            None,
        ),
        refunded["declined_payment_id"]: (
            refunded["reservation_id"],
            SEAT_PRICE,
            "declined",
            "not_reported",
            None,
            "CARD_DECLINED",
        ),
        refunded["module_payment_id"]: (
            refunded["reservation_id"],
            SEAT_PRICE,
            "refunded",
            "refund",
            None,
            "RESERVATION_NOT_HELD",
        ),
    }
    # The buyer topped up the price and 1500 more; the lapsed fan the price.
    assert (int(paid["balance"]), int(refunded["balance"])) == (1500, SEAT_PRICE)
    assert balances == {paid["account_id"]: 1500, refunded["account_id"]: SEAT_PRICE}
