"""The sandbox payment module: the spec's payment module as a service of its own.

A separate process (`python -m server.payment_module`) with its own proto
package (paymentmodule.v1), its own database and its own migrations. Fans pay
it for a reservation, from a balance it keeps or with a test card; on success
it reports the payment to the concert server's PaymentCallbackService from a
durable outbox, retrying with backoff until the server answers, and gives the
money back when the server answers REFUND (or asks by RefundPayment).

It is what a real card acquirer's API would replace, so it knows nothing of
the server's features: it may use the platform (config parsing, clock, pool,
migrations, errors, the shared signature) and nothing above it (the
import-linter contract "payment-module-apart" in pyproject.toml).

    settings.py   CONCERT_PAYMENT_MODULE_* environment variables
    cards.py      the test cards and the sandbox's decision (pure)
    backoff.py    the callback's retry schedule (pure)
    store.py      the module's SQL: balances, payments, the callback outbox
    payments.py   the use cases: top up, pay, read, refund
    callbacks.py  the outbox's dispatcher: signs and sends callbacks, records answers
    service.py    the gRPC servicer and its error layer
    app.py        the composition root: database, server, dispatcher
"""
