-- Claims read the due queue in (next_attempt_at, id) order, a bounded window at a time,
-- continuing where the previous claim stopped: the index carries both keys.
DROP INDEX delivery_due;
CREATE INDEX delivery_due ON delivery (next_attempt_at, id) WHERE state = 'pending';
