"""The sandbox's test cards and its decision: pure rules, no I/O.

The numbers follow the card acquirers' sandbox convention (a documented
number per behaviour), so a client tested against this module can be pointed
at a real provider's sandbox with the same cards. Any other number is refused
outright: the module must never look as if it took a real card.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum


class CardBehaviour(Enum):
    SUCCEEDS = "succeeds"
    DECLINED = "declined"
    SLOW = "slow"  # succeeds after the slow-card delay


TEST_CARDS = {
    "4242424242424242": CardBehaviour.SUCCEEDS,
    "4000000000000002": CardBehaviour.DECLINED,
    "4000000000000077": CardBehaviour.SLOW,
}

# Decline reasons (ModulePayment.decline_reason).
CARD_DECLINED = "CARD_DECLINED"
INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
SANDBOX_DECLINE = "SANDBOX_DECLINE"


@dataclass(frozen=True)
class SandboxPolicy:
    """What the sandbox does beyond the cards: random declines and a delay."""

    decline_percent: int = 0
    delay_seconds: float = 0.0
    slow_card_seconds: float = 5.0

    def delay_for(self, card: CardBehaviour | None) -> float:
        """How long to wait before deciding (a slow provider, or the slow card)."""
        slow = self.slow_card_seconds if card is CardBehaviour.SLOW else 0.0
        return self.delay_seconds + slow

    def decline_reason(self, card: CardBehaviour | None, rng: random.Random) -> str | None:
        """Why this payment is declined before any money moves; None: go ahead.
        (A balance too low is found later, under the balance's lock.)"""
        if card is CardBehaviour.DECLINED:
            return CARD_DECLINED
        if self.decline_percent and rng.randrange(100) < self.decline_percent:
            return SANDBOX_DECLINE
        return None
