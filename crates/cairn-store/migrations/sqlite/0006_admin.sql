-- The admin portal (§7): administrators' TOTP secrets (encrypted with the key in
-- CAIRN_DATA_DIR), their remembered Users-page columns, and their sessions. Portal sessions of
-- users live in `sessions`, whose foreign key points at users, so admins have their own table.
ALTER TABLE admins ADD COLUMN totp_secret TEXT;
ALTER TABLE admins ADD COLUMN mfa_required INTEGER NOT NULL DEFAULT 0;
ALTER TABLE admins ADD COLUMN user_columns TEXT;

CREATE TABLE admin_sessions (
    id TEXT PRIMARY KEY,
    admin_id TEXT NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    data TEXT
);
CREATE INDEX admin_sessions_admin_ix ON admin_sessions (admin_id);
CREATE INDEX admin_sessions_expires_ix ON admin_sessions (expires);
