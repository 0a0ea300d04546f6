-- A module payment the server refused is shown to the fan who paid
-- (PaymentService.GetModulePayment, GetPayment) as a refunded payment: the
-- refund request keeps who paid and an id of its own. Rows from before have
-- neither and stay visible to no one (nothing but tests wrote them).
ALTER TABLE module_refund_requests
    ADD COLUMN user_id uuid,
    ADD COLUMN payment_id uuid;

CREATE UNIQUE INDEX module_refund_requests_payment ON module_refund_requests (payment_id);
