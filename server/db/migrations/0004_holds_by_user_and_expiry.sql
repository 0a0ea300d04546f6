-- The per-fan hold cap counts a fan's live holds:
--   WHERE user_id = $user AND state = 'held' AND expires_at > $now
-- With an index on user_id alone beside one on expires_at (both partial on
-- 'held'), the planner may pick the expiry index and filter every live hold
-- of every fan by user_id: it did on a fresh database whose statistics still
-- said "empty table", and each ReserveSeat then cost a scan of all live holds
-- (0.2 ms at 900 holds, growing with the sale). An index on both columns
-- answers the count from the fan's own entries whatever the statistics say.
-- (A plain CREATE INDEX: it blocks writes to reservations while it builds, which
-- is fine for this table size; see docs/deploy.md for CONCURRENTLY on a big one.)
CREATE INDEX reservations_live_holds_by_user ON reservations (user_id, expires_at)
    WHERE state = 'held';
DROP INDEX reservations_held_by_user;
