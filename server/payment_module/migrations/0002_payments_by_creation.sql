-- ListPayments reads the book by creation time (the merchant's reconciliation
-- of a recent window), in (created_at, payment_id) order for keyset paging.
CREATE INDEX payments_by_creation ON payments (created_at, payment_id);
