"""What a fan may read of their payments: by the server's payment id, or by
the id a payment module gave a payment the fan made there.

A module payment the server refused (the hold had lapsed, the amount was
wrong, the seat was already paid) has no row in `payments`: the module was
told to refund it. The fan still sees it, as a REFUNDED payment with the
reason, so they learn the outcome from the server and not only from the module.
"""

from __future__ import annotations

from typing import Any

from concert.v1 import payment_pb2
from server.booking.module_payments import MAX_MODULE_PAYMENT_ID
from server.booking.payment_records import (
    PAYMENT_COLUMNS,
    REFUSED_MODULE_PAYMENT_COLUMNS,
    payment_message,
)
from server.context import ServiceContext
from server.errors import ErrorReason, NotFound, Violations
from server.fan import Fan
from server.validation import parse_uuid

# Each reads the payments recorded and the module payments refused; a fan sees
# only their own (the refused ones of rows older than migration 0009 have no
# user and are seen by no one).
_BY_ID = f"""
    SELECT {PAYMENT_COLUMNS}, '' FROM payments WHERE id = %(id)s AND user_id = %(user)s
    UNION ALL
    SELECT {REFUSED_MODULE_PAYMENT_COLUMNS} FROM module_refund_requests
     WHERE payment_id = %(id)s AND user_id = %(user)s
"""
_BY_MODULE_ID = f"""
    SELECT {PAYMENT_COLUMNS}, '' FROM payments
     WHERE module_id = %(module)s AND module_payment_id = %(module_payment)s
       AND user_id = %(user)s
    UNION ALL
    SELECT {REFUSED_MODULE_PAYMENT_COLUMNS} FROM module_refund_requests
     WHERE module_id = %(module)s AND module_payment_id = %(module_payment)s
       AND user_id = %(user)s
"""


async def get_payment(
    ctx: ServiceContext, fan: Fan, request: payment_pb2.GetPaymentRequest
) -> payment_pb2.GetPaymentResponse:
    violations = Violations()
    payment_id = parse_uuid(violations, "payment_id", request.payment_id)
    violations.raise_if_any()
    async with ctx.pool.connection() as conn:
        cursor = await conn.execute(_BY_ID, {"id": payment_id, "user": fan.user_id})
        row = await cursor.fetchone()
    return payment_pb2.GetPaymentResponse(payment=_found(row))


async def get_module_payment(
    ctx: ServiceContext, fan: Fan, request: payment_pb2.GetModulePaymentRequest
) -> payment_pb2.GetModulePaymentResponse:
    violations = Violations()
    for name in ("payment_module", "module_payment_id"):
        if not 1 <= len(getattr(request, name)) <= MAX_MODULE_PAYMENT_ID:
            violations.add(name, f"1 to {MAX_MODULE_PAYMENT_ID} characters")
    violations.raise_if_any()
    async with ctx.pool.connection() as conn:
        cursor = await conn.execute(
            _BY_MODULE_ID,
            {
                "module": request.payment_module,
                "module_payment": request.module_payment_id,
                "user": fan.user_id,
            },
        )
        row = await cursor.fetchone()
    return payment_pb2.GetModulePaymentResponse(payment=_found(row))


def _found(row: Any) -> payment_pb2.Payment:
    if row is None:
        raise NotFound(ErrorReason.ERROR_REASON_PAYMENT_NOT_FOUND, "no such payment")
    return payment_message(row)
