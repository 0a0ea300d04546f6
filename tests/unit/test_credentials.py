"""Credentials: how they are read from metadata, spelled, issued and checked.

- bearer_credential (server/credentials.py): `authorization: Bearer <value>`;
  another scheme or an oversized value is "" (malformed), no header is None;
- base64url (server/base64url.py): unpadded RFC 4648 §5, and only the one
  canonical spelling of each byte string decodes;
- session credentials (server/accounts/sessions.py, authenticate_session in
  server/accounts/authentication.py): a signed (user id, expiry to the
  millisecond), refused from its expiry on (or up to `expired_for` later, as
  a proof of a past sign-in);
- queue tokens (server/queue/tokens.py): signed (token id, user id, number,
  expiry to the microsecond), read whether expired or not;
- the operator's key (server/admin_auth.py check_admin_key);
- a payment module's signature timestamp (server/module_signing.py): decimal
  Unix seconds in their one canonical spelling.
"""

from __future__ import annotations

import base64
import struct
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from concert.v1.error_reason_pb2 import ErrorReason
from server import base64url, module_signing
from server.accounts import sessions
from server.accounts.authentication import authenticate_session
from server.accounts.sessions import Session, issue_session, verify_session
from server.admin_auth import check_admin_key
from server.clock import FakeClock
from server.credentials import MAX_CREDENTIAL_LENGTH, bearer_credential
from server.errors import PermissionDenied, Unauthenticated
from server.queue import tokens
from server.queue.tokens import QueueToken, read_queue_token, sign_queue_token
from server.signing import Signer
from tests.unit.helpers import KEY_A, KEY_B, NOW

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
USER = uuid.UUID("6f1b0a3e-0d6c-4a4e-9a0c-2a4f3c9b7e01")

# -- bearer_credential ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (None, None),
        ((), None),
        ((("x-other", "Bearer abc"),), None),
        ((("authorization", "Bearer abc"),), "abc"),
        ((("authorization", "bearer abc"),), "abc"),  # the scheme in any case
        ((("authorization", "BEARER abc"),), "abc"),
        ((("authorization", "Bearer   abc  "),), "abc"),
        ((("authorization", b"Bearer abc"),), "abc"),  # binary metadata
        ((("authorization", "Basic abc"),), ""),
        ((("authorization", "abc"),), ""),
        ((("authorization", "Bearer"),), ""),
        ((("x-other", "1"), ("authorization", "Bearer abc")), "abc"),
        ((("authorization", "Bearer first"), ("authorization", "Bearer second")), "first"),
    ],
)
def test_the_bearer_value_of_the_authorization_header(
    metadata: tuple[tuple[str, str | bytes], ...] | None, expected: str | None
) -> None:
    assert bearer_credential(metadata) == expected


def test_a_credential_over_the_length_limit_is_malformed_not_absent() -> None:
    at_limit = "a" * MAX_CREDENTIAL_LENGTH
    assert bearer_credential([("authorization", f"Bearer {at_limit}")]) == at_limit
    assert bearer_credential([("authorization", f"Bearer {at_limit}b")]) == ""


def test_binary_metadata_is_read_as_latin_1() -> None:
    assert bearer_credential([("authorization", b"Bearer caf\xe9")]) == "caf\u00e9"


