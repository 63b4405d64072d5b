-- Read-only application-portal tokens, and idempotency keys purged by age.
ALTER TABLE api_token ADD COLUMN read_only BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX idempotency_created ON idempotency (created_at);
