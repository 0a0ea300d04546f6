"""Page tokens and page sizes (server/validation.py), and the list methods' cursor checks.

A page token is an opaque base64url JSON cursor: decoding accepts exactly what
encode_page_token made with the method's keys (at most 512 characters) and
names any other value as a bad `page_token`. The list methods of
server/booking/concerts.py check their cursor's fields before any read: those
checks are reached here with a service context that fails on any use, so a
cursor that passes them is seen to go on to the database (DatabaseTouched),
and one that fails them is refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concert.v1 import concert_pb2
from server import base64url
from server.booking.concerts import (
    _page,
    list_available_dates,
    list_available_seats,
    list_concerts,
)
from server.errors import InvalidArgument, Violations
from server.validation import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_PAGE_TOKEN_LENGTH,
    decode_page_token,
    encode_page_token,
    parse_page_size,
    parse_request_id,
    parse_uuid,
)
from tests.unit.helpers import DatabaseTouched, no_booking, no_context

BAD_TOKEN = ("page_token", "not a page token this method returned")


def reported(violations: Violations) -> list[tuple[str, str]]:
    """The (field, description) pairs the violations would send back, in order."""
    try:
        violations.raise_if_any()
    except InvalidArgument as error:
        return [(v.field, v.description) for v in error.violations]
    return []


def decode(value: str, keys: frozenset[str]) -> tuple[dict[str, Any] | None, list]:
    violations = Violations()
    return decode_page_token(violations, value, keys), reported(violations)


# -- encode / decode -------------------------------------------------------------

_json_values = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=30)
_positions = st.dictionaries(st.text(min_size=1, max_size=8), _json_values, max_size=5)


@given(_positions)
def test_a_token_decodes_to_its_position_if_short_enough_and_is_refused_otherwise(
    position: dict[str, Any],
) -> None:
    token = encode_page_token(position)
    decoded, problems = decode(token, frozenset(position))
    if len(token) <= MAX_PAGE_TOKEN_LENGTH:
        assert (decoded, problems) == (position, [])
    else:
        assert (decoded, problems) == (None, [BAD_TOKEN])


@given(_positions)
def test_a_token_is_url_safe_text_and_the_same_whatever_the_key_order(
    position: dict[str, Any],
) -> None:
    token = encode_page_token(position)
    reordered = dict(reversed(list(position.items())))
    assert encode_page_token(reordered) == token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_no_token_is_the_first_page_and_no_fault() -> None:
    assert decode("", frozenset({"d", "after"})) == (None, [])


@pytest.mark.parametrize(
    "position",
    [
        {"d": "x"},  # a key missing
        {"d": "x", "after": 1, "extra": 2},  # a key too many
        {"t": "x", "id": "y"},  # another method's cursor
    ],
)
def test_a_cursor_without_exactly_the_methods_keys_is_refused(position: dict[str, Any]) -> None:
    assert decode(encode_page_token(position), frozenset({"d", "after"})) == (None, [BAD_TOKEN])


@pytest.mark.parametrize("document", ["[1, 2]", "7", '"text"', "null", "true", "{", "{}}"])
def test_json_that_is_not_an_object_is_refused(document: str) -> None:
    token = base64url.encode(document.encode())
    assert decode(token, frozenset()) == (None, [BAD_TOKEN])


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        base64url.encode(b'{"after":1,"d":"x"}') + "=",  # padded
        encode_page_token({"after": 1, "d": ">>>"}).replace("-", "+"),  # standard alphabet
        encode_page_token({"after": 1, "d": "???"}).replace("_", "/"),
        base64url.encode(b"\xff\xfe\x00"),  # not UTF-8 or JSON
        "A",  # no whole byte
    ],
)
def test_anything_but_a_canonical_base64url_json_object_is_refused(token: str) -> None:
    assert decode(token, frozenset({"d", "after"})) == (None, [BAD_TOKEN])


def test_a_well_formed_token_over_512_characters_is_refused_one_of_512_is_not() -> None:
    # Well-formed, with the right keys, but over the limit.
    position = {"d": "x" * 400}
    token = encode_page_token(position)
    assert len(token) > MAX_PAGE_TOKEN_LENGTH
    assert decode(token, frozenset({"d"})) == (None, [BAD_TOKEN])
    short = {"d": "x" * (MAX_PAGE_TOKEN_LENGTH * 3 // 4 - 8)}  # 512 characters exactly
    assert len(encode_page_token(short)) == MAX_PAGE_TOKEN_LENGTH
    assert decode(encode_page_token(short), frozenset({"d"})) == (short, [])


def test_the_violation_names_the_field_it_was_read_from() -> None:
    violations = Violations()
    decode_page_token(violations, "###", frozenset({"d"}), field="next.page_token")
    assert reported(violations) == [("next.page_token", BAD_TOKEN[1])]


# -- page sizes, ids ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "given_"),
    [(0, DEFAULT_PAGE_SIZE), (1, 1), (999, 999), (1000, 1000), (1001, 1000), (2**31 - 1, 1000)],
)
def test_page_size_zero_is_the_default_and_above_the_maximum_is_coerced(
    asked: int, given_: int
) -> None:
    violations = Violations()
    assert parse_page_size(violations, asked) == given_
    assert reported(violations) == []


def test_a_negative_page_size_is_named_and_the_default_used() -> None:
    violations = Violations()
    assert parse_page_size(violations, -1) == DEFAULT_PAGE_SIZE
    assert reported(violations) == [("page_size", "must not be negative")]


@given(st.integers(-(2**31), 2**31 - 1))
def test_a_page_size_is_always_from_1_to_the_maximum(asked: int) -> None:
    assert 1 <= parse_page_size(Violations(), asked) <= MAX_PAGE_SIZE


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "required"),
        ("not-a-uuid", "must be a UUID"),
        ("0" * 65, "must be a UUID"),  # too long to try
        # uuid.UUID would read this one (it drops hyphens), but ids are at most 64 characters.
        ("-" * 33 + uuid.UUID(int=1).hex, "must be a UUID"),
    ],
)
def test_a_required_uuid_field_names_what_is_wrong(value: str, problem: str) -> None:
    violations = Violations()
    assert parse_uuid(violations, "date_id", value) is None
    assert reported(violations) == [("date_id", problem)]


def test_a_uuid_field_in_any_spelling_uuid_accepts_is_read() -> None:
    violations = Violations()
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert parse_uuid(violations, "date_id", str(value).upper()) == value
    assert parse_uuid(violations, "date_id", value.hex) == value
    assert reported(violations) == []


def test_an_empty_request_id_means_no_deduplication_a_bad_one_is_named() -> None:
    violations = Violations()
    assert parse_request_id(violations, "") is None
    assert reported(violations) == []
    assert parse_request_id(violations, "x") is None
    assert reported(violations) == [("request_id", "must be a UUID")]


# -- pages -------------------------------------------------------------------------


@given(st.lists(st.integers(), max_size=30), st.integers(1, 25))
def test_a_next_page_exists_only_past_page_size_rows_and_starts_after_the_last_shown(
    rows: list[int], page_size: int
) -> None:
    """The queries ask for page_size + 1 rows; _page cuts and picks the cursor row."""
    shown, last = _page(rows, page_size)
    assert shown == rows[:page_size]
    assert last == (rows[page_size - 1] if len(rows) > page_size else None)


# -- the list methods' cursors, checked before any read -----------------------------

DATE = "3f1c8a52-6a3b-4b6f-9a53-2b2b7b1d9a10"
CONCERT = "7d0a2f14-8c0e-4d7b-a1b5-0c4b1f6e2e11"
T = datetime(2030, 5, 1, 12, tzinfo=UTC).isoformat()


async def refusal(call: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as caught:
        await call
    return [(v.field, v.description) for v in caught.value.violations]


@pytest.mark.parametrize("after", [0, 1, 2**31 - 1])
async def test_a_seat_cursor_of_this_date_goes_on_to_the_seats(after: int) -> None:
    token = encode_page_token({"d": DATE, "after": after})
    request = concert_pb2.ListAvailableSeatsRequest(date_id=DATE, page_token=token)
    with pytest.raises(DatabaseTouched):
        await list_available_seats(no_context(), no_booking(), request)


@pytest.mark.parametrize(
    "position",
    [
        {"d": "11111111-1111-4111-8111-111111111111", "after": 5},  # another date's
        {"d": DATE, "after": True},  # a bool is an int to Python, not to PostgreSQL
        {"d": DATE, "after": -1},
        {"d": DATE, "after": 2**31},
        {"d": DATE, "after": "5"},
        {"d": DATE, "after": 5.0},
        {"d": DATE, "after": None},
    ],
)
async def test_a_seat_cursor_of_another_date_or_an_edited_one_is_refused(
    position: dict[str, Any],
) -> None:
    request = concert_pb2.ListAvailableSeatsRequest(
        date_id=DATE, page_token=encode_page_token(position)
    )
    assert await refusal(list_available_seats(no_context(), no_booking(), request)) == [
        ("page_token", "not a page token of this date")
    ]


async def test_every_bad_field_of_a_seat_list_is_named_in_one_reply() -> None:
    request = concert_pb2.ListAvailableSeatsRequest(
        date_id="nope", page_size=-5, page_token=encode_page_token({"t": T, "id": DATE})
    )
    assert await refusal(list_available_seats(no_context(), no_booking(), request)) == [
        ("date_id", "must be a UUID"),
        ("page_size", "must not be negative"),
        BAD_TOKEN,
    ]


async def test_a_concert_cursor_with_an_aware_time_and_an_id_goes_on_to_the_concerts() -> None:
    token = encode_page_token({"t": T, "id": CONCERT})
    with pytest.raises(DatabaseTouched):
        await list_concerts(no_context(), concert_pb2.ListConcertsRequest(page_token=token))


@pytest.mark.parametrize(
    "position",
    [
        {"t": "2030-05-01T12:00:00", "id": CONCERT},  # no time zone
        {"t": "yesterday", "id": CONCERT},
        {"t": 1_900_000_000, "id": CONCERT},
        {"t": T, "id": "not-a-uuid"},
        {"t": T, "id": 7},
        {"t": [T], "id": CONCERT},
    ],
)
async def test_an_edited_concert_cursor_is_refused(position: dict[str, Any]) -> None:
    request = concert_pb2.ListConcertsRequest(page_token=encode_page_token(position))
    assert await refusal(list_concerts(no_context(), request)) == [BAD_TOKEN]


async def test_a_date_cursor_of_this_concert_goes_on_to_the_dates() -> None:
    token = encode_page_token({"c": CONCERT, "t": T, "id": DATE})
    request = concert_pb2.ListAvailableDatesRequest(concert_id=CONCERT, page_token=token)
    with pytest.raises(DatabaseTouched):
        await list_available_dates(no_context(), request)


async def test_a_date_cursor_of_another_concert_is_refused() -> None:
    other = "22222222-2222-4222-8222-222222222222"
    token = encode_page_token({"c": other, "t": T, "id": DATE})
    request = concert_pb2.ListAvailableDatesRequest(concert_id=CONCERT, page_token=token)
    assert await refusal(list_available_dates(no_context(), request)) == [
        ("page_token", "belongs to another concert")
    ]


async def test_a_concerts_cursor_is_no_dates_cursor() -> None:
    token = encode_page_token({"t": T, "id": CONCERT})
    request = concert_pb2.ListAvailableDatesRequest(concert_id=CONCERT, page_token=token)
    assert await refusal(list_available_dates(no_context(), request)) == [BAD_TOKEN]


def test_the_cursor_keys_are_compact_json() -> None:
    """What a token carries is the JSON the methods write, nothing more (no spaces, sorted)."""
    token = encode_page_token({"d": DATE, "after": 7})
    assert json.loads(base64url.decode(token)) == {"after": 7, "d": DATE}
    assert base64url.decode(token) == f'{{"after":7,"d":"{DATE}"}}'.encode()
