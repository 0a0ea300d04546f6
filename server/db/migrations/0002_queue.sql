-- The waiting queue: numbered tokens and the admission counter.

-- Queue numbers, from 1, never reused. A sequence, not a counter row, so ten
-- thousand concurrent issues do not queue up behind one row lock.
CREATE SEQUENCE queue_numbers AS bigint START 1;

-- The queue's shared state: one row (id is always true). completed_count only
-- grows; version grows with every change and orders the NOTIFY payloads that
-- carry this row to every server process. While paused, paused_limit freezes
-- the admission window at the limit it had when the pause began.
CREATE TABLE queue_state (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    version         bigint NOT NULL DEFAULT 1,
    completed_count bigint NOT NULL DEFAULT 0 CHECK (completed_count >= 0),
    capacity        integer NOT NULL CHECK (capacity BETWEEN 0 AND 1000000),
    paused          boolean NOT NULL DEFAULT false,
    paused_limit    bigint,
    updated_at      timestamptz NOT NULL,
    CHECK (paused = (paused_limit IS NOT NULL))
);

-- One row per queue token. state moves live -> completed (a payment) or
-- live -> expired (the expiry job), once, by a conditional update; whichever
-- move wins adds exactly 1 to queue_state.completed_count.
CREATE TABLE queue_tokens (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id),
    queue_number bigint NOT NULL UNIQUE,
    state        text NOT NULL CHECK (state IN ('live', 'completed', 'expired')),
    issued_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    admitted_at  timestamptz,
    ended_at     timestamptz,
    CHECK ((state = 'live') = (ended_at IS NULL))
);

-- One place in line per fan: at most one live token per user.
CREATE UNIQUE INDEX queue_tokens_one_live_per_user ON queue_tokens (user_id) WHERE state = 'live';
-- The expiry job's scan.
CREATE INDEX queue_tokens_live_by_expiry ON queue_tokens (expires_at) WHERE state = 'live';
