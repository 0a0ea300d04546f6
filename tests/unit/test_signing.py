"""HMAC signing with key ids and rotation (server/signing.py), without the database.

A credential is `<kid>.<base64url payload>.<base64url mac>`; the MAC covers
the purpose, the kid and the payload. A Signer signs with its current key and
verifies with every key it knows; use(now=...) makes the newest key active at
`now` the signing one, so a rotated key is known (verifies) before it signs.
Credentials from before key ids, `<payload>.<mac>`, verify with key "0" and a
MAC without the kid. Keys may come from a file: `<kid> <base64url key>` lines,
the first one signs.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server import base64url
from server.signing import LEGACY_KID, MIN_KEY_BYTES, Signer, SigningKey, read_keys_file
from tests.unit.helpers import KEY_A, KEY_B, NOW

ALWAYS = datetime.min.replace(tzinfo=UTC)
KEY_C = b"c" * 32


def signer_with(*keys: tuple[str, bytes], current: str) -> Signer:
    signer = Signer()
    signer.use([SigningKey(kid, secret, ALWAYS) for kid, secret in keys], current=current)
    return signer


def legacy_credential(secret: bytes, purpose: str, payload: bytes) -> str:
    """The form before key ids: base64url(payload).base64url(HMAC(key, purpose NUL payload))."""
    mac = hmac.new(secret, purpose.encode() + b"\0" + payload, hashlib.sha256).digest()
    return f"{base64url.encode(payload)}.{base64url.encode(mac)}"


# -- sign and verify -----------------------------------------------------------------


def test_a_credential_is_the_kid_the_payload_and_a_mac_over_purpose_kid_and_payload() -> None:
    credential = Signer(KEY_A).sign("session", b"payload")
    kid, payload, mac = credential.split(".")
    assert kid == "1"
    assert base64url.decode(payload) == b"payload"
    expected = hmac.new(KEY_A, b"session\x001\x00payload", hashlib.sha256).digest()
    assert base64url.decode(mac) == expected


@given(st.text(min_size=1, max_size=20), st.binary(min_size=1, max_size=100))
def test_what_is_signed_verifies_to_its_payload_for_its_purpose_only(
    purpose: str, payload: bytes
) -> None:
    # (Every payload the service signs has a fixed, non-zero size; verify refuses an empty one.)
    signer = Signer(KEY_A)
    credential = signer.sign(purpose, payload)
    assert signer.verify(purpose, credential) == payload
    assert signer.verify(purpose + "x", credential) is None


@given(st.data())
def test_any_one_character_changed_makes_a_credential_invalid(data: st.DataObject) -> None:
    signer = Signer(KEY_A)
    credential = signer.sign("queue", data.draw(st.binary(min_size=1, max_size=40)))
    index = data.draw(st.integers(0, len(credential) - 1))
    replacement = data.draw(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.").filter(
            lambda c: c != credential[index]
        )
    )
    changed = credential[:index] + replacement + credential[index + 1 :]
    assert signer.verify("queue", changed) is None


def test_a_credential_signed_with_another_key_of_the_same_kid_is_invalid() -> None:
    assert Signer(KEY_A).verify("queue", Signer(KEY_B).sign("queue", b"p")) is None


def test_the_mac_covers_the_kid_so_a_credential_cannot_be_relabelled() -> None:
    # Two kids with the same secret: the relabelled credential still fails.
    signer = signer_with(("1", KEY_A), ("2", KEY_A), current="2")
    credential = signer.sign("queue", b"p")
    assert signer.verify("queue", credential) == b"p"
    assert signer.verify("queue", "1" + credential[1:]) is None


@pytest.mark.parametrize(
    "credential",
    ["", ".", "..", "1..", "1.cA.", "1..AAAA", "1.cA.AAAA.extra", "9.cA.AAAA", "no-dots"],
)
def test_malformed_credentials_and_unknown_kids_are_none(credential: str) -> None:
    assert Signer(KEY_A).verify("queue", credential) is None


def test_a_credential_with_non_canonical_base64_is_none() -> None:
    signer = Signer(KEY_A)
    kid, payload, mac = signer.sign("queue", b"pay").split(".")
    assert signer.verify("queue", f"{kid}.{payload}.{mac}") == b"pay"
    assert signer.verify("queue", f"{kid}.{payload}=.{mac}") is None
    assert signer.verify("queue", f"{kid}.{payload}.{mac}==") is None


# -- key sets ----------------------------------------------------------------------------


def test_a_key_of_fewer_than_32_bytes_is_refused() -> None:
    assert MIN_KEY_BYTES == 32
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Signer(b"k" * 31)
    assert Signer(b"k" * 32).current_kid == "1"


@pytest.mark.parametrize("kid", ["", "a" * 17, "a.b", "a b", "k\u00e9y", "a/b"])
def test_a_kid_must_be_1_to_16_url_safe_characters(kid: str) -> None:
    with pytest.raises(ValueError, match="signing key id"):
        Signer().use([SigningKey(kid, KEY_A, ALWAYS)], current=kid)


@pytest.mark.parametrize("kid", ["0", "a" * 16, "file-A_9"])
def test_kids_of_1_to_16_url_safe_characters_are_taken(kid: str) -> None:
    signer = signer_with((kid, KEY_A), current=kid)
    assert signer.sign("queue", b"p").startswith(kid + ".")


def test_the_current_kid_must_be_one_of_the_keys() -> None:
    with pytest.raises(ValueError, match="no signing key '2'"):
        signer_with(("1", KEY_A), current="2")


def test_a_refused_key_set_leaves_the_signer_as_it_was() -> None:
    signer = Signer(KEY_A)
    credential = signer.sign("queue", b"p")
    with pytest.raises(ValueError):
        signer.use([SigningKey("2", b"short", ALWAYS)], current="2")
    assert signer.current_kid == "1"
    assert signer.verify("queue", credential) == b"p"


def test_a_new_key_set_replaces_the_old_one() -> None:
    signer = Signer(KEY_A)
    old = signer.sign("queue", b"p")
    signer.use([SigningKey("2", KEY_B, ALWAYS)], current="2")
    assert signer.kids == {"2"}
    assert signer.verify("queue", old) is None


# -- rotation: the newest key active at `now` signs ----------------------------------


def rotated_keys() -> list[SigningKey]:
    return [
        SigningKey("1", KEY_A, NOW - timedelta(days=1)),
        SigningKey("2", KEY_B, NOW + timedelta(seconds=60)),
    ]


def test_the_newest_key_active_at_now_signs_from_its_activation_on() -> None:
    signer = Signer()
    signer.use(rotated_keys(), now=NOW + timedelta(seconds=59))
    assert signer.current_kid == "1"
    signer.use(rotated_keys(), now=NOW + timedelta(seconds=60))
    assert signer.current_kid == "2"


def test_a_key_not_yet_active_already_verifies() -> None:
    """Every process knows a rotated key before any credential carries it."""
    early, late = Signer(), Signer()
    early.use(rotated_keys(), now=NOW)
    late.use(rotated_keys(), now=NOW + timedelta(minutes=5))
    assert early.kids == late.kids == {"1", "2"}
    from_late = late.sign("session", b"p")
    assert from_late.startswith("2.")
    assert early.verify("session", from_late) == b"p"


def test_credentials_of_the_previous_key_verify_until_it_is_dropped() -> None:
    signer = Signer()
    signer.use(rotated_keys(), now=NOW)
    old = signer.sign("session", b"p")
    signer.use(rotated_keys(), now=NOW + timedelta(minutes=5))
    assert signer.verify("session", old) == b"p"
    signer.use(rotated_keys()[1:], now=NOW + timedelta(days=2))  # key 1 retired
    assert signer.verify("session", old) is None


def test_with_no_key_active_yet_there_is_no_signing_key() -> None:
    with pytest.raises(ValueError, match="no signing key is active yet"):
        Signer().use([SigningKey("2", KEY_B, NOW + timedelta(seconds=1))], now=NOW)


def test_an_explicit_current_kid_signs_even_if_not_the_newest() -> None:
    signer = Signer()
    signer.use(rotated_keys(), now=NOW + timedelta(days=1), current="1")
    assert signer.current_kid == "1"


# -- credentials from before key ids -------------------------------------------------


def test_a_legacy_credential_verifies_with_key_zero() -> None:
    signer = signer_with((LEGACY_KID, KEY_A), ("1", KEY_B), current="1")
    assert signer.verify("queue", legacy_credential(KEY_A, "queue", b"old")) == b"old"


def test_a_legacy_credential_needs_key_zero_its_purpose_and_its_own_mac_form() -> None:
    without_zero = signer_with(("1", KEY_A), current="1")
    assert without_zero.verify("queue", legacy_credential(KEY_A, "queue", b"old")) is None
    signer = signer_with((LEGACY_KID, KEY_A), current=LEGACY_KID)
    assert signer.verify("session", legacy_credential(KEY_A, "queue", b"old")) is None
    assert signer.verify("queue", legacy_credential(KEY_B, "queue", b"old")) is None
    # No mixing of the forms: a kid-less MAC under a kid, a kid MAC without one.
    _, payload, mac = signer.sign("queue", b"new").split(".")
    assert signer.verify("queue", f"{payload}.{mac}") is None
    old_payload, old_mac = legacy_credential(KEY_A, "queue", b"new").split(".")
    assert signer.verify("queue", f"0.{old_payload}.{old_mac}") is None


# -- keys from a file --------------------------------------------------------------------


def test_a_keys_file_lists_kid_and_key_the_first_signs(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(
        "# the first line signs\n\n"
        f"file-b {base64url.encode(KEY_B)}\n"
        f"  file-a\t{base64url.encode(KEY_A)}  \n"
        "   # an indented comment\n"
    )
    keys, current = read_keys_file(path)
    assert current == "file-b"
    assert [(k.kid, k.secret) for k in keys] == [("file-b", KEY_B), ("file-a", KEY_A)]
    signer = Signer()
    signer.use(keys, current=current)
    assert signer.sign("queue", b"p").startswith("file-b.")
    assert signer.verify(
        "queue", signer_with(("file-a", KEY_A), current="file-a").sign("queue", b"p")
    )


@pytest.mark.parametrize(
    "line",
    [
        "file-a",
        f"file-a {base64url.encode(KEY_A)} extra",
        "file-a not=base64",
        f"file-a {base64url.encode(KEY_A)}=",
    ],
)
def test_a_malformed_line_names_the_file_and_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# header\nfile-c {base64url.encode(KEY_C)}\n{line}\n")
    with pytest.raises(ValueError, match=rf"{path}:3: expected '<kid> <base64url key>'"):
        read_keys_file(path)


def test_a_keys_file_with_no_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match="no signing key"):
        read_keys_file(path)


def test_a_short_key_from_a_file_is_refused_when_the_signer_adopts_it(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"short {base64url.encode(b'x' * 16)}\n")
    keys, current = read_keys_file(path)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Signer().use(keys, current=current)
