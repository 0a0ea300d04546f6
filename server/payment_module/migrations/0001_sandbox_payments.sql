-- The sandbox payment module's own books, in a database of its own (never the
-- concert server's tables).

-- Balances fans keep at the module (TopUp, GetBalance, balance payments).
CREATE TABLE accounts (
    account_id text PRIMARY KEY,
    balance    bigint NOT NULL CHECK (balance >= 0),
    updated_at timestamptz NOT NULL
);

-- One row per TopUp request id (AIP-155): a retry adds nothing more.
CREATE TABLE top_ups (
    request_id    uuid PRIMARY KEY,
    account_id    text NOT NULL,
    amount        bigint NOT NULL CHECK (amount > 0),
    balance_after bigint NOT NULL,
    created_at    timestamptz NOT NULL
);

-- Every payment taken or declined. request_id makes PayReservation
-- idempotent; fingerprint tells a retry from a reuse with other fields.
-- session_token is the fan's credential, kept because every callback (and
-- every retry after a restart) must carry it signed; it is cleared when the
-- server has answered.
CREATE TABLE payments (
    payment_id        uuid PRIMARY KEY,
    request_id        uuid NOT NULL UNIQUE,
    fingerprint       bytea NOT NULL,
    reservation_id    uuid NOT NULL,
    amount            bigint NOT NULL CHECK (amount >= 0),
    session_token     text,
    account_id        text,
    card_last4        text,
    state             text NOT NULL CHECK (state IN ('succeeded', 'declined', 'refunded')),
    decline_reason    text,
    server_answer     text NOT NULL CHECK (server_answer IN ('not_reported', 'pending', 'paid', 'refund')),
    server_payment_id text,
    refund_reason     text,
    refund_request_id uuid,
    callback_attempts integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL,
    answered_at       timestamptz,
    refunded_at       timestamptz,
    CHECK ((account_id IS NULL) <> (card_last4 IS NULL)),
    -- Money kept and refunded never both: a refunded payment was never kept by the server.
    CHECK (NOT (state = 'refunded' AND server_answer = 'paid')),
    CHECK ((state = 'declined') = (server_answer = 'not_reported'))
);

-- The callback outbox: a row per payment the server has not answered yet.
-- The dispatcher claims due rows (SKIP LOCKED), pushes next_attempt_at past
-- the call's deadline before sending (a module killed mid-call retries it
-- after a restart), and deletes the row with the answer.
CREATE TABLE callback_outbox (
    payment_id      uuid PRIMARY KEY REFERENCES payments,
    next_attempt_at timestamptz NOT NULL,
    last_error      text
);

CREATE INDEX callback_outbox_due ON callback_outbox (next_attempt_at);
