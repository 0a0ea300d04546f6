"""What the account use cases share: this process's hasher and refusal pacing, and
the sign-in budgets (kept in the database, shared by every process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.accounts.pacing import RefusalPacing
from server.accounts.passwords import PasswordHasher
from server.accounts.throttle import SignInThrottle
from server.signing import Signer


@dataclass
class AccountRuntime:
    hasher: PasswordHasher
    throttle: SignInThrottle
    # Verifies the past sessions that give a sign-in a proven place (set at wiring).
    signer: Signer | None = None
    # Holds refused password calls beyond a rate of refusals (this process's).
    pacing: RefusalPacing = field(default_factory=RefusalPacing)
