-- Booking: concerts, dates and seats, holds, payments, the payment module's
-- charges, and the wallet ledger. See docs/concurrency.md for why each lock.

CREATE TABLE concerts (
    id         uuid PRIMARY KEY,
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    venue      text NOT NULL CHECK (length(venue) <= 200),
    created_at timestamptz NOT NULL
);
-- ListConcerts pages by (created_at, id).
CREATE INDEX concerts_by_creation ON concerts (created_at, id);

-- sold_seat_count is kept by the payment's confirmation transaction, so the
-- free count of a date is total - sold - live holds without scanning its seats.
CREATE TABLE concert_dates (
    id               uuid PRIMARY KEY,
    concert_id       uuid NOT NULL REFERENCES concerts (id),
    start_time       timestamptz NOT NULL,
    total_seat_count integer NOT NULL CHECK (total_seat_count BETWEEN 1 AND 10000),
    sold_seat_count  integer NOT NULL DEFAULT 0
        CHECK (sold_seat_count BETWEEN 0 AND total_seat_count)
);
-- ListAvailableDates pages one concert's dates by (start_time, id).
CREATE INDEX concert_dates_by_concert ON concert_dates (concert_id, start_time, id);

-- A seat is free when it is not sold and its hold (if any) has run out:
--   NOT sold AND (held_until IS NULL OR held_until <= now)
-- `now` is always the clock's time passed as a parameter, so an expired hold
-- frees the seat at once, before the expiry job tidies the row.
-- reservation_id is the hold (or the sale) the seat currently belongs to.
CREATE TABLE seats (
    date_id        uuid NOT NULL REFERENCES concert_dates (id),
    seat_number    integer NOT NULL CHECK (seat_number >= 1),
    price          bigint NOT NULL CHECK (price >= 0),
    sold           boolean NOT NULL DEFAULT false,
    held_until     timestamptz,
    reservation_id uuid,
    PRIMARY KEY (date_id, seat_number),
    CHECK (NOT (sold AND held_until IS NOT NULL)),
    CHECK (NOT sold OR reservation_id IS NOT NULL)
);
-- Live holds per date (the free-seat count) and the expiry job's scan.
CREATE INDEX seats_held ON seats (date_id, held_until) WHERE held_until IS NOT NULL;
CREATE INDEX seats_hold_expiry ON seats (held_until) WHERE held_until IS NOT NULL;

-- One fan's hold on one seat. A 'held' row whose expires_at has passed reads
-- as expired everywhere; the expiry job then writes 'expired'.
CREATE TABLE reservations (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    concert_id  uuid NOT NULL REFERENCES concerts (id),
    date_id     uuid NOT NULL,
    seat_number integer NOT NULL,
    price       bigint NOT NULL CHECK (price >= 0),
    state       text NOT NULL CHECK (state IN ('held', 'paid', 'cancelled', 'expired')),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    FOREIGN KEY (date_id, seat_number) REFERENCES seats (date_id, seat_number)
);
-- The per-fan hold cap counts these.
CREATE INDEX reservations_held_by_user ON reservations (user_id) WHERE state = 'held';
CREATE INDEX reservations_held_by_expiry ON reservations (expires_at) WHERE state = 'held';
-- Last line of defence: a seat is sold to one reservation only.
CREATE UNIQUE INDEX reservations_one_paid_per_seat ON reservations (date_id, seat_number)
    WHERE state = 'paid';

-- The payment module's own book (the default gateway: the fan's wallet).
-- key is the server's idempotency key for the charge. 'voided' records a
-- refund of a charge that never happened, so a late charge with that key is
-- refused rather than taking money nobody will confirm.
CREATE TABLE gateway_charges (
    key        uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id),
    amount     bigint NOT NULL CHECK (amount >= 0),
    state      text NOT NULL CHECK (state IN ('charged', 'refunded', 'voided')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- The server's record of one Pay: written and committed BEFORE the gateway is
-- asked to charge, so a crash after the charge leaves a row the
-- reconciliation job finds. id is the gateway's idempotency key.
--   charging -> confirmed | declined | refunding -> refunded
CREATE TABLE payment_attempts (
    id             uuid PRIMARY KEY,
    reservation_id uuid NOT NULL REFERENCES reservations (id),
    user_id        uuid NOT NULL REFERENCES users (id),
    token_id       uuid NOT NULL,
    amount         bigint NOT NULL CHECK (amount >= 0),
    request_id     uuid,
    state          text NOT NULL
        CHECK (state IN ('charging', 'confirmed', 'declined', 'refunding', 'refunded')),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
-- One charge in flight (or done) per reservation: a second Pay is refused
-- before it charges anything.
CREATE UNIQUE INDEX payment_attempts_one_live_per_reservation ON payment_attempts (reservation_id)
    WHERE state IN ('charging', 'confirmed');
-- The reconciliation job's scan.
CREATE INDEX payment_attempts_unsettled ON payment_attempts (updated_at)
    WHERE state IN ('charging', 'refunding');

CREATE TABLE payments (
    id             uuid PRIMARY KEY,
    reservation_id uuid NOT NULL UNIQUE REFERENCES reservations (id),
    user_id        uuid NOT NULL REFERENCES users (id),
    amount         bigint NOT NULL CHECK (amount >= 0),
    charge_key     uuid NOT NULL,
    state          text NOT NULL CHECK (state IN ('completed', 'refunded')),
    created_at     timestamptz NOT NULL
);

-- Every balance change, append-only, written in the same statement as the
-- change: sum(amount) per user == wallets.balance.
CREATE TABLE wallet_ledger (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES wallets (user_id),
    amount        bigint NOT NULL CHECK (amount <> 0),
    kind          text NOT NULL CHECK (kind IN ('charge', 'payment', 'refund')),
    reference     uuid,
    balance_after bigint NOT NULL CHECK (balance_after >= 0),
    created_at    timestamptz NOT NULL
);
CREATE INDEX wallet_ledger_by_user ON wallet_ledger (user_id, id);

CREATE FUNCTION wallet_ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'wallet_ledger is append-only';
END
$$;
CREATE TRIGGER wallet_ledger_append_only BEFORE UPDATE OR DELETE ON wallet_ledger
    FOR EACH ROW EXECUTE FUNCTION wallet_ledger_is_append_only();
