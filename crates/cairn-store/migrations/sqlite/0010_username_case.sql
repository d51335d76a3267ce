-- Usernames are kept exactly as given (JumpCloud keeps case; hosts match it case-sensitively)
-- and are unique case-insensitively: the unique index is on lower(username), which also
-- serves every lookup, filter, prefix search and sort by username (all compare lowercase).
-- Usernames stored so far were lowercased when written, so each is its own key: existing
-- users are found exactly as before. Usernames are ASCII (§2.1), so lower() folds them whole.
DROP INDEX users_username_uq;
CREATE UNIQUE INDEX users_username_uq ON users (lower(username));
