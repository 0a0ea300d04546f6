-- Admission by the live line (docs/queue.md): the window's end is stored, and
-- moved only by the admission pass, which counts live tokens instead of
-- trusting that every number below the window is a fan who left.
--
-- window_limit     the highest admitted queue number: a token is admitted when
--                  its number is at most this. It never moves backwards. It may
--                  reach past the last number drawn ("reach"): numbers not
--                  drawn yet that will be admitted on arrival, at most the free
--                  places (admitted live + reach <= capacity).
-- admitted_total   waiting tokens the pass let in, ever (the admission rate).
-- lapsed_admitted, lapsed_waiting
--                  tokens that expired inside the window / still waiting.
-- last_pass_at     when the admission pass last ran (every second or sooner).
-- window_moved_at, capacity_changed_at
--                  when the pass last moved the window / capacity last
--                  changed: a lowered capacity lets admitted exceed it until
--                  enough leave, and the window does not move meanwhile.
ALTER TABLE queue_state
    ADD COLUMN window_limit        bigint,
    ADD COLUMN admitted_total      bigint NOT NULL DEFAULT 0 CHECK (admitted_total >= 0),
    ADD COLUMN lapsed_admitted     bigint NOT NULL DEFAULT 0 CHECK (lapsed_admitted >= 0),
    ADD COLUMN lapsed_waiting      bigint NOT NULL DEFAULT 0 CHECK (lapsed_waiting >= 0),
    ADD COLUMN last_pass_at        timestamptz,
    ADD COLUMN window_moved_at     timestamptz,
    ADD COLUMN capacity_changed_at timestamptz;

-- From the old arithmetic: the window it had (completed + capacity, or the
-- limit frozen by a pause), but never past the last number drawn. Every token
-- inside it stays admitted (nobody is admitted twice, nobody loses a place);
-- what the old window reached beyond the numbers drawn (too far, whenever
-- numbers were lost or waiting tokens lapsed) is dropped, and the first pass
-- re-extends it by the live count.
UPDATE queue_state SET
    window_limit = least(
        CASE WHEN paused THEN paused_limit ELSE completed_count + capacity END,
        (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM queue_numbers)),
    capacity_changed_at = updated_at;
-- The tokens that ended before: paid ones are state 'completed'; an expired one
-- is counted as lapsed while admitted if it got inside the window as it is now.
UPDATE queue_state SET
    lapsed_admitted = (SELECT count(*) FROM queue_tokens
                        WHERE state = 'expired' AND queue_number <= queue_state.window_limit),
    lapsed_waiting = (SELECT count(*) FROM queue_tokens
                       WHERE state = 'expired' AND queue_number > queue_state.window_limit);

-- (Dropping paused_limit drops its CHECK with it.)
ALTER TABLE queue_state
    ALTER COLUMN window_limit SET NOT NULL,
    DROP COLUMN paused_limit;

-- The pass's scans: live tokens by number (the admitted count below the window,
-- the first waiting ones above it, each process's copy of the line).
CREATE INDEX queue_tokens_live_by_number ON queue_tokens (queue_number) WHERE state = 'live';
