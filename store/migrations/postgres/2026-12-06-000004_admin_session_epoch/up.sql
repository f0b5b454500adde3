-- Every session JWT carries the epoch of its admin at issue; a session whose epoch is not the
-- admin's current one is refused. Demoting an admin or changing their password moves the epoch,
-- which ends all their sessions at once.
ALTER TABLE admins ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;
