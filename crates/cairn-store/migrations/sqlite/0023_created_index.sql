-- Issue 19: lists sorted by creation time (`sort=-created`, the newest users first), with or
-- without a filter, read this index in order instead of sorting every matching user: a locked
-- filter sorted by created took 250 ms (SQLite) / 120 ms (PostgreSQL) at a million users. A new
-- user's key lands at the end of the index, so keeping it up costs an import little; it is not
-- among the indexes a large import drops and builds again.
CREATE INDEX users_created_ix ON users (created, id);
