-- Signing keys with ids, so they can rotate (server/signing.py). The one secret
-- the database held becomes key "0": credentials signed before key ids verify
-- with it until they expire; `python -m server rotate-key` adds the next ones.
CREATE TABLE signing_keys (
    kid         text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{1,16}$'),
    secret      bytea NOT NULL CHECK (length(secret) >= 32),
    created_at  timestamptz NOT NULL,
    -- Credentials are signed with the newest key active now; every key verifies.
    active_from timestamptz NOT NULL
);

INSERT INTO signing_keys (kid, secret, created_at, active_from)
SELECT '0', value, created_at, created_at FROM server_secrets WHERE name = 'signing';
DELETE FROM server_secrets WHERE name = 'signing';
