-- The admin portal (§7): administrators' TOTP secrets (encrypted with the key in
-- CAIRN_DATA_DIR), their remembered Users-page columns, and their sessions. Portal sessions of
-- users live in `sessions`, whose foreign key points at users, so admins have their own table.
ALTER TABLE admins ADD COLUMN totp_secret TEXT COLLATE "C";
ALTER TABLE admins ADD COLUMN mfa_required BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE admins ADD COLUMN user_columns TEXT COLLATE "C";

CREATE TABLE admin_sessions (
    id TEXT COLLATE "C" PRIMARY KEY,
    admin_id TEXT COLLATE "C" NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    kind TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    expires TEXT COLLATE "C" NOT NULL,
    data TEXT COLLATE "C"
);
CREATE INDEX admin_sessions_admin_ix ON admin_sessions (admin_id);
CREATE INDEX admin_sessions_expires_ix ON admin_sessions (expires);
