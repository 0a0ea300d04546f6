"""Email addresses: normalised (trimmed, lower-cased) and checked for shape."""

from __future__ import annotations

import re

MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128

# Deliberately simple: one @, no spaces, a dot in the domain. Deliverability is
# not ours to prove; rejecting obvious garbage is.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def normalise_email(raw: str) -> str:
    return raw.strip().lower()


def email_problem(email: str) -> str | None:
    """Why a normalised email is unacceptable, or None."""
    if not email:
        return "required"
    if len(email) > MAX_EMAIL_LENGTH:
        return f"at most {MAX_EMAIL_LENGTH} characters"
    if not _EMAIL.match(email):
        return "not an email address"
    return None


def password_problem(password: str) -> str | None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        return f"must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
    return None
