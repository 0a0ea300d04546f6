-- Payments taken by a payment module outside the server, reported by its
-- callback (concert.v1.PaymentCallbackService). A module payment is recorded
-- at most once per (module, module payment id), and at most once per
-- reservation like every payment; one the server refused is kept as a refund
-- request, so the module's retry gets the same answer.
ALTER TABLE payments
    ADD COLUMN module_id text,
    ADD COLUMN module_payment_id text,
    ADD CONSTRAINT payments_module_both CHECK ((module_id IS NULL) = (module_payment_id IS NULL));

CREATE UNIQUE INDEX payments_module_payment ON payments (module_id, module_payment_id)
    WHERE module_id IS NOT NULL;

CREATE TABLE module_refund_requests (
    module_id         text NOT NULL,
    module_payment_id text NOT NULL,
    reservation_id    uuid,
    amount            bigint NOT NULL,
    reason            text NOT NULL,
    created_at        timestamptz NOT NULL,
    PRIMARY KEY (module_id, module_payment_id)
);
