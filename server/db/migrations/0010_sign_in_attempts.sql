-- Password attempts, counted in the sign-in budgets every server process shares
-- (server/accounts/throttle.py). A row is an attempt reserved before its hash:
-- a failure keeps it, a success deletes it with its (email, address) failures,
-- an attempt never evaluated is deleted. The sign_in_attempts.prune job deletes
-- rows once they are out of every budget's window.
CREATE TABLE sign_in_attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text NOT NULL,
    -- The address's budget key: the client address, or an IPv6 client's /64.
    address       text NOT NULL,
    -- False for a caller who showed a past session of the account: the email's
    -- budget (which a distributed attack can spend) does not count it.
    email_counted boolean NOT NULL,
    attempted_at  timestamptz NOT NULL
);

-- The address's budget and the (email, address) pair's, newest first.
CREATE INDEX sign_in_attempts_by_address ON sign_in_attempts (address, attempted_at);
-- The email's budget (the attempts it counts).
CREATE INDEX sign_in_attempts_by_email ON sign_in_attempts (email, attempted_at)
    WHERE email_counted;
-- The prune job's range.
CREATE INDEX sign_in_attempts_by_time ON sign_in_attempts (attempted_at);
