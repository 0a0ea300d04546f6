"""The sandbox payment module's error and decline reasons: its own contract
(paymentmodule.v1, ErrorInfo domain `paymentmodule.v1`), listed here once.

They are not concert.v1.ErrorReason values: the module is another service,
which a real provider could replace, so its reasons are typed ForeignReason
(server/errors.py) and documented in protos/paymentmodule/v1/.
"""

from __future__ import annotations

from server.errors import ForeignReason

# Errors (ErrorInfo.reason).
MODULE_SIGNATURE_INVALID = ForeignReason("MODULE_SIGNATURE_INVALID")
PAYMENT_DECLINED = ForeignReason("PAYMENT_DECLINED")
PAYMENT_KEPT_BY_SERVER = ForeignReason("PAYMENT_KEPT_BY_SERVER")
PAYMENT_NOT_FOUND = ForeignReason("PAYMENT_NOT_FOUND")
REQUEST_ID_REUSED = ForeignReason("REQUEST_ID_REUSED")

# Answered by the call pipeline itself (server/interceptors.py), for a body that
# cannot be read or is over its size limit: the same names as concert.v1's.
REQUEST_MALFORMED = ForeignReason("REQUEST_MALFORMED")
REQUEST_TOO_LARGE = ForeignReason("REQUEST_TOO_LARGE")
