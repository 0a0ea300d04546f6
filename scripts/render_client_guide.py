"""Renders docs/api.md's client guide from the service config shipped with the protos.

The guide's table (each method's timeout, retries and waitForReady) is read
from protos/concert/v1/service_config.json, so it cannot drift from what the
clients load; the advice around it is written here. scripts/gen appends the
output to docs/api.md, whose drift check therefore covers the config too.

    python scripts/render_client_guide.py SERVICE_CONFIG.json >> docs/api.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

_BEFORE_TABLE = """
## Client guide: timeouts, retries and request ids

`protos/concert/v1/service_config.json` is the gRPC service config for every
client of `concert.v1`: load it into the channel and the gRPC library applies
the timeouts, retries and waitForReady below by itself.

- Node (@grpc/grpc-js): the channel option `grpc.service_config` set to the
  file's text.
- Go (grpc-go): `grpc.WithDefaultServiceConfig(text)`; grpc-go older than 1.40
  retries only with `GRPC_GO_RETRY=on` in the environment.
- Python (grpcio): the channel option `("grpc.service_config", text)`.
- Java, C#, C++ take the same JSON (`defaultServiceConfig`, `ServiceConfig`,
  `grpc.service_config`).

The end-to-end suite's TypeScript, Go and Python clients use it
(tests/e2e/node, tests/e2e/go, tests/e2e/fan_walks.py).

| method | timeout | retried on | waitForReady |
| --- | --- | --- | --- |
"""

_AFTER_TABLE = """
### Which codes to retry

- **UNAVAILABLE**: the channel retries it (the config above), with exponential
  backoff and jitter, and stops retrying while most calls fail (retry
  throttling). The server sends it while the database is unreachable or
  overloaded (DATABASE_UNAVAILABLE, DATABASE_BUSY, DATABASE_TIMEOUT,
  DATABASE_CONFLICT), while it starts (QUEUE_STARTING) and when the payment
  module fails (PAYMENT_GATEWAY_UNAVAILABLE); the transport sends it when the
  server cannot be reached. The channel cannot tell whether a write was done
  before a connection broke: writes are retried safely only because they carry
  a `request_id` (below).
- **RESOURCE_EXHAUSTED with RetryInfo** (PASSWORD_HASHING_BUSY,
  TOO_MANY_ATTEMPTS, SERVER_BUSY): wait at least `RetryInfo.retry_delay`, then
  retry. The config does not retry these: the channel's backoff cannot read
  RetryInfo and would come back sooner than the server asked, at the moment it
  is busiest. Without RetryInfo do not retry as is: REQUEST_TOO_LARGE refuses
  the request itself, TOO_MANY_STREAMS asks to close a stream first.
- **ABORTED** (PAYMENT_IN_PROGRESS, with RetryInfo): another Pay of the same
  reservation is under way; wait the delay and send the same Pay, same
  `request_id`, to get its answer.
- **FAILED_PRECONDITION QUEUE_NOT_ADMITTED** (with RetryInfo): the token is
  still waiting; open WatchQueueStatus (or poll GetQueueStatus no sooner than
  the delay) instead of retrying the call.
- **DEADLINE_EXCEEDED**: the outcome is unknown; retry a write only with its
  `request_id`.
- **Anything else** (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
  UNAUTHENTICATED, PERMISSION_DENIED, other FAILED_PRECONDITIONs, INTERNAL):
  sending the same request again gets the same answer; switch on the
  ErrorInfo reason instead.

### Request ids for writes

SignUp, CreateConcert, ReserveSeat, CancelReservation, Pay and Charge take a
`request_id` (AIP-155): a UUID the client draws once per operation and sends
on every attempt of it, the channel's retries and its own. The server answers
a repeat with the first answer and does nothing twice; the same id with other
fields is INVALID_ARGUMENT (REQUEST_ID_REUSED). ConfirmModulePayment's key is
`module_payment_id`. A client that leaves `request_id` empty must not retry
the write, so it should not use this config for that method. Reads, and
SignIn, IssueToken (a fan's live token comes back), RefreshToken and
SetAdmission (absolute values) are safe to repeat as they are.
"""


def _retries(entry: dict[str, Any]) -> str:
    policy = entry.get("retryPolicy")
    if policy is None:
        return "never"
    codes = ", ".join(policy["retryableStatusCodes"])
    backoff = (
        f"{policy['initialBackoff']} x{policy['backoffMultiplier']} up to {policy['maxBackoff']}"
    )
    return f"{codes} ({policy['maxAttempts']} attempts, backoff {backoff})"


def render(config: dict[str, Any]) -> str:
    rows = []
    for entry in config["methodConfig"]:
        for name in entry["name"]:
            rows.append(
                f"| `{name['service'].removeprefix('concert.v1.')}.{name['method']}` "
                f"| {entry.get('timeout', 'none')} | {_retries(entry)} "
                f"| {'yes' if entry.get('waitForReady') else 'no'} |"
            )
    throttling = config.get("retryThrottling")
    after = _AFTER_TABLE
    if throttling:
        after = (
            f"\nRetry throttling: maxTokens {throttling['maxTokens']}, tokenRatio "
            f"{throttling['tokenRatio']}: each failed attempt costs a token and each success"
            " earns the ratio back; below half the tokens the channel stops retrying, so"
            " retries pause while failures outnumber a tenth of the successes.\n" + _AFTER_TABLE
        )
    return _BEFORE_TABLE + "\n".join(rows) + "\n" + after


def main(argv: list[str]) -> int:
    sys.stdout.write(render(json.loads(Path(argv[1]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
