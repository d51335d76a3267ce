-- Scheduled state changes (§3.4). No foreign key to users: a schedule whose user was deleted
-- must still be found, and recorded as skipped, when it comes due.
CREATE TABLE schedules (
    id TEXT COLLATE "C" PRIMARY KEY,
    job_id TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL,
    target_state TEXT COLLATE "C" NOT NULL,
    due TEXT COLLATE "C" NOT NULL,
    -- The activation mail choice: 'default', 'none' or 'to:ADDRESS'.
    email TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    finished TEXT COLLATE "C",
    message TEXT COLLATE "C"
);
-- One pending schedule per user and target state.
CREATE UNIQUE INDEX schedules_pending_uq ON schedules (user_id, target_state) WHERE status = 'pending';
CREATE INDEX schedules_due_ix ON schedules (status, due);
CREATE INDEX schedules_job_ix ON schedules (job_id);
CREATE INDEX schedules_user_ix ON schedules (user_id, status);

-- Everything that lets a user in without a password check: portal sessions, one-time tokens.
-- Suspension, forced change and TOTP reset delete a user's rows here in the same transaction.
CREATE TABLE sessions (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    expires TEXT COLLATE "C" NOT NULL,
    data TEXT COLLATE "C"
);
CREATE INDEX sessions_user_ix ON sessions (user_id);

CREATE TABLE user_tokens (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    expires TEXT COLLATE "C" NOT NULL
);
CREATE INDEX user_tokens_user_ix ON user_tokens (user_id);
