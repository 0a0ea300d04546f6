"""No file in server/ but the unit of work begins or commits a transaction."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
OWNER = SERVER / "db" / "unit_of_work.py"
_TRANSACTION_SQL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|START TRANSACTION)\b|;\s*COMMIT\b", re.I)


def transaction_starts(source: str) -> list[int]:
    """Lines that open or end a transaction another way than through the unit of work:
    psycopg's conn.transaction() / commit() / rollback(), or BEGIN/COMMIT sent as SQL."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("transaction", "commit", "rollback"):
                found.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _TRANSACTION_SQL.search(node.value):
                found.append(node.lineno)
    return found


def test_the_scanner_sees_each_way_of_opening_a_transaction() -> None:
    source = """
async def f(conn):
    async with conn.transaction():
        await conn.execute("BEGIN")
        await conn.execute("UPDATE t SET x = 1; COMMIT")
        await conn.commit()
"""
    assert sorted(transaction_starts(source)) == [3, 4, 5, 6]


def test_only_the_unit_of_work_begins_and_commits() -> None:
    offenders = {
        str(path.relative_to(SERVER)): lines
        for path in sorted(SERVER.rglob("*.py"))
        if path != OWNER and (lines := transaction_starts(path.read_text()))
    }
    assert offenders == {}
    assert transaction_starts(OWNER.read_text())  # and it does
