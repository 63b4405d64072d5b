-- Delivery pacing and endpoint health.
-- endpoint.next_send_at: the earliest time the next delivery may start (throttleRate), shared
--   by every worker through the claim transaction.
-- endpoint.failing_since: first exhausted delivery since the endpoint last succeeded.
-- event_type.retry_schedule: a JSON list of seconds overriding the global retry schedule.
-- delivery.paced: its next_attempt_at is a start slot reserved under the endpoint's throttleRate.
ALTER TABLE endpoint ADD COLUMN next_send_at BIGINT;
ALTER TABLE endpoint ADD COLUMN failing_since BIGINT;
ALTER TABLE event_type ADD COLUMN retry_schedule TEXT;
ALTER TABLE delivery ADD COLUMN paced BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX delivery_sending ON delivery (endpoint_id) WHERE state = 'sending';
