-- Foundation: server secrets, idempotency keys, accounts and wallets.
-- All times are timestamptz in UTC; all money is bigint in the smallest unit.

-- Secrets shared by every server process against this database (the HMAC key
-- that signs session credentials and queue tokens). Created once, on first start.
CREATE TABLE server_secrets (
    name       text PRIMARY KEY,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL
);

-- AIP-155 request ids: the first answer to a mutating call, replayed on retry.
-- scope is the method and the caller; fingerprint is a hash of the request.
CREATE TABLE idempotency_keys (
    scope       text NOT NULL,
    request_id  uuid NOT NULL,
    fingerprint bytea NOT NULL,
    response    bytea,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (scope, request_id)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL UNIQUE CHECK (email = lower(email)),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL
);

-- One wallet per user, created with the account. The CHECK is the last line of
-- defence: the balance is never negative and never passes its bound.
CREATE TABLE wallets (
    user_id    uuid PRIMARY KEY REFERENCES users (id),
    balance    bigint NOT NULL DEFAULT 0 CHECK (balance >= 0 AND balance <= 1000000000),
    updated_at timestamptz NOT NULL
);
