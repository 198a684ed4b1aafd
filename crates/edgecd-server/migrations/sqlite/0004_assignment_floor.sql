-- The lowest assignment version a device may be given next, minus one: raised when a device
-- proves (with a validly signed assignment) that it accepted a higher version than the
-- assignments table remembers, e.g. after the database was restored from a backup.
ALTER TABLE devices ADD COLUMN assignment_floor INTEGER NOT NULL DEFAULT 0;
