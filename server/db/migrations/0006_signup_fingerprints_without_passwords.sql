-- SignUp's idempotency fingerprint no longer hashes the password
-- (server/idempotency.py): a plain SHA-256 of a request that holds a password
-- let anyone with a dump test a guess with one hash. The rows written before
-- are purged: a SignUp retried across this migration runs again and answers
-- EMAIL_TAKEN instead of its first answer.
DELETE FROM idempotency_keys WHERE scope = 'AccountService.SignUp';