# -- base64url -------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_base64url_round_trips_without_padding_in_the_url_safe_alphabet(data: bytes) -> None:
    text = base64url.encode(data)
    assert base64url.decode(text) == data
    assert set(text) <= set(ALPHABET)
    assert len(text) == -(-len(data) * 4 // 3)  # ceil(4n/3): no "=" padding


@given(st.text(alphabet=ALPHABET + "=+/ .!\n", max_size=40))
def test_base64url_decodes_only_what_encode_spells(text: str) -> None:
    try:
        data = base64url.decode(text)
    except ValueError:
        return
    assert base64url.encode(data) == text


@given(st.binary(min_size=1, max_size=60))
def test_a_last_character_changed_in_its_unused_bits_is_refused(data: bytes) -> None:
    """The standard decoder ignores those bits: `token` and its twin meant the same bytes."""
    assume(len(data) % 3 != 0)  # otherwise the last character has no unused bits
    text = base64url.encode(data)
    twin = text[:-1] + ALPHABET[ALPHABET.index(text[-1]) ^ 1]
    assert base64.urlsafe_b64decode(twin + "=" * (-len(twin) % 4)) == data
    with pytest.raises(ValueError):
        base64url.decode(twin)


@pytest.mark.parametrize(
    "text",
    ["YQ==", "YQ=", "Y", "YQ!!", "YQ\n", " YQ", "Y+Q", "Y/Q", "a b"],
)
def test_padding_characters_outside_the_alphabet_and_lone_characters_are_refused(
    text: str,
) -> None:
    with pytest.raises(ValueError):
        base64url.decode(text)


def test_the_empty_string_is_the_empty_byte_string() -> None:
    assert base64url.encode(b"") == ""
    assert base64url.decode("") == b""


# -- sessions ---------------------------------------------------------------------------

_ttls = st.integers(1, 10 * 365 * 86400)
_moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(st.uuids(), _moments, _ttls)
def test_an_issued_session_verifies_to_its_user_and_expiry_until_it_expires(
    user_id: uuid.UUID, now: datetime, ttl: int
) -> None:
    signer = Signer(KEY_A)
    credential, session = issue_session(signer, user_id, now, ttl)
    exact = now + timedelta(seconds=ttl)
    assert session.user_id == user_id
    # Kept to the millisecond: never later than asked, less than 1 ms earlier.
    assert timedelta(0) <= exact - session.expire_time < timedelta(milliseconds=1)
    assert session.expire_time.microsecond % 1000 == 0
    assert verify_session(signer, credential, now) == session
    assert verify_session(signer, credential, session.expire_time - timedelta(microseconds=1))
    assert verify_session(signer, credential, session.expire_time) is None


def test_an_expired_session_proves_a_past_sign_in_only_within_expired_for() -> None:
    signer = Signer(KEY_A)
    credential, session = issue_session(signer, USER, NOW, 60)
    later = session.expire_time + timedelta(days=3)
    assert verify_session(signer, credential, later) is None
    assert verify_session(signer, credential, later, expired_for=timedelta(days=4)) == session
    assert verify_session(signer, credential, later, expired_for=timedelta(days=3)) is None


@pytest.mark.parametrize("credential", [None, "", "x", "1.AA.AA", "a.b.c.d"])
def test_a_missing_or_malformed_session_is_none(credential: str | None) -> None:
    assert verify_session(Signer(KEY_A), credential, NOW) is None


def test_a_session_signed_with_an_unknown_key_is_none() -> None:
    credential, _ = issue_session(Signer(KEY_B), USER, NOW, 60)
    assert verify_session(Signer(KEY_A), credential, NOW) is None


def test_a_queue_token_is_not_a_session_nor_a_session_a_queue_token() -> None:
    signer = Signer(KEY_A)
    session_credential, _ = issue_session(signer, USER, NOW, 600)
    queue_credential = sign_queue_token(
        signer, QueueToken(uuid.uuid4(), USER, 1, NOW + timedelta(minutes=10))
    )
    assert verify_session(signer, queue_credential, NOW) is None
    assert read_queue_token(signer, session_credential) is None


def test_a_session_payload_of_another_version_or_size_is_none() -> None:
    signer = Signer(KEY_A)
    millis = int((NOW + timedelta(hours=1)).timestamp() * 1000)
    good = struct.pack(">B16sq", 1, USER.bytes, millis)
    assert verify_session(signer, signer.sign(sessions.PURPOSE, good), NOW) == Session(
        USER, NOW + timedelta(hours=1)
    )
    other_version = struct.pack(">B16sq", 2, USER.bytes, millis)
    assert verify_session(signer, signer.sign(sessions.PURPOSE, other_version), NOW) is None
    assert verify_session(signer, signer.sign(sessions.PURPOSE, good + b"\0"), NOW) is None
    assert verify_session(signer, signer.sign(sessions.PURPOSE, good[:-1]), NOW) is None


def test_authenticate_session_gives_the_user_or_refuses_alike() -> None:
    signer, clock = Signer(KEY_A), FakeClock(NOW)
    credential, session = issue_session(signer, USER, NOW, 60)
    assert authenticate_session(signer, clock, credential) == USER
    clock.set(session.expire_time)
    for shown in (credential, "garbage", ""):
        with pytest.raises(Unauthenticated) as caught:
            authenticate_session(signer, clock, shown)
        assert caught.value.reason == ErrorReason.ERROR_REASON_INVALID_CREDENTIALS


# -- queue tokens -----------------------------------------------------------------------


@given(
    st.uuids(),
    st.uuids(),
    st.integers(1, 2**63 - 1),
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
)
def test_a_queue_token_reads_back_its_claims(
    token_id: uuid.UUID, user_id: uuid.UUID, number: int, expires: datetime
) -> None:
    signer = Signer(KEY_A)
    claims = QueueToken(token_id, user_id, number, expires)
    assert read_queue_token(signer, sign_queue_token(signer, claims)) == claims


def test_an_expired_queue_token_still_reads_its_claims_the_caller_judges_expiry() -> None:
    signer = Signer(KEY_A)
    claims = QueueToken(uuid.uuid4(), USER, 9, NOW - timedelta(days=1))
    assert read_queue_token(signer, sign_queue_token(signer, claims)) == claims


@pytest.mark.parametrize("credential", [None, "", "nope", "1..", "1.AAAA.AAAA"])
def test_a_missing_or_malformed_queue_token_is_none(credential: str | None) -> None:
    assert read_queue_token(Signer(KEY_A), credential) is None


def test_a_queue_token_of_another_key_version_or_size_is_none() -> None:
    signer = Signer(KEY_A)
    claims = QueueToken(uuid.uuid4(), USER, 9, NOW)
    assert read_queue_token(Signer(KEY_B), sign_queue_token(signer, claims)) is None
    payload = struct.pack(">B16s16sqq", 1, claims.token_id.bytes, USER.bytes, 9, 0)
    assert read_queue_token(signer, signer.sign(tokens.PURPOSE, payload)) is not None
    for bad in (b"\x02" + payload[1:], payload + b"\0", payload[:-1]):
        assert read_queue_token(signer, signer.sign(tokens.PURPOSE, bad)) is None


# -- the operator's key -----------------------------------------------------------------


def test_the_operators_key_must_be_shown_configured_and_equal() -> None:
    check_admin_key("s3cret", "s3cret")
    with pytest.raises(Unauthenticated) as missing:
        check_admin_key("s3cret", None)
    assert missing.value.reason == ErrorReason.ERROR_REASON_ADMIN_KEY_MISSING
    for configured, shown in (("s3cret", "s3cre"), ("s3cret", ""), (None, "s3cret")):
        with pytest.raises(PermissionDenied) as refused:
            check_admin_key(configured, shown)
        assert refused.value.reason == ErrorReason.ERROR_REASON_ADMIN_KEY_INVALID


@pytest.mark.parametrize(
    "spelling",
    [
        "+1700000000",
        " 1700000000",
        "1700000000 ",
        "1_700000000",
        "01700000000",
        "-5",
        "",
        "\uff11\uff17",  # fullwidth digits: int() reads them
        "1e9",
        "0x10",
    ],
)
def test_a_module_timestamp_has_one_spelling(spelling: str) -> None:
    assert module_signing.parse_timestamp(spelling) is None


@given(st.integers(min_value=0, max_value=10**12 - 1))
def test_a_module_timestamp_in_its_canonical_spelling_reads_back(seconds: int) -> None:
    assert module_signing.parse_timestamp(str(seconds)) == seconds
