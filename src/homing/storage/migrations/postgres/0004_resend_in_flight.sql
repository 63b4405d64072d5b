-- A resend asked for while the delivery is in flight: once that try is recorded, the
-- delivery is queued again at once (as a manual try) instead of the resend being lost.
ALTER TABLE delivery ADD COLUMN resend BOOLEAN NOT NULL DEFAULT FALSE;
