"""Sales channels: each virtual operator (the JWT's ``aud``) sells on one channel's point of
sales, and sees only the products the venue put on that channel (REFERENCE §g.2: ``getPOSConfig``
gives "the point of sales of your sales channel"; a reseller gets its own channel, §g, U3).

The channel of the call being answered is in ``CURRENT``, set by the API from the token. What a
channel refuses (another channel's point of sales, a product not on it) is INFERRED: S-360
documents the channel, not its error codes.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from .contacts import BusinessError

POS_ID = 101053522324
PENDING_ACCOUNT = 16370  # the pending-account payment method (a PLAY demo id, B5e)


@dataclass(frozen=True)
class Channel:
    """A sales channel: its point of sales, the code orders carry, the products on it (None:
    every product of the institution) and its payment methods."""

    pos_id: int = POS_ID
    code: str = "RESAPI"
    products: frozenset[str] | None = None  # product codes
    pending_account: int | None = PENDING_ACCOUNT  # payment method id, None: the channel has none

    def sells(self, product: dict) -> bool:
        return self.products is None or product.get("code") in self.products

    def check_pos(self, body: dict) -> None:
        """[FOUND h.2, g.3] pointOfSalesId is mandatory; [INFERRED] it must be the one
        getPOSConfig gives the caller's channel."""
        if body.get("pointOfSalesId") is None:
            raise BusinessError("failed", "error.parameter.missing: pointOfSalesId")
        if body["pointOfSalesId"] != self.pos_id:
            raise BusinessError("failed", "error.parameter.invalid: pointOfSalesId")

    def payment_methods(self) -> list[dict]:
        pending = [{"id": self.pending_account, "code": "PENDING_ACCOUNT"}] \
            if self.pending_account is not None else []
        return [*pending, {"id": 16362, "code": "CASH"}]


DEFAULT = Channel()
CURRENT: ContextVar[Channel] = ContextVar("channel", default=DEFAULT)


def current() -> Channel:
    """The channel of the operator whose call is being answered."""
    return CURRENT.get()
