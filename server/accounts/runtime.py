"""What the account use cases share within one process: the hasher and the throttle."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.accounts.passwords import PasswordHasher
from server.accounts.throttle import SignInThrottle
from server.signing import Signer


@dataclass
class AccountRuntime:
    hasher: PasswordHasher
    throttle: SignInThrottle = field(default_factory=SignInThrottle)
    # Verifies the past sessions that give a sign-in a proven place (set at wiring).
    signer: Signer | None = None
