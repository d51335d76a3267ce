-- The access core (`Directory::authenticate`): the last TOTP time step each account used (a
-- code is accepted once), and lockout for administrators with the users' columns and rule.
ALTER TABLE users ADD COLUMN totp_last_step BIGINT;
ALTER TABLE admins ADD COLUMN badloginattempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE admins ADD COLUMN account_locked BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE admins ADD COLUMN account_locked_date TEXT COLLATE "C";
ALTER TABLE admins ADD COLUMN totp_last_step BIGINT;
-- The auto-unlock sweep reads the few locked accounts only.
CREATE INDEX users_locked_ix ON users (account_locked_date) WHERE account_locked;
