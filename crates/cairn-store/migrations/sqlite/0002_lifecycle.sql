-- Scheduled state changes (§3.4). No foreign key to users: a schedule whose user was deleted
-- must still be found, and recorded as skipped, when it comes due.
CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    target_state TEXT NOT NULL,
    due TEXT NOT NULL,
    -- The activation mail choice: 'default', 'none' or 'to:ADDRESS'.
    email TEXT NOT NULL,
    created TEXT NOT NULL,
    created_by TEXT NOT NULL,
    status TEXT NOT NULL,
    finished TEXT,
    message TEXT
);
-- One pending schedule per user and target state.
CREATE UNIQUE INDEX schedules_pending_uq ON schedules (user_id, target_state) WHERE status = 'pending';
CREATE INDEX schedules_due_ix ON schedules (status, due);
CREATE INDEX schedules_job_ix ON schedules (job_id);
CREATE INDEX schedules_user_ix ON schedules (user_id, status);

-- Everything that lets a user in without a password check: portal sessions, one-time tokens.
-- Suspension, forced change and TOTP reset delete a user's rows here in the same transaction.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    data TEXT
);
CREATE INDEX sessions_user_ix ON sessions (user_id);

CREATE TABLE user_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL
);
CREATE INDEX user_tokens_user_ix ON user_tokens (user_id);
