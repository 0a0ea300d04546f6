"""The unit of work's lock order, checked by code: a lock asked for out of order fails."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.db.unit_of_work import Lock, LockKind, LockOrder, LockOrderError


def test_locks_in_rank_order_are_admitted_and_sorted() -> None:
    order = LockOrder()
    token, reservation = uuid.uuid4(), uuid.uuid4()
    # Declared in any order within one statement: taken sorted by rank.
    taken = order.admit(
        [Lock.of(LockKind.RESERVATION, reservation), Lock.of(LockKind.QUEUE_TOKEN, token)]
    )
    assert [lock.kind for lock in taken] == [LockKind.QUEUE_TOKEN, LockKind.RESERVATION]
    order.admit([Lock.of(LockKind.WALLET, "w"), Lock.of(LockKind.SEAT, "s")])
    order.admit([Lock.of(LockKind.QUEUE_TOKEN, token)])  # already held: always fine
    order.admit([Lock.of(LockKind.CONCERT_DATE, "d"), Lock.of(LockKind.QUEUE_STATE)])


def test_a_lower_rank_after_a_higher_one_is_refused() -> None:
    order = LockOrder()
    order.admit([Lock.of(LockKind.RESERVATION, "r")])
    with pytest.raises(LockOrderError, match=r"QUEUE_TOKEN.*after RESERVATION"):
        order.admit([Lock.of(LockKind.QUEUE_TOKEN, "t")])
    assert [lock.kind for lock in order.taken] == [LockKind.RESERVATION]


def test_within_a_kind_keys_go_up() -> None:
    order = LockOrder()
    order.admit([Lock.of(LockKind.SEAT, "b")])
    order.admit([Lock.of(LockKind.SEAT, "c")])
    with pytest.raises(LockOrderError):
        order.admit([Lock.of(LockKind.SEAT, "a")])
    # "The rows this statement matches" has no key order of its own.
    order.admit([Lock.of(LockKind.SEAT)])


def test_a_lock_that_never_waits_is_exempt() -> None:
    order = LockOrder()
    order.admit([Lock.of(LockKind.QUEUE_STATE)])
    order.admit([Lock.of(LockKind.QUEUE_TOKEN, waits=False)])  # SKIP LOCKED
    with pytest.raises(LockOrderError):
        order.admit([Lock.of(LockKind.QUEUE_TOKEN)])


def test_advisory_kinds_have_keys_and_row_kinds_do_not() -> None:
    user = uuid.uuid4()
    namespace, key = Lock.of(LockKind.HOLD_CAP, user).advisory_key()
    assert (namespace, key) == Lock.of(LockKind.HOLD_CAP, str(user)).advisory_key()
    assert Lock.of(LockKind.ADMISSION).advisory_key()[1] == 0
    with pytest.raises(KeyError):
        Lock.of(LockKind.SEAT, "s").advisory_key()


kinds = st.sampled_from(list(LockKind))
locks = st.builds(Lock.of, kinds, st.sampled_from(["", "a", "b", "c"]))


@given(st.lists(st.lists(locks, max_size=3), max_size=6))
def test_whatever_is_admitted_was_taken_in_order(statements: list[list[Lock]]) -> None:
    """Any run of statements: the locks admitted form one non-decreasing sequence,
    and a refused statement is one that would have gone back."""
    order = LockOrder()
    for statement in statements:
        before = list(order.taken)
        try:
            order.admit(statement)
        except LockOrderError:
            assert order.taken == before
            assert any(
                lock.comes_before(held) for lock in statement if lock.waits for held in before
            )
    for earlier, later in zip(order.taken, order.taken[1:], strict=False):
        assert not later.comes_before(earlier)
